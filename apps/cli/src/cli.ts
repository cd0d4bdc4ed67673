/**
 * mentra-cluster: run a local cluster and operate one through the gateway's admin API.
 *
 *   mentra-cluster up [--pods 3] [--redis <url>] [--no-demo-app]
 *   mentra-cluster pods
 *   mentra-cluster route <email>
 *   mentra-cluster cordon|uncordon|undrain <podId>
 *   mentra-cluster drain <podId> [--deadline 25s] [--rate 50]
 *   mentra-cluster token <email>
 *
 * Gateway: --gateway or MENTRA_GATEWAY (default http://127.0.0.1:7000); admin token: --admin-token
 * or ADMIN_TOKEN (default dev-admin-token, the local cluster's); JWT_SECRET for minted tokens.
 */
import { readFileSync } from "node:fs";
import { spawn } from "node:child_process";
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { mintUserToken } from "@mentra-cluster/protocol";
import { demoSeed, ROOT, startLocalCluster } from "./localCluster.ts";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    gateway: { type: "string" },
    "admin-token": { type: "string" },
    pods: { type: "string" },
    redis: { type: "string" },
    "no-demo-app": { type: "boolean" },
    deadline: { type: "string" },
    rate: { type: "string" },
    json: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  },
});
const [cmd, arg] = positionals;
const gateway = (values.gateway ?? process.env.MENTRA_GATEWAY ?? "http://127.0.0.1:7000").replace(/\/+$/, "");
const adminToken = values["admin-token"] ?? process.env.ADMIN_TOKEN ?? "dev-admin-token";
const secret = process.env.JWT_SECRET ?? "dev-only-secret";

function usage(code = 0): never {
  console.log(`usage: mentra-cluster <command>
  up [--pods 3] [--redis <url>] [--no-demo-app]   run gateway, pods and the demo mini app locally
  pods                                            list pods with state and load
  route <email>                                   ask the gateway where a user goes
  cordon|uncordon <podId>                         stop / resume placing new users on a pod
  drain <podId> [--deadline 25s] [--rate N]       move a pod's users away, then the pod exits
  undrain <podId>                                 return a pod to service
  token <email>                                   mint a phone core token (JWT_SECRET)
options: --gateway <url> (MENTRA_GATEWAY), --admin-token <t> (ADMIN_TOKEN), --json`);
  process.exit(code);
}

