/**
 * Running-app intent across pods over the shared Redis directory: a user who moves from pod A to
 * pod B finds on B every app that was running on A; A's session expiring afterwards never removes
 * anything from the intent (C19's rule); only an explicit stop does.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, test } from "node:test";
import { CachedDirectory, RedisAppChangeBus, RedisDirectory, hashApiKey } from "@mentra-cluster/directory";
import { AppSim } from "@mentra-cluster/phone-sim";
import { ManualClock } from "@mentra-cluster/pod";
import { eventually, sleep, startTestPod } from "../../../test/helpers/pod.ts";
import { startRedis } from "../../../test/helpers/redis.ts";

const cleanup: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const c of cleanup.reverse()) await c().catch(() => undefined);
});

test("a user moving from pod A to pod B gets every running app back on B; A's expiry keeps the intent", async () => {
  const redis = await startRedis();
  cleanup.push(() => redis.stop());
  const prefix = `mentra:test:${randomUUID()}:dir:`;
  const X = "com.intent.x";
  const Y = "com.intent.y";
  const appX = await new AppSim({ packageName: X, apiKey: "kx" }).start();
  const appY = await new AppSim({ packageName: Y, apiKey: "ky" }).start();
  cleanup.push(() => appX.stop(), () => appY.stop());

  const mk = () =>
    new CachedDirectory(new RedisDirectory({ url: redis.url, prefix }), {
      bus: new RedisAppChangeBus({ url: redis.url, channel: `${prefix}app-changes` }),
    });
  const dirA = mk();
  const dirB = mk();
  const raw = new RedisDirectory({ url: redis.url, prefix });
  cleanup.push(() => dirA.close(), () => dirB.close(), () => raw.close());
  for (const [pkg, sim, key] of [[X, appX, "kx"], [Y, appY, "ky"]] as const) {
    await raw.upsertApp({ packageName: pkg, name: pkg, publicUrl: sim.publicUrl, hashedApiKey: hashApiKey(key), type: "standard", permissions: [] });
  }

  const clockA = new ManualClock();
  const podA = await startTestPod({ podId: "pod-a", deps: { clock: clockA, directory: dirA } });
  const podB = await startTestPod({ podId: "pod-b", deps: { directory: dirB } });
  cleanup.push(() => podA.close(), () => podB.close());

  const user = "mover@example.com";
  const p1 = podA.phone(user);
  await p1.connect();
  for (const pkg of [X, Y]) assert.equal((await p1.startApp(pkg)).status, 200);
  await eventually(async () => (await raw.getOrCreateUser(user)).runningApps.length === 2, 3000, "intent written on A");

  // The user moves: the phone leaves A and connects to B.
  await p1.close();
  const p2 = podB.phone(user);
  await p2.connect();
  await eventually(() => [X, Y].every((pkg) => podB.pod.sessions.get(user)?.apps.get(pkg)?.state === "RUNNING"), 5000, "B started both apps from the intent");
  assert.equal(dirB.stats().misses, 0, "B found both apps in its cache");

  // A's session expires afterwards: nothing is removed from the intent, B's apps keep running.
  clockA.advance(60_000);
  await eventually(() => podA.pod.sessions.size === 0, 3000, "A disposed the session");
  await sleep(200);
  assert.deepEqual((await raw.getOrCreateUser(user)).runningApps, [X, Y]);
  for (const pkg of [X, Y]) assert.equal(podB.pod.sessions.get(user)?.apps.get(pkg)?.state, "RUNNING");
  assert.equal(appX.webhooks.filter((w) => w.type === "stop_request").length, 0);

  // Only the user's explicit stop takes an app out of the intent.
  assert.equal((await p2.stopApp(Y)).status, 200);
  assert.deepEqual((await raw.getOrCreateUser(user)).runningApps, [X]);
});
