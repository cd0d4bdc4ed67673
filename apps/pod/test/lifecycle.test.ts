/**
 * One-pod failure cases with an injected clock: C1-C5 (liveness, grace, stale closes), C10 (leaks),
 * C13 (late async work), C21-C23 (mini-app liveness), C28 (empty subscriptions).
 */
import { afterEach, test } from "node:test";
import assert from "node:assert/strict";
import { AppSim, PhoneSim } from "@mentra-cluster/phone-sim";
import { EmbeddedDirectory } from "@mentra-cluster/directory";
import { ManualClock } from "@mentra-cluster/pod";
import { appSeed, eventually, sleep, startTestPod, type TestPod } from "../../../test/helpers/pod.ts";
import v8 from "node:v8";
import vm from "node:vm";

v8.setFlagsFromString("--expose-gc");
const gc = vm.runInNewContext("gc") as () => void;
async function heapAfterGc(): Promise<number> {
  for (let i = 0; i < 3; i++) {
    gc();
    await sleep(20);
  }
  return process.memoryUsage().heapUsed;
}

const PKG = "com.test.lifecycle";
const KEY = "lifecycle-key";
let cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanup.reverse()) await c();
  cleanup = [];
});

let unhandled = 0;
process.on("unhandledRejection", () => unhandled++);

async function setup(opts: { subscriptions?: string[]; directory?: EmbeddedDirectory } = {}) {
  const clock = new ManualClock();
  const app = await new AppSim({ packageName: PKG, apiKey: KEY, subscriptions: opts.subscriptions }).start();
  const directory = opts.directory ?? new EmbeddedDirectory({ seed: appSeed(PKG, app.publicUrl, KEY) });
  if (opts.directory) await opts.directory.upsertApp({ packageName: PKG, name: PKG, publicUrl: app.publicUrl, hashedApiKey: (await import("@mentra-cluster/directory")).hashApiKey(KEY), type: "standard", permissions: [] });
  const tp = await startTestPod({ deps: { clock, directory } });
  cleanup.push(async () => {
    await tp.close();
    await app.stop();
  });
  return { clock, app, tp };
}

/** Starts the app for a connected phone and waits until it is RUNNING with its subscriptions in. */
async function startApp(tp: TestPod, app: AppSim, phone: ReturnType<TestPod["phone"]>, userId: string) {
  const res = await phone.startApp(PKG);
  assert.equal(res.status, 200, JSON.stringify(res.body));
  await eventually(() => tp.pod.sessions.get(userId)?.subscriptions.get(PKG).length, 3000, "subscriptions");
  return app.sessions.get(`${userId}-${PKG}`)!;
}

test("C1/C2: a phone that never answers pings is pinged every 2 s and never closed (10 min)", async () => {
  const { clock, tp } = await setup();
  const phone = tp.phone("legacy@example.com", { answerPings: false });
  await phone.connect();
  for (let i = 0; i < 300; i++) clock.advance(2000);
  await eventually(() => phone.pingsReceived >= 300, 5000, "300 pings");
  assert.equal(phone.closes.length, 0);
  assert.equal(phone.connected, true);
  assert.equal(tp.pod.sessions.get("legacy@example.com")?.phoneConnected, true);
});

test("C3 short black-hole: reconnect within the grace period resumes the same session, apps keep running, no webhook", async () => {
  const { clock, app, tp } = await setup();
  const user = "blip@example.com";
  const p1 = tp.phone(user);
  await p1.connect();
  const appSession = await startApp(tp, app, p1, user);
  const session = tp.pod.sessions.get(user)!;
  p1.destroy(); // no close frame: the pod sees 1006
  await eventually(() => !session.phoneConnected, 3000, "pod to notice the drop");
  clock.advance(8000);
  const p2 = tp.phone(user);
  await p2.connect();
  assert.equal(tp.pod.sessions.get(user), session, "same UserSession object");
  assert.equal(session.apps.get(PKG)?.state, "RUNNING");
  assert.equal(app.webhooks.length, 1, "no second webhook");
  assert.equal(appSession.closes.length, 0, "app socket untouched");
  assert.equal(tp.pod.metrics.health().sessions.userSessions, 1);
});

