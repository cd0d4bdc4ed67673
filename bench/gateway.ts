/**
 * `npm run bench:gateway`: route decisions per second and latency against a real Redis (its own
 * redis-server on a free port) with 10,000 users and 10 registered pods.
 *   1. Router.route() in-process on several Redis connections (the placement core, no HTTP);
 *   2. POST /v1/route over HTTP through the gateway (JWT check, placement, ticket signing).
 * Each is measured in the placement phase (first sight of every user: claims) and the steady phase
 * (keep the live assignment).
 *
 *   npm run bench:gateway -- [--users 10000] [--pods 10] [--conns 4] [--concurrency 64] [--seconds 10]
 */
import http from "node:http";
import { parseArgs } from "node:util";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { mintUserToken } from "@mentra-cluster/protocol";
import { RedisAssignmentStore, RedisPodRegistry, Router, type PodRecord } from "@mentra-cluster/registry";
import { startRedis } from "../test/helpers/redis.ts";

const { values } = parseArgs({
  options: {
    users: { type: "string", default: "10000" },
    pods: { type: "string", default: "10" },
    conns: { type: "string", default: "4" },
    concurrency: { type: "string", default: "64" },
    seconds: { type: "string", default: "10" },
  },
});
const USERS = Number(values.users), PODS = Number(values.pods), CONNS = Number(values.conns), CONC = Number(values.concurrency), SECS = Number(values.seconds);

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}
function summary(name: string, lat: number[], ms: number) {
  lat.sort((a, b) => a - b);
  const r = { phase: name, decisions: lat.length, perSecond: Math.round((lat.length * 1000) / ms), p50Ms: +pct(lat, 50).toFixed(3), p99Ms: +pct(lat, 99).toFixed(3), maxMs: +pct(lat, 100).toFixed(3) };
  console.log(JSON.stringify(r));
  return r;
}

/** Runs `op` with CONC concurrent loops until `until()` says stop; returns latencies (ms). */
async function drive(op: (i: number) => Promise<void>, until: (done: number, t: number) => boolean): Promise<{ lat: number[]; ms: number }> {
  const lat: number[] = [];
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: CONC }, async () => {
      while (!until(lat.length, performance.now() - t0)) {
        const i = next++;
        const s = performance.now();
        await op(i);
        lat.push(performance.now() - s);
      }
    }),
  );
  return { lat, ms: performance.now() - t0 };
}

const redis = await startRedis();
const results = [];
try {
  const prefix = "bench:";
  const registry = new RedisPodRegistry({ url: redis.url, prefix });
  for (let i = 0; i < PODS; i++) {
    const rec: PodRecord = {
      podId: `pod-${i}`, state: "ready",
      endpoints: { httpUrl: `https://cloud.example.com/p/pod-${i}`, wsUrl: `wss://cloud.example.com/p/pod-${i}/glasses-ws`, udpHost: `10.0.0.${i}`, udpPort: 8000, internalUrl: `http://10.0.0.${i}:80` },
      sessions: 0, lagP99Ms: 5, elu: 0.2, capacity: { maxSessions: 100_000, lagP99CapMs: 100, eluCap: 0.9 }, startedAt: Date.now(), updatedAt: Date.now(),
    };
    await registry.heartbeat(rec, 3_600_000);
  }
  const users = Array.from({ length: USERS }, (_, i) => `bench${i}@load.test`);

  // 1. Router in-process, several connections.
  const routers = Array.from({ length: CONNS }, () => new Router({ registry, assignments: new RedisAssignmentStore({ url: redis.url, prefix }), storeTimeoutMs: 2000 }));
  for (const r of routers) await r.start();
  const place = await drive(async (i) => {
    const d = await routers[i % CONNS]!.route(users[i]!);
    if (!d.ok) throw new Error(d.code);
  }, (done) => done >= USERS);
  results.push({ via: "router", ...summary("router: placement (10k first routes)", place.lat, place.ms) });
  const steady = await drive(async (i) => {
    const d = await routers[i % CONNS]!.route(users[i % USERS]!);
    if (!d.ok) throw new Error(d.code);
  }, (_d, t) => t >= SECS * 1000);
  results.push({ via: "router", ...summary("router: steady (keep assignment)", steady.lat, steady.ms) });
  for (const r of routers) r.stop();

  // 2. HTTP through the gateway, fresh prefix so placement happens again.
  const prefix2 = "bench2:";
  const reg2 = new RedisPodRegistry({ url: redis.url, prefix: prefix2 });
  for (const p of await registry.list()) await reg2.heartbeat(p, 3_600_000);
  // The gateway runs as its own process (as deployed), so the load generator does not share its loop.
  const gw = spawn(process.execPath, [...(process.env.BENCH_PROFILE ? ["--cpu-prof", `--cpu-prof-dir=${process.env.BENCH_PROFILE}`] : []), "--import", "tsx", "apps/gateway/src/main.ts"], {
    env: { ...process.env, PORT: "0", JWT_SECRET: "bench", ROUTE_TICKET_KEY: "bench-ticket", REDIS_URL: redis.url, REDIS_PREFIX: prefix2, LOG_LEVEL: "info" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const line = await new Promise<string>((resolve) => createInterface({ input: gw.stdout! }).on("line", (l) => l.includes("gateway listening") && resolve(l)));
  const url = new URL(JSON.parse(line).url);
  const tokens = users.map((u) => mintUserToken(u, "bench"));
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONC });
  const post = (i: number) =>
    new Promise<void>((resolve, reject) => {
      const req = http.request({ host: url.hostname, port: url.port, path: "/v1/route", method: "POST", agent, headers: { authorization: `Bearer ${tokens[i % USERS]}` } }, (res) => {
        res.resume();
        res.on("end", () => (res.statusCode === 200 ? resolve() : reject(new Error(`HTTP ${res.statusCode}`))));
      });
      req.on("error", reject);
      req.end();
    });
  const hplace = await drive(post, (done) => done >= USERS);
  results.push({ via: "http", ...summary("http: placement (10k first routes)", hplace.lat, hplace.ms) });
  const hsteady = await drive(post, (_d, t) => t >= SECS * 1000);
  results.push({ via: "http", ...summary("http: steady (keep assignment)", hsteady.lat, hsteady.ms) });
  agent.destroy();
  gw.kill("SIGTERM");
  await new Promise((r) => gw.once("exit", r));
  console.log(`\n${USERS} users, ${PODS} pods, ${CONNS} Redis connections (router), ${CONC} concurrent requests, one machine (2 cores) running Redis, gateway and load together\n`);
  console.log("| phase | decisions/s | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|");
  for (const r of results) console.log(`| ${r.phase} | ${r.perSecond} | ${r.p50Ms} | ${r.p99Ms} | ${r.maxMs} |`);
} finally {
  await redis.stop();
  process.exit(0);
}
