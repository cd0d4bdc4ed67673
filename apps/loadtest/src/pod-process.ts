/**
 * The pod process of the load test's own cluster: the pod's own `runPod()` (apps/pod/src/main.ts,
 * which picks the transcription provider from TRANSCRIPTION_PROVIDER / STT_URL / STT_FRAME_MS),
 * plus one JSON line {"msg":"loadtest pod ready", httpUrl, udpPort, pid} once it serves, so the
 * cluster starter does not depend on the pod's log format.
 */
import { loadConfig } from "@mentra-cluster/pod";
import { runPod } from "../../pod/src/main.ts";

const config = loadConfig();
const { pod } = await runPod(config);
const a = pod.addresses;
process.stdout.write(
  JSON.stringify({ msg: "loadtest pod ready", podId: config.podId, httpUrl: a.httpUrl, udpPort: a.udpPort, pid: process.pid, transcription: process.env.TRANSCRIPTION_PROVIDER || "energy" }) + "\n",
);
