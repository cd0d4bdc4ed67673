/** A pod as its own process for benchmarks: seeded with N bench users and one app; prints its addresses as JSON. */
import pino from "pino";
import { EmbeddedDirectory, hashApiKey } from "@mentra-cluster/directory";
import { createPod, loadConfig } from "@mentra-cluster/pod";

const appUrl = process.env.BENCH_APP_URL!;
const pkg = process.env.BENCH_APP_PKG ?? "com.bench.app";
const key = process.env.BENCH_APP_KEY ?? "bench-key";
const directory = new EmbeddedDirectory({ seed: { apps: [{ packageName: pkg, name: pkg, publicUrl: appUrl, hashedApiKey: hashApiKey(key) }] } });
const config = loadConfig({ ...process.env, PORT: "0", UDP_PORT: "0", POD_ID: "pod-bench" });
const pod = createPod(config, { directory, logger: pino({ level: "warn", base: { podId: config.podId } }) });
const a = await pod.start();
process.stdout.write(JSON.stringify(a) + "\n");
process.on("SIGTERM", () => void pod.stop().then(() => process.exit(0)));
