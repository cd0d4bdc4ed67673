/**
 * Drains across processes on a real Redis, with the published SDK app as a child process:
 *  - SIGTERM on a pod holding 500 phones (each with one app, one of them the real SDK app), deadline
 *    25 s: every user ends on another pod with its app running and transcripts flowing again, zero
 *    reconnects land on the draining pod, zero 503s, p95 move → new connection_ack ≤ 2 s, exit 0;
 *  - Redis unavailable during a drain: the drain still ends by its deadline, and once Redis is back
 *    no user is left without a pod.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import type { PhoneSim, AppSim } from "@mentra-cluster/phone-sim";
import type { LocalCluster } from "@mentra-cluster/cli";
import type { RedisHandle } from "./helpers/redis.ts";
import type { SdkAppHandle } from "./helpers/sdkApp.ts";
import { startRedisCluster, type RedisClusterFixture } from "./helpers/redisCluster.ts";
import { eventually, sleep } from "./helpers/pod.ts";

let fx: RedisClusterFixture;
let redis: RedisHandle;
let cluster: LocalCluster;
let app: AppSim;
let real: SdkAppHandle;
let PKG: string;
let REAL: string;

interface Tracked { user: string; phone: PhoneSim; acks: { podId: string; at: number }[]; closedAt: number[]; refused503: number }
const tracked: Tracked[] = [];

before(async () => {
  fx = await startRedisCluster({ name: "dr", real: { clearStateOnStop: true }, podEnv: { DRAIN_DEADLINE_MS: "25000", MAX_NEW_SESSIONS_PER_S: "200" } });
  ({ redis, cluster, lean: app, leanPkg: PKG, realPkg: REAL } = fx);
  real = fx.real!;
});
after(() => fx?.stop());

const admin = (path: string) => fx.admin(path);

function track(user: string): Tracked {
  const phone = fx.phone(user, { reconnect: { baseMs: 250, maxMs: 2000 } });
  const tr: Tracked = { user, phone, acks: [], closedAt: [], refused503: 0 };
  phone.on("ack", (a) => tr.acks.push({ podId: a.podId ?? "", at: Date.now() }));
  phone.on("close", () => tr.closedAt.push(Date.now()));
  phone.on("reconnect_error", (e) => {
    if ((e as { status?: number }).status === 503) tr.refused503++;
  });
  tracked.push(tr);
  return tr;
}

const exitOf = (podId: string) => {
  const c = cluster.children.get(podId)!;
  return new Promise<{ code: number | null; at: number }>((r) => (c.exitCode !== null ? r({ code: c.exitCode, at: Date.now() }) : c.once("exit", (code) => r({ code, at: Date.now() }))));
};

test("SIGTERM drains a pod holding 500 phones with apps (one real SDK app) in 25 s: nothing lost", async () => {
  const victim = "pod-0";
  for (const id of ["pod-1", "pod-2"]) await admin(`/admin/pods/${id}/cordon`);
  const users = Array.from({ length: 500 }, (_, i) => `dr${i}@example.com`);
  for (let i = 0; i < users.length; i += 25) {
    await Promise.all(
      users.slice(i, i + 25).map(async (u, j) => {
        const tr = track(u);
        await tr.phone.connect();
        const r = await tr.phone.startApp(i + j === 0 ? REAL : PKG);
        assert.equal(r.status, 200, JSON.stringify(r.body));
      }),
    );
  }
  for (const id of ["pod-1", "pod-2"]) await admin(`/admin/pods/${id}/uncordon`);
  assert.ok(tracked.every((t) => t.acks[0]!.podId === victim));
  await eventually(() => app.sessions.size === 499, 10_000, "499 lean app sessions");
  await real.waitForEvent("session", 5000);
  await sleep(1500); // subscriptions in, uncordon visible to the gateway

  const exited = exitOf(victim);
  const t0 = Date.now();
  cluster.children.get(victim)!.kill("SIGTERM");
  const { code, at } = await exited;
  assert.equal(code, 0, "exit code 0");
  assert.ok(at - t0 < 25_000, `exited within the deadline (${at - t0} ms)`);

  await eventually(() => tracked.every((t) => t.acks.length >= 2 && t.phone.connected), 15_000, "every phone reconnected");
  const moves: number[] = [];
  for (const t of tracked) {
    assert.ok(t.acks.slice(1).every((a) => a.podId !== victim), `${t.user} never landed on the draining pod`);
    const closed = t.closedAt.find((c) => c >= t0)!;
    moves.push(t.acks[1]!.at - closed);
    assert.equal(t.refused503, 0, `${t.user} saw no 503`);
  }
  moves.sort((a, b) => a - b);
  const p95 = moves[Math.ceil(moves.length * 0.95) - 1]!;
  assert.ok(p95 <= 2000, `p95 move → connection_ack ${p95} ms`);

  // Apps restarted on the new pods from the running-app intent; transcripts flow again.
  await eventually(() => app.sessions.size === 499 && app.webhooks.filter((w) => w.type === "session_request").length >= 998, 15_000, "lean apps restarted by webhook");
  await sleep(1000);
  for (const t of tracked) t.phone.send({ type: "local_transcription", text: `back ${t.user}`, isFinal: true });
  await eventually(() => tracked.slice(1).every((t) => app.sessions.get(`${t.user}-${PKG}`)?.transcripts.some((x) => x.text === `back ${t.user}`)), 10_000, "lean apps receive transcripts again");
  await real.waitForEvent((e) => e.event === "transcription" && e.text === `back ${tracked[0]!.user}`, 10_000);
  assert.equal(real.count("stop"), 0, "the real SDK app never saw onStop");
  assert.equal(real.count("state_missing"), 0);
  assert.equal(app.webhooks.filter((w) => w.type === "stop_request").length, 0, "no stop webhook");
});

test("Redis unavailable during a drain: the drain ends by its deadline; after Redis returns every user has a pod", async () => {
  const victim = "pod-1";
  const mine = tracked.filter((t) => t.acks.at(-1)!.podId === victim);
  assert.ok(mine.length > 0);
  redis.kill();
  await sleep(500);
  const exited = exitOf(victim);
  const t0 = Date.now();
  cluster.children.get(victim)!.kill("SIGTERM");
  const { code, at } = await exited;
  assert.equal(code, 0);
  // 25 s deadline + the final stop (registry goodbye, sockets closed) on a busy machine.
  assert.ok(at - t0 <= 30_000, `drain ended by its deadline (${at - t0} ms)`);
  await redis.restart();
  await eventually(() => tracked.every((t) => t.phone.connected && t.acks.at(-1)!.podId === "pod-2"), 45_000, "every user on the surviving pod");
});
