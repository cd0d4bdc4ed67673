/**
 * `npm run bench:drain`: 1,000 users (phone + lean app each) on one of three pods (separate
 * processes, real Redis); SIGTERM that pod and measure the drain duration, the per-user move time
 * (close → new connection_ack) p50/p95/p99, and the receiving pods' lag p99 during the move.
 *
 *   npm run bench:drain -- [--users 1000] [--deadline 25000]
 */
import { parseArgs } from "node:util";
import { AppSim, PhoneSim, gatewayResolver } from "@mentra-cluster/phone-sim";
import { mintUserToken } from "@mentra-cluster/protocol";
import { parsePrometheusText } from "@mentra-cluster/metrics";
import { startLocalCluster } from "@mentra-cluster/cli";
import { hashApiKey } from "@mentra-cluster/directory";
import { startRedis } from "../test/helpers/redis.ts";

const { values } = parseArgs({ options: { users: { type: "string", default: "1000" }, deadline: { type: "string", default: "25000" } } });
const N = Number(values.users);
const SECRET = "bench-drain";
const ADMIN = "bench-admin";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const pct = (s: number[], p: number) => s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;

const redis = await startRedis();
const app = await new AppSim({ packageName: "com.bench.drain", apiKey: "k", echo: "none" }).start();
const cluster = await startLocalCluster({
  pods: 3,
  gatewayPort: 0,
  redisUrl: redis.url,
  jwtSecret: SECRET,
  adminToken: ADMIN,
  logLevel: "warn",
  // Loading 1,000 users onto one pod quickly is itself overload; the caps are raised so the set-up is not refused.
  podEnv: { DRAIN_DEADLINE_MS: values.deadline!, MAX_NEW_SESSIONS_PER_S: "500", MAX_SESSIONS: "5000", LAG_SAMPLE_INTERVAL_MS: "100", PLACEMENT_LAG_P99_CAP_MS: "2000", ELU_CAP: "1.01" },
  seed: { apps: [{ packageName: "com.bench.drain", name: "bench", publicUrl: app.publicUrl, hashedApiKey: hashApiKey("k") }] },
});
const admin = (path: string) => fetch(`${cluster.gatewayUrl}${path}`, { method: "POST", headers: { authorization: `Bearer ${ADMIN}`, "content-type": "application/json" }, body: "{}" });
try {
  for (const id of ["pod-1", "pod-2"]) await admin(`/admin/pods/${id}/cordon`);
  const phones: { p: PhoneSim; acks: { pod: string; at: number }[]; closed: number[] }[] = [];
  for (let i = 0; i < N; i += 50) {
    await Promise.all(
      Array.from({ length: Math.min(50, N - i) }, async (_, j) => {
        const u = `drain${i + j}@bench.test`;
        const t = mintUserToken(u, SECRET);
        const p = new PhoneSim({ wsUrl: "ws://x", restBase: "http://x", token: t, userId: u, resolveEndpoint: gatewayResolver(cluster.gatewayUrl, t), reconnect: { baseMs: 250, maxMs: 2000 } });
        const rec = { p, acks: [] as { pod: string; at: number }[], closed: [] as number[] };
        p.on("ack", (a) => rec.acks.push({ pod: a.podId ?? "", at: Date.now() }));
        p.on("close", () => rec.closed.push(Date.now()));
        phones.push(rec);
        await p.connect();
        await p.startApp("com.bench.drain");
      }),
    );
  }
  for (const id of ["pod-1", "pod-2"]) await admin(`/admin/pods/${id}/uncordon`);
  await sleep(2000);
  const buckets = async (id: string) => {
    const m = parsePrometheusText(await (await fetch(`${cluster.gatewayUrl}/p/${id}/metrics`)).text());
    return new Map(m.get("mentra_event_loop_delay_seconds")!.samples.filter((s) => s.name.endsWith("_bucket")).map((s) => [s.labels.le === "+Inf" ? Infinity : Number(s.labels.le), s.value]));
  };
  const b0 = new Map([["pod-1", await buckets("pod-1")], ["pod-2", await buckets("pod-2")]]);
  const victim = cluster.children.get("pod-0")!;
  const t0 = Date.now();
  const exit = new Promise<number | null>((r) => victim.once("exit", (c) => r(c)));
  victim.kill("SIGTERM");
  const code = await exit;
  const drainMs = Date.now() - t0;
  const until = Date.now() + 20_000;
  while (Date.now() < until && !phones.every((x) => x.acks.length >= 2)) await sleep(100);
  const moves = phones.filter((x) => x.acks.length >= 2).map((x) => x.acks[1]!.at - x.closed.find((c) => c >= t0)!).sort((a, b) => a - b);
  const landedBack = phones.filter((x) => x.acks.slice(1).some((a) => a.pod === "pod-0")).length;
  const lagP99 = async (id: string) => {
    const b1 = await buckets(id);
    const les = [...b1.keys()].sort((a, b) => a - b);
    const total = b1.get(Infinity)! - b0.get(id)!.get(Infinity)!;
    for (const le of les) if (b1.get(le)! - b0.get(id)!.get(le)! >= 0.99 * total) return { le, samples: total };
    return { le: Infinity, samples: total };
  };
  const r = {
    users: N,
    exitCode: code,
    drainMs,
    moved: moves.length,
    landedOnDrainingPod: landedBack,
    moveP50Ms: pct(moves, 50),
    moveP95Ms: pct(moves, 95),
    moveP99Ms: pct(moves, 99),
    receivingLagP99: { "pod-1": await lagP99("pod-1"), "pod-2": await lagP99("pod-2") },
  };
  console.log(JSON.stringify(r, null, 2));
  console.log(`\n| users | drain duration | moved | p50 move | p95 move | p99 move | receiving pods' lag p99 (histogram bucket bound) | exit |\n|---|---|---|---|---|---|---|---|`);
  console.log(`| ${N} | ${(drainMs / 1000).toFixed(1)} s | ${moves.length} | ${r.moveP50Ms} ms | ${r.moveP95Ms} ms | ${r.moveP99Ms} ms | pod-1 ≤ ${r.receivingLagP99["pod-1"].le * 1000} ms, pod-2 ≤ ${r.receivingLagP99["pod-2"].le * 1000} ms | ${code} |`);
  await Promise.all(phones.map((x) => x.p.dispose()));
} catch (err) {
  console.error("bench:drain failed:", err);
  process.exitCode = 1;
} finally {
  await cluster.stop();
  await app.stop();
  await redis.stop();
  process.exit(process.exitCode ?? 0);
}
