/** One contract suite for the pod registry and the assignment store, run against every implementation. */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  MemoryAssignmentStore,
  MemoryPodRegistry,
  RedisAssignmentStore,
  RedisPodRegistry,
  pickPod,
  admits,
  PlacementLedger,
  Router,
  type AssignmentStore,
  type PodRecord,
  type PodRegistry,
  type PodView,
  type Assignment,
} from "@mentra-cluster/registry";
import { startRedis, type RedisHandle } from "../../../test/helpers/redis.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function record(podId: string, extra: Partial<PodRecord> = {}): PodRecord {
  return {
    podId,
    state: "ready",
    endpoints: { httpUrl: `http://gw/p/${podId}`, wsUrl: `ws://gw/p/${podId}/glasses-ws`, udpHost: "127.0.0.1", udpPort: 8000, internalUrl: "http://127.0.0.1:1" },
    sessions: 0,
    lagP99Ms: 1,
    elu: 0.1,
    capacity: { maxSessions: 100, lagP99CapMs: 100, eluCap: 0.9 },
    startedAt: Date.now(),
    updatedAt: Date.now(),
    ...extra,
  };
}

let redis: RedisHandle;
before(async () => {
  redis = await startRedis();
});
after(async () => {
  await redis.stop();
});

let n = 0;
const impls: { name: string; make(): { reg: PodRegistry; store: AssignmentStore; store2: AssignmentStore } }[] = [
  { name: "memory", make: () => { const store = new MemoryAssignmentStore(); return { reg: new MemoryPodRegistry(), store, store2: store }; } },
  {
    name: "redis",
    make: () => {
      const prefix = `t${n++}:`;
      return {
        reg: new RedisPodRegistry({ url: redis.url, prefix }),
        store: new RedisAssignmentStore({ url: redis.url, prefix }),
        // A second connection: another gateway replica or pod.
        store2: new RedisAssignmentStore({ url: redis.url, prefix }),
      };
    },
  },
];

for (const impl of impls) {
  describe(`registry contract: ${impl.name}`, () => {
    test("a pod's record is listed while it heartbeats and gone after its TTL", async () => {
      const { reg, store, store2 } = impl.make();
      await reg.heartbeat(record("pod-a"), 300);
      await reg.heartbeat(record("pod-b", { sessions: 5 }), 5000);
      let pods = await reg.list();
      assert.deepEqual(pods.map((p) => p.podId), ["pod-a", "pod-b"]);
      assert.equal(pods[1]!.sessions, 5);
      assert.equal(pods[0]!.control.cordoned, false);
      await sleep(450);
      pods = await reg.list();
      assert.deepEqual(pods.map((p) => p.podId), ["pod-b"], "pod-a expired");
      await reg.remove("pod-b");
      assert.deepEqual(await reg.list(), []);
      await Promise.all([reg.close(), store.close(), store2.close()]);
    });

    test("control flags are per pod and survive heartbeats", async () => {
      const { reg, store, store2 } = impl.make();
      await reg.heartbeat(record("pod-a"), 5000);
      await reg.setControl("pod-a", { cordoned: true });
      await reg.setControl("pod-a", { drainRequested: true, drainDeadlineMs: 25_000 });
      await reg.heartbeat(record("pod-a", { sessions: 3 }), 5000);
      const [p] = await reg.list();
      assert.equal(p!.control.cordoned, true);
      assert.equal(p!.control.drainRequested, true);
      assert.equal(p!.control.drainDeadlineMs, 25_000);
      assert.equal((await reg.getControl("pod-z")).cordoned, false);
      await Promise.all([reg.close(), store.close(), store2.close()]);
    });

    test("claims are compare-and-set: 200 concurrent claims from two connections give one owner per user", async () => {
      const { reg, store, store2 } = impl.make();
      const users = Array.from({ length: 20 }, (_, i) => `u${i}@x.io`);
      const results = await Promise.all(
        Array.from({ length: 200 }, (_, i) => (i % 2 ? store : store2).claim(users[i % 20]!, `pod-${i % 3}`, null)),
      );
      for (const u of users) {
        const wins = results.filter((r) => r.won && r.assignment!.userId === u);
        assert.equal(wins.length, 1, `exactly one winner for ${u}`);
        const final = await store.get(u);
        assert.deepEqual(final, wins[0]!.assignment);
        // Losers were told who won.
        for (const r of results.filter((x) => !x.won && x.assignment?.userId === u)) assert.equal(r.assignment!.podId, final!.podId);
      }
      await Promise.all([reg.close(), store.close(), store2.close()]);
    });

    test("epochs strictly increase on every change, also across a release; stale claims and releases fail", async () => {
      const { reg, store, store2 } = impl.make();
      const a1 = (await store.claim("eve@x.io", "pod-a", null)).assignment!;
      const moved = await store.claim("eve@x.io", "pod-b", a1);
      assert.equal(moved.won, true);
      const a2 = moved.assignment!;
      assert.ok(a2.epoch > a1.epoch);
      // Someone still holding a1 cannot move the user.
      const stale = await store2.claim("eve@x.io", "pod-c", a1);
      assert.equal(stale.won, false);
      assert.deepEqual(stale.assignment, a2);
      assert.equal(await store.release("eve@x.io", "pod-a", a1.epoch), false, "stale release refused");
      assert.equal(await store.release("eve@x.io", "pod-b", a2.epoch), true);
      assert.equal(await store.get("eve@x.io"), null);
      const a3 = (await store.claim("eve@x.io", "pod-a", null)).assignment!;
      assert.ok(a3.epoch > a2.epoch, "an epoch is never reused");
      assert.deepEqual(await store.getMany(["eve@x.io", "nobody@x.io"]), [a3, null]);
      await Promise.all([reg.close(), store.close(), store2.close()]);
    });

    test("owner changes are announced to every subscriber", async () => {
      const { reg, store, store2 } = impl.make();
      const seen: Assignment[] = [];
      const off = store2.onOwnerChange((a) => seen.push(a));
      await sleep(100); // subscription established
      const a1 = (await store.claim("sam@x.io", "pod-a", null)).assignment!;
      await store.claim("sam@x.io", "pod-a", a1); // same owner, new epoch: not an owner change
      const a3 = (await store.claim("sam@x.io", "pod-b", await store.get("sam@x.io"))).assignment!;
      for (let i = 0; i < 50 && seen.length < 2; i++) await sleep(20);
      assert.deepEqual(seen.map((a) => a.podId), ["pod-a", "pod-b"]);
      assert.deepEqual(seen[1], a3);
      off();
      await Promise.all([reg.close(), store.close(), store2.close()]);
    });
  });
}

