/**
 * The pod process the load test's own cluster runs: the pod's own `runPod()` (apps/pod/src/main.ts)
 * with the transcription provider chosen by TRANSCRIPTION_PROVIDER (energy = the in-process
 * default, stream = the WebSocket provider against STT_URL). Once the pod's main.ts selects the
 * provider from the environment itself, this file is just `apps/pod/src/main.ts`.
 *
 * Prints one JSON line {"msg":"loadtest pod ready", httpUrl, udpPort, pid} when it serves.
 */
import { loadConfig, type Pod } from "@mentra-cluster/pod";
import { runPod } from "../../pod/src/main.ts";
import { streamProviderFromEnv } from "../../pod/src/transcription/stream.ts";

const config = loadConfig();
let pod: Pod | null = null;
// Transient STT failures are retried inside the provider; they still count as provider errors.
const transcription = streamProviderFromEnv(process.env, { onTransientError: () => pod?.metrics.transcriptionError("stream") }) ?? undefined;
({ pod } = await runPod(config, transcription ? { transcription } : {}));
const a = pod.addresses;
process.stdout.write(JSON.stringify({ msg: "loadtest pod ready", podId: config.podId, httpUrl: a.httpUrl, udpPort: a.udpPort, pid: process.pid, transcription: transcription?.name ?? "energy" }) + "\n");