test("C3 long black-hole: disposed at 60 s (not before); apps get User session ended; reconnect restarts them", async () => {
  const { clock, app, tp } = await setup();
  const user = "gone@example.com";
  const p1 = tp.phone(user);
  await p1.connect();
  const appSession = await startApp(tp, app, p1, user);
  p1.destroy();
  await eventually(() => !tp.pod.sessions.get(user)!.phoneConnected, 3000);
  clock.advance(59_000);
  assert.ok(tp.pod.sessions.get(user), "still alive at 59 s");
  clock.advance(1_000);
  assert.equal(tp.pod.sessions.get(user), undefined, "disposed at 60 s");
  await eventually(() => appSession.closes.length === 1, 3000, "app close");
  assert.deepEqual(appSession.closes[0], { code: 1000, reason: "User session ended" });
  assert.ok(appSession.other.some((m) => m.type === "app_stopped"));
  // Intent survives: a reconnect starts the app again by webhook.
  const p2 = tp.phone(user);
  await p2.connect();
  await eventually(() => tp.pod.sessions.get(user)?.apps.get(PKG)?.state === "RUNNING", 5000, "app restarted");
  assert.equal(app.webhooks.filter((w) => w.type === "session_request").length, 2);
});

test("C4 stale close: WS2 replaces WS1; WS1's close changes nothing, pings flow on WS2, no grace timer", async () => {
  const { clock, app, tp } = await setup();
  const user = "twice@example.com";
  const ws1 = tp.phone(user);
  await ws1.connect();
  const appSession = await startApp(tp, app, ws1, user);
  const ws2 = tp.phone(user);
  await ws2.connect();
  await eventually(() => ws1.closes.length === 1, 3000, "ws1 closed by the pod");
  assert.equal(ws1.closes[0]!.code, 4000);
  const session = tp.pod.sessions.get(user)!;
  assert.equal(session.phoneConnected, true);
  assert.equal(session.disconnectedAt, null);
  const before = ws2.pingsReceived;
  clock.advance(61_000);
  await eventually(() => ws2.pingsReceived >= before + 30, 3000, "pings on ws2");
  assert.equal(tp.pod.sessions.get(user), session, "not disposed");
  assert.equal(appSession.closes.length, 0);
});

test("C5: exactly one session per user; an old session's dispose never removes the newer one", async () => {
  const { clock, tp } = await setup();
  const user = "identity@example.com";
  const p1 = tp.phone(user);
  await p1.connect();
  const old = tp.pod.sessions.get(user)!;
  await p1.close();
  await eventually(() => !old.phoneConnected, 3000);
  clock.advance(60_000);
  assert.equal(old.disposed, true);
  const p2 = tp.phone(user);
  await p2.connect();
  const fresh = tp.pod.sessions.get(user)!;
  assert.notEqual(fresh, old);
  old.dispose("late duplicate dispose");
  assert.equal(tp.pod.sessions.get(user), fresh);
  assert.equal(tp.pod.sessions.size, 1);
  assert.equal(tp.pod.metrics.health().sessions.userSessions, 1);
});