test("placement: only admitting pods, power of two choices prefers the less loaded", () => {
  const view = (id: string, extra: Partial<PodView> = {}): PodView => ({ ...record(id), control: { cordoned: false, drainRequested: false, updatedAt: 0 }, ...extra });
  const pods = [
    view("busy", { sessions: 90 }),
    view("idle", { sessions: 1 }),
    view("cordoned", { control: { cordoned: true, drainRequested: false, updatedAt: 0 } }),
    view("draining", { state: "draining" }),
    view("full", { sessions: 100 }),
    view("laggy", { lagP99Ms: 150 }),
    view("hot", { elu: 0.95 }),
    view("starting", { state: "starting" }),
  ];
  assert.deepEqual(pods.filter(admits).map((p) => p.podId), ["busy", "idle"]);
  let r = 0;
  const seq = [0.1, 0.9, 0.6, 0.2];
  for (let i = 0; i < 4; i++) assert.equal(pickPod(pods, () => seq[r++ % seq.length]!)?.podId, "idle");
  assert.equal(pickPod(pods.filter((p) => !admits(p))), null);
});

test("a burst of new users on a stale snapshot spreads over every pod instead of herding onto the least loaded", async () => {
  // Three idle pods whose records are a heartbeat old; pod-a shows a little more lag (noise).
  const registry = new MemoryPodRegistry();
  const assignments = new MemoryAssignmentStore();
  const cap = { maxSessions: 1000, lagP99CapMs: 2000, eluCap: 1.01 };
  await registry.heartbeat(record("pod-a", { lagP99Ms: 4.2, elu: 0, capacity: cap }), 60_000);
  await registry.heartbeat(record("pod-b", { lagP99Ms: 2.2, elu: 0, capacity: cap }), 60_000);
  await registry.heartbeat(record("pod-c", { lagP99Ms: 2.5, elu: 0, capacity: cap }), 60_000);
  const router = new Router({ registry, assignments, snapshotIntervalMs: 60_000 });
  await router.start();
  try {
    const per = new Map<string, number>();
    for (let i = 0; i < 300; i++) {
      const d = await router.route(`burst${i}@example.com`);
      assert.ok(d.ok && d.placed);
      per.set(d.pod.podId, (per.get(d.pod.podId) ?? 0) + 1);
    }
    // Without the ledger pod-a (worst score) would get none and pod-b two thirds.
    for (const id of ["pod-a", "pod-b", "pod-c"]) assert.ok((per.get(id) ?? 0) >= 80, `${id} got ${per.get(id) ?? 0} of 300: ${JSON.stringify([...per])}`);
  } finally {
    router.stop();
  }
});

test("placement ledger: a placement counts until the pod's own record is newer, at most the horizon", () => {
  let now = 1000;
  const ledger = new PlacementLedger(() => now, 10_000);
  const v = (updatedAt: number): PodView => ({ ...record("p"), updatedAt, control: { cordoned: false, drainRequested: false, updatedAt: 0 } });
  ledger.note("p");
  now = 1500;
  ledger.note("p");
  assert.equal(ledger.view([v(900)])[0]!.sessions, 2, "both placements are newer than the record");
  assert.equal(ledger.pending(v(1200)), 1, "the record at 1200 includes the first");
  assert.equal(ledger.pending(v(1600)), 0);
  ledger.note("p");
  now = 20_000;
  assert.equal(ledger.pending(v(0)), 0, "older than the horizon");
});