async function admin(method: string, path: string, body?: unknown) {
  let res: Response;
  try {
    res = await fetch(`${gateway}${path}`, {
      method,
      headers: { authorization: `Bearer ${adminToken}`, ...(body ? { "content-type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
  } catch {
    console.error(`cannot reach the gateway at ${gateway} (is the cluster up? --gateway to change)`);
    process.exit(1);
  }
  const json = await res.json().catch(() => ({}));
  if (!res.ok) {
    console.error(`${res.status} ${json.error ?? ""}: ${json.message ?? ""}`);
    process.exit(1);
  }
  return json;
}

function duration(s: string | undefined): number | undefined {
  if (!s) return undefined;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(s);
  if (!m) {
    console.error(`bad duration: ${s} (e.g. 25s, 1500ms, 2m)`);
    process.exit(2);
  }
  const n = Number(m[1]);
  return m[2] === "ms" ? n : m[2] === "m" ? n * 60_000 : n * 1000;
}

const pad = (s: unknown, n: number) => String(s).padEnd(n);

async function main() {
  if (values.help || !cmd) usage(cmd ? 0 : 2);
  switch (cmd) {
    case "up": {
      const appPort = 7010;
      const cluster = await startLocalCluster({ pods: Number(values.pods ?? 3), redisUrl: values.redis ?? process.env.REDIS_URL ?? null, seed: demoSeed(appPort), adminToken, jwtSecret: secret });
      let app: ReturnType<typeof spawn> | null = null;
      if (!values["no-demo-app"]) {
        app = spawn(process.execPath, [resolve(ROOT, "apps/loadtest-app/src/app.mjs")], {
          cwd: process.env.TMPDIR ?? "/tmp",
          env: { ...process.env, PKG: "com.mentra.demo.transcribe", API_KEY: "demo-api-key", PORT: String(appPort), BETTERSTACK_SOURCE_TOKEN: "" },
          stdio: ["ignore", "ignore", "inherit"],
        });
      }
      const token = mintUserToken("demo@mentra.glass", secret);
      process.stdout.write(
        [
          "",
          `MentraOS local cluster is up (${cluster.podIds.length} pods, ${values.redis || process.env.REDIS_URL ? "Redis registry, separate processes" : "in-memory registry, one process"})`,
          `  gateway        ${cluster.gatewayUrl}   (POST /v1/route, GET /glasses-ws → 307, /p/<podId>/… → pod)`,
          `  pods           ${cluster.podIds.join(", ")}   (each: ${cluster.gatewayUrl}/p/<podId>/health, /metrics)`,
          `  admin token    ${adminToken}`,
          app ? `  demo mini app  com.mentra.demo.transcribe at http://127.0.0.1:${appPort} (real @mentra/sdk 2.1.29)` : "",
          `  demo user      demo@mentra.glass`,
          `  phone token    ${token}`,
          "",
          "Try: npm run demo     npx mentra-cluster pods     npx mentra-cluster route demo@mentra.glass",
          "",
        ].filter((l) => l !== null).join("\n") + "\n",
      );
      const stop = async () => {
        app?.kill("SIGTERM");
        await cluster.stop();
        process.exit(0);
      };
      process.on("SIGINT", () => void stop());
      process.on("SIGTERM", () => void stop());
      // `kill <npm pid>` ends npm and its shell without passing the signal on, leaving this process
      // (under tsx) and its pods running. Stop when the process that started us goes away.
      const starters = starterPids();
      const watch = setInterval(() => {
        const now = starterPids();
        if (starters.some((pid, i) => now[i] !== pid)) {
          clearInterval(watch);
          process.stderr.write("the process that started this cluster has exited: stopping\n");
          void stop();
        }
      }, 1000);
      watch.unref();
      return;
    }
    case "pods": {
      const r = await admin("GET", "/admin/pods");
      if (values.json) return console.log(JSON.stringify(r.pods, null, 2));
      console.log(`${pad("POD", 12)}${pad("STATE", 10)}${pad("FLAGS", 18)}${pad("SESSIONS", 10)}${pad("LAG p99", 10)}${pad("ELU", 7)}${pad("UDP", 22)}URL`);
      for (const p of r.pods) {
        const flags = [p.control.cordoned ? "cordoned" : "", p.control.drainRequested ? "drain-requested" : ""].filter(Boolean).join(",") || "-";
        console.log(`${pad(p.podId, 12)}${pad(p.state, 10)}${pad(flags, 18)}${pad(`${p.sessions}/${p.capacity.maxSessions}`, 10)}${pad(`${p.lagP99Ms} ms`, 10)}${pad(p.elu.toFixed(2), 7)}${pad(`${p.endpoints.udpHost}:${p.endpoints.udpPort}`, 22)}${p.endpoints.httpUrl}`);
        if (p.drain) console.log(`${pad("", 12)}draining: ${p.drain.sessionsLeft}/${p.drain.sessionsAtStart} left, deadline in ${Math.max(0, Math.round((p.drain.deadline - Date.now()) / 1000))} s`);
      }
      if (r.pods.length === 0) console.log("(no live pods)");
      return;
    }
    case "route": {
      if (!arg) usage(2);
      const res = await fetch(`${gateway}/v1/route`, { method: "POST", headers: { authorization: `Bearer ${mintUserToken(arg, secret)}` } }).catch(() => null);
      if (!res) return void (console.error(`cannot reach the gateway at ${gateway}`), process.exit(1));
      const body = await res.json();
      if (!res.ok) return void (console.error(`${res.status} ${body.error}: ${body.message}`), process.exit(1));
      if (values.json) return console.log(JSON.stringify(body, null, 2));
      console.log(`${arg.toLowerCase()} → ${body.podId} (epoch ${body.epoch})\n  glasses-ws ${body.glassesWsUrl.split("?")[0]}\n  REST       ${body.restBaseUrl}\n  UDP        ${body.udpHost}:${body.udpPort}\n  ticket expires ${new Date(body.ticketExpiresAt).toISOString()}`);
      return;
    }
    case "cordon":
    case "uncordon":
    case "undrain": {
      if (!arg) usage(2);
      const r = await admin("POST", `/admin/pods/${encodeURIComponent(arg)}/${cmd}`);
      console.log(`${r.podId}: cordoned=${r.control.cordoned} drainRequested=${r.control.drainRequested}`);
      return;
    }
    case "drain": {
      if (!arg) usage(2);
      const deadlineMs = duration(values.deadline) ?? 25_000;
      const ratePerS = values.rate ? Number(values.rate) : undefined;
      const r = await admin("POST", `/admin/pods/${encodeURIComponent(arg)}/drain`, { deadlineMs, ...(ratePerS ? { ratePerS } : {}) });
      console.log(`${r.podId}: drain requested (deadline ${deadlineMs / 1000} s${ratePerS ? `, ${ratePerS} users/s` : ""})`);
      await watchDrain(arg, deadlineMs);
      return;
    }
    case "token": {
      if (!arg) usage(2);
      console.log(mintUserToken(arg, secret));
      return;
    }
    default:
      console.error(`unknown command: ${cmd}`);
      usage(2);
  }
}

/** Prints drain progress as a bar until the pod has left the registry or the deadline has passed. */
async function watchDrain(podId: string, deadlineMs: number) {
  const until = Date.now() + deadlineMs + 15_000;
  let last = "";
  while (Date.now() < until) {
    const r = await admin("GET", "/admin/pods");
    const p = r.pods.find((x: { podId: string }) => x.podId === podId);
    if (!p) {
      process.stdout.write(`\n${podId} has left the cluster\n`);
      return;
    }
    const total = p.drain?.sessionsAtStart ?? p.sessions;
    const left = p.drain?.sessionsLeft ?? p.sessions;
    const done = total > 0 ? (total - left) / total : 0;
    const width = 30;
    const bar = "█".repeat(Math.round(done * width)).padEnd(width, "░");
    const secs = p.drain ? Math.max(0, Math.round((p.drain.deadline - Date.now()) / 1000)) : "?";
    const line = `\r${podId} [${bar}] ${total - left}/${total} moved, ${left} left, deadline in ${secs} s  `;
    if (line !== last) process.stdout.write(line);
    last = line;
    await new Promise((r2) => setTimeout(r2, 500));
  }
  process.stdout.write(`\n${podId} still present after its deadline\n`);
  process.exit(1);
}

await main();

/** Our parent and its parent (Linux /proc; [] elsewhere): tsx and the shell npm runs it in. */
function starterPids(): number[] {
  const parentOf = (pid: number): number | null => {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    } catch {
      return null;
    }
  };
  const grand = parentOf(process.ppid);
  return grand === null ? [process.ppid] : [process.ppid, grand];
}