test("C10: 100 sessions created and disposed leave no timer, UDP registration or app socket behind", async () => {
  const { clock, app, tp } = await setup();
  const baseTimers = clock.pendingTimers;
  // Warm-up cycle so lazily allocated code and caches are part of the baseline.
  for (let i = 0; i < 10; i++) {
    const w = new PhoneSim({ wsUrl: tp.wsUrl, restBase: tp.httpUrl, token: tp.token(`warm${i}@example.com`), userId: `warm${i}@example.com` });
    await w.connect();
    await w.registerUdp();
    if (i < 3) await startApp(tp, app, w, `warm${i}@example.com`);
    await w.dispose();
  }
  await eventually(() => [...tp.pod.sessions.values()].every((s) => !s.phoneConnected), 5000);
  clock.advance(60_000);
  const heapBefore = await heapAfterGc();
  // Phones made here (not through tp.phone) so the test can drop them before measuring the heap.
  let phones: PhoneSim[] = [];
  for (let i = 0; i < 100; i++) {
    const p = new PhoneSim({ wsUrl: tp.wsUrl, restBase: tp.httpUrl, token: tp.token(`leak${i}@example.com`), userId: `leak${i}@example.com` });
    await p.connect();
    await p.registerUdp();
    phones.push(p);
  }
  // A tenth of them also run an app.
  for (let i = 0; i < 10; i++) await startApp(tp, app, phones[i]!, `leak${i}@example.com`);
  assert.equal(tp.pod.udp.registered, 100);
  for (const p of phones) await p.close();
  await eventually(() => [...tp.pod.sessions.values()].every((s) => !s.phoneConnected), 5000);
  clock.advance(60_000);
  assert.equal(tp.pod.sessions.size, 0);
  assert.equal(tp.pod.udp.registered, 0);
  assert.equal(clock.pendingTimers, baseTimers, "every session timer released");
  await eventually(() => app.sessions.size === 0, 3000, "app sockets closed");
  const h = tp.pod.metrics.health();
  assert.equal(h.sessions.userSessions, 0);
  assert.equal(h.sessions.miniappSessions, 0);
  assert.equal(h.udp.sessions, 0);
  await Promise.all(phones.map((p) => p.dispose()));
  phones = [];
  const heapAfter = await heapAfterGc();
  const growth = heapAfter - heapBefore;
  if (process.env.DEBUG_HEAP) console.log(`heap ${heapBefore} -> ${heapAfter}`);
  assert.ok(growth <= Math.max(heapBefore * 0.1, 3 * 1024 * 1024), `heap back to baseline: ${(heapBefore / 1e6).toFixed(1)} MB → ${(heapAfter / 1e6).toFixed(1)} MB`);
});

test("C13: directory answers after the session is gone; nothing starts, nothing rejects unhandled", async () => {
  const slow = new EmbeddedDirectory({ latencyMs: 150 });
  const { clock, app, tp } = await setup({ directory: slow });
  await slow.addRunningApp("late@example.com", PKG);
  const before = unhandled;
  const p = tp.phone("late@example.com");
  await p.connect();
  await p.close();
  await eventually(() => !tp.pod.sessions.get("late@example.com")?.phoneConnected, 3000);
  clock.advance(60_000);
  assert.equal(tp.pod.sessions.size, 0);
  await sleep(600);
  assert.equal(app.webhooks.length, 0, "no app started for a disposed session");
  assert.equal(unhandled, before);
});

test("C21: a mini app that dies without a close frame enters grace and is resurrected by webhook after 5 s", async () => {
  const { clock, app, tp } = await setup();
  const user = "deadapp@example.com";
  const p = tp.phone(user);
  await p.connect();
  const s1 = await startApp(tp, app, p, user);
  s1.ws.terminate();
  await eventually(() => tp.pod.sessions.get(user)!.apps.get(PKG)!.state === "GRACE", 3000, "grace");
  clock.advance(4_999);
  assert.equal(app.webhooks.length, 1);
  clock.advance(1);
  await eventually(() => tp.pod.sessions.get(user)!.apps.get(PKG)!.state === "RUNNING", 5000, "resurrected");
  assert.equal(app.webhooks.filter((w) => w.type === "session_request").length, 2);
  // Resurrection while the phone is away waits for the phone instead (DORMANT).
  const s2 = (await eventually(() => app.sessions.get(`${user}-${PKG}`), 3000, "app side of the resurrected session"))!;
  await p.close();
  await eventually(() => !tp.pod.sessions.get(user)!.phoneConnected, 3000);
  s2.ws.terminate();
  await eventually(() => tp.pod.sessions.get(user)!.apps.get(PKG)!.state === "GRACE", 3000);
  clock.advance(5_000);
  assert.equal(tp.pod.sessions.get(user)!.apps.get(PKG)!.state, "DORMANT");
  const p2 = tp.phone(user);
  await p2.connect();
  await eventually(() => tp.pod.sessions.get(user)!.apps.get(PKG)!.state === "RUNNING", 5000, "resurrected on phone return");
});

