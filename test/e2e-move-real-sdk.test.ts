/**
 * Moving a user between two live pods with the published @mentra/sdk 2.1.29 app, whose onStop clears
 * per-user state (the pattern that makes a stale stop dangerous). Proves the app-session id choice:
 * the new pod's webhook for the same id triggers the SDK's own "switching clouds" hand-off, the old
 * pod sends nothing terminal, and the app sees one clean transition: no onStop, transcripts resume.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { PhoneSim, gatewayResolver } from "@mentra-cluster/phone-sim";
import { mintUserToken } from "@mentra-cluster/protocol";
import { startLocalCluster, type LocalCluster } from "@mentra-cluster/cli";
import { startSdkApp, hashApiKey, type SdkAppHandle } from "./helpers/sdkApp.ts";
import { eventually } from "./helpers/pod.ts";

const SECRET = "move-secret";
const PKG = "com.test.move";
const KEY = "move-key";
let app: SdkAppHandle;
let cluster: LocalCluster;
const phones: PhoneSim[] = [];

before(async () => {
  app = await startSdkApp({ packageName: PKG, apiKey: KEY, clearStateOnStop: true });
  cluster = await startLocalCluster({
    pods: 2,
    gatewayPort: 0,
    jwtSecret: SECRET,
    logLevel: "silent",
    heartbeatMs: 200,
    seed: { apps: [{ packageName: PKG, name: PKG, publicUrl: app.publicUrl, hashedApiKey: hashApiKey(KEY) }] },
  });
});
after(async () => {
  await Promise.all(phones.map((p) => p.dispose()));
  await cluster.stop();
  await app.kill();
});

test("real SDK: a user moved from pod A to pod B keeps one app session, no onStop, transcripts resume on B", async () => {
  const user = "mover@example.com";
  const t = mintUserToken(user, SECRET);
  const phone = () => {
    const p = new PhoneSim({ wsUrl: "ws://unused", restBase: "http://unused", token: t, userId: user, resolveEndpoint: gatewayResolver(cluster.gatewayUrl, t) });
    phones.push(p);
    return p;
  };
  const p1 = phone();
  const ack1 = await p1.connect();
  assert.equal((await p1.startApp(PKG)).status, 200);
  await app.waitForEvent("session", 5000);
  const a = cluster.pods.find((x) => x.config.podId === ack1.podId)!;
  await eventually(() => a.sessions.get(user)?.subscriptions.get(PKG).length, 5000, "subscriptions on A");
  p1.send({ type: "local_transcription", text: "on pod A", isFinal: true });
  await app.waitForEvent((e) => e.event === "transcription" && e.text === "on pod A", 5000);

  // Rebalance: the user now belongs to pod B while pod A stays up.
  const podB = cluster.podIds.find((id) => id !== ack1.podId)!;
  const assignments = cluster.gateway!.deps.assignments;
  await assignments.claim(user, podB, await assignments.get(user));
  await eventually(() => p1.closes.some((c) => c.code === 4001), 5000, "phone sent back to the gateway");

  const p2 = phone();
  const ack2 = await p2.connect();
  assert.equal(ack2.podId, podB);
  const b = cluster.pods.find((x) => x.config.podId === podB)!;
  await eventually(() => b.sessions.get(user)?.apps.get(PKG)?.state === "RUNNING", 8000, "app running on pod B");
  await eventually(() => app.count("session") === 2, 5000, "onSession on the new pod");
  await eventually(() => b.sessions.get(user)?.subscriptions.get(PKG).length, 5000, "subscriptions on B");
  p2.send({ type: "local_transcription", text: "on pod B", isFinal: true });
  await app.waitForEvent((e) => e.event === "transcription" && e.text === "on pod B", 5000);
  await eventually(() => p2.displays.some((d) => d.packageName === PKG && (d.layout as { text?: string }).text === "on pod B"), 5000, "display from B");

  // Pod A's hand-off window passes: still nothing terminal reaches the app.
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(app.count("stop"), 0, "onStop never called");
  assert.equal(app.count("state_missing"), 0, "the app's per-user state survived");
  assert.equal((await app.health()).activeSessions, 1);
});
