/**
 * `npm run start:pod`: one standalone pod and the demo mini app (the real @mentra/sdk app) with the embedded
 * directory seeded with a demo user and app. Prints where everything listens and a phone token.
 */
import { spawn } from "node:child_process";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { EmbeddedDirectory, hashApiKey } from "@mentra-cluster/directory";
import { mintUserToken } from "@mentra-cluster/protocol";
import { loadConfig, type PodConfig } from "../config.ts";
import { cannotStart, runPod } from "../main.ts";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../../../..");
let config: PodConfig;
try {
  config = loadConfig({ POD_ID: "pod-0", ...process.env });
} catch (err) {
  cannotStart(err);
}
const demoUser = process.env.DEMO_USER ?? "demo@mentra.glass";
const demoPkg = process.env.DEMO_APP ?? "com.mentra.demo.transcribe";
const demoKey = process.env.DEMO_API_KEY ?? "demo-api-key";
const appPort = Number(process.env.DEMO_APP_PORT ?? 7010);

const directory = process.env.DIRECTORY_SEED
  ? EmbeddedDirectory.fromFile(process.env.DIRECTORY_SEED)
  : new EmbeddedDirectory({
      seed: {
        apps: [{ packageName: demoPkg, name: "Demo transcriber", publicUrl: `http://127.0.0.1:${appPort}`, hashedApiKey: hashApiKey(demoKey) }],
        users: [{ id: demoUser, installedApps: [demoPkg] }],
      },
    });

// A port in use or a bad setting: one line and exit 1, like `npm run pod` (not a logged exception and exit 0).
const { pod, shutdown: stopPod } = await runPod(config, { directory }).catch(cannotStart);
const addrs = pod.addresses;

const child = spawn(process.execPath, [resolve(root, "apps/loadtest-app/src/app.mjs")], {
  cwd: process.env.TMPDIR ?? "/tmp",
  env: { ...process.env, PKG: demoPkg, API_KEY: demoKey, PORT: String(appPort), BETTERSTACK_SOURCE_TOKEN: "" },
  stdio: ["ignore", "ignore", "inherit"],
});
child.on("exit", (code) => pod.ctx.log.warn({ code }, "demo mini app exited"));

const token = mintUserToken(demoUser, config.jwtSecret);
process.stdout.write(
  [
    "",
    `MentraOS session pod ${config.podId} is up`,
    `  REST + probes   ${addrs.httpUrl}   (/health /metrics /livez /readyz)`,
    `  phone ws        ${addrs.wsUrl}`,
    `  app ws          ${addrs.appWsUrl}`,
    `  UDP audio       ${addrs.udpHost}:${addrs.udpPort}`,
    `  demo mini app   ${demoPkg} at http://127.0.0.1:${appPort} (real @mentra/sdk 2.1.29)`,
    `  demo user       ${demoUser}`,
    `  phone token     ${token}`,
    "",
    `Try it: npm run demo -- --url ${addrs.httpUrl}     (streams real speech and prints the text walls that come back)`,
    "",
  ].join("\n") + "\n",
);

// The demo app stops with the pod.
for (const sig of ["SIGINT", "SIGTERM"] as const) process.on(sig, () => child.kill("SIGTERM"));
void stopPod;