test("C21 graceful restart: an SDK-style re-init during grace is accepted without a webhook", async () => {
  const { app, tp } = await setup();
  const user = "reinit@example.com";
  const p = tp.phone(user);
  await p.connect();
  const s1 = await startApp(tp, app, p, user);
  s1.ws.terminate();
  await eventually(() => tp.pod.sessions.get(user)!.apps.get(PKG)!.state === "GRACE", 3000);
  // What the SDK does after an abnormal close: a new socket with the same init.
  const { default: WebSocket } = await import("ws");
  const ws = new WebSocket(tp.pod.addresses.appWsUrl);
  cleanup.push(async () => ws.terminate());
  await new Promise((r) => ws.once("open", r));
  ws.send(JSON.stringify({ type: "tpa_connection_init", sessionId: `${user}-${PKG}`, packageName: PKG, apiKey: KEY }));
  const ack = await new Promise<{ type: string }>((r) => ws.once("message", (d) => r(JSON.parse(d.toString()))));
  assert.equal(ack.type, "tpa_connection_ack");
  assert.equal(tp.pod.sessions.get(user)!.apps.get(PKG)!.state, "RUNNING");
  assert.equal(app.webhooks.length, 1);
});

test("C22: five phone blips in 2 minutes reach the mini app as nothing at all", async () => {
  const { clock, app, tp } = await setup();
  const user = "flaky@example.com";
  let p = tp.phone(user);
  await p.connect();
  const s = await startApp(tp, app, p, user);
  for (let i = 0; i < 5; i++) {
    p.destroy();
    await eventually(() => !tp.pod.sessions.get(user)!.phoneConnected, 3000);
    clock.advance(4_000);
    p = tp.phone(user);
    await p.connect();
    clock.advance(20_000);
  }
  assert.equal(app.webhooks.length, 1, "no repeated webhooks");
  assert.equal(s.closes.length, 0, "app socket stayed open");
  assert.equal(app.sessions.get(`${user}-${PKG}`), s);
  assert.equal(tp.pod.sessions.get(user)!.apps.get(PKG)!.state, "RUNNING");
});

test("C23: the pod never pings a mini app, and answers an app's ping with pong", async () => {
  const { clock, app, tp } = await setup();
  const user = "noping@example.com";
  const p = tp.phone(user);
  await p.connect();
  const s = await startApp(tp, app, p, user);
  for (let i = 0; i < 60; i++) clock.advance(1000);
  await sleep(100);
  assert.equal(s.other.filter((m) => m.type === "ping").length, 0);
  s.ws.send(JSON.stringify({ type: "ping" }));
  await eventually(() => s.other.some((m) => m.type === "pong"), 3000, "pong");
});

test("C28: an empty subscription list within 8 s of a (re)connect is ignored; the mic is never forced off", async () => {
  const { clock, app, tp } = await setup();
  const user = "subs@example.com";
  const p = tp.phone(user);
  await p.connect();
  const s = await startApp(tp, app, p, user);
  clock.advance(600);
  await p.waitFor((m) => m.type === "microphone_state_change" && (m as { isMicrophoneEnabled: boolean }).isMicrophoneEnabled, 3000);
  const session = tp.pod.sessions.get(user)!;
  s.ws.send(JSON.stringify({ type: "subscription_update", packageName: PKG, sessionId: s.sessionId, subscriptions: [] }));
  await sleep(100);
  clock.advance(5_000);
  assert.deepEqual(session.subscriptions.get(PKG), ["transcription:en-US"]);
  assert.equal(session.mic.enabled, true);
  assert.ok(!p.received.some((m) => m.type === "microphone_state_change" && !(m as { isMicrophoneEnabled: boolean }).isMicrophoneEnabled));
  // After the window an empty list is a real unsubscribe, and the mic goes off after its hold-down.
  clock.advance(4_000);
  s.ws.send(JSON.stringify({ type: "subscription_update", packageName: PKG, sessionId: s.sessionId, subscriptions: [] }));
  await eventually(() => session.subscriptions.get(PKG).length === 0, 3000);
  clock.advance(600);
  clock.advance(3_000);
  await p.waitFor((m) => m.type === "microphone_state_change" && !(m as { isMicrophoneEnabled: boolean }).isMicrophoneEnabled, 3000);
});
