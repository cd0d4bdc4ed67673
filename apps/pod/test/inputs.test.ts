/**
 * Bad input on every channel gets a clear error, a close code or a counted drop; the pod stays up
 * and other users are untouched. Also C6 (valid token, no session: never 401) and the REST surface.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { AppSim } from "@mentra-cluster/phone-sim";
import { signCoreToken } from "@mentra-cluster/protocol";
import { parsePrometheusText } from "@mentra-cluster/metrics";
import { appSeed, eventually, startTestPod, TEST_SECRET, ADMIN_TOKEN, type TestPod } from "../../../test/helpers/pod.ts";

const PKG = "com.test.inputs";
const KEY = "inputs-key";
let tp: TestPod;
let app: AppSim;

before(async () => {
  app = await new AppSim({ packageName: PKG, apiKey: KEY }).start();
  tp = await startTestPod({ seed: appSeed(PKG, app.publicUrl, KEY) });
});
after(async () => {
  await tp.close();
  await app.stop();
});

async function upgrade(url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers });
    ws.on("unexpected-response", (_req, res) => {
      let data = "";
      res.on("data", (c) => (data += c));
      res.on("end", () => resolve({ status: res.statusCode!, body: JSON.parse(data) }));
    });
    ws.on("open", () => {
      ws.terminate();
      reject(new Error("upgrade should have been refused"));
    });
    ws.on("error", () => undefined);
  });
}

function drops(channel: string, reason: string): Promise<number> {
  return fetch(`${tp.httpUrl}/metrics`).then(async (r) => {
    const fam = parsePrometheusText(await r.text()).get("mentra_dropped_messages_total");
    return fam?.samples.find((s) => s.labels.channel === channel && s.labels.reason === reason)?.value ?? 0;
  });
}

test("glasses-ws refuses a missing, forged or claimless token with 401 JSON before the upgrade", async () => {
  const missing = await upgrade(tp.wsUrl);
  assert.equal(missing.status, 401);
  assert.equal(missing.body.type, "connection_error");
  assert.equal(missing.body.message, "No core token provided");
  const forged = await upgrade(`${tp.wsUrl}?token=${signCoreToken({ email: "eve@example.com" }, "wrong-secret")}`);
  assert.equal(forged.status, 401);
  assert.equal(forged.body.message, "Invalid core token");
  const garbage = await upgrade(`${tp.wsUrl}?token=not.a.jwt`);
  assert.equal(garbage.status, 401);
  const noEmail = await upgrade(`${tp.wsUrl}?token=${signCoreToken({ sub: "123" }, TEST_SECRET)}`);
  assert.equal(noEmail.status, 401);
  assert.equal(noEmail.body.message, "Invalid core token - no user ID");
  // The header wins over the query string.
  const headerWins = await upgrade(`${tp.wsUrl}?token=${tp.token("ok@example.com")}`, { authorization: "Bearer nonsense" });
  assert.equal(headerWins.status, 401);
});

test("connection_ack carries this pod's UDP endpoint, and a 32-byte key when udpEncryption=true", async () => {
  const plain = tp.phone("Ack@Example.com", { tokenVia: "header" });
  const ack = await plain.connect();
  assert.equal(ack.type, "connection_ack");
  assert.equal(ack.sessionId, "ack@example.com");
  assert.equal(ack.udpPort, tp.pod.addresses.udpPort);
  assert.equal(ack.udpHost, "127.0.0.1");
  assert.equal(ack.udpEncryption, undefined);
  const enc = tp.phone("enc@example.com", { udpEncryption: true });
  const ack2 = await enc.connect();
  assert.equal(ack2.udpEncryption?.algorithm, "xsalsa20-poly1305");
  assert.equal(Buffer.from(ack2.udpEncryption!.key, "base64").length, 32);
});

test("malformed JSON, unknown types and bad fields are counted; the phone stays connected", async () => {
  const p = tp.phone("noisy@example.com");
  await p.connect();
  const before = { json: await drops("phone", "malformed_json"), unknown: await drops("phone", "unknown_type"), field: await drops("phone", "invalid_field") };
  p.sendRaw("{not json");
  const err = await p.waitFor<{ code: string }>((m) => m.type === "connection_error", 3000);
  assert.equal(err.code, "MALFORMED_MESSAGE");
  p.send({ type: "definitely_not_a_type" });
  p.send({ type: "start_app", packageName: 42 });
  p.send({ type: "udp_register", userIdHash: "abc" });
  await eventually(async () => (await drops("phone", "unknown_type")) === before.unknown + 1, 3000, "unknown_type drop");
  assert.equal(await drops("phone", "malformed_json"), before.json + 1);
  assert.equal(await drops("phone", "invalid_field"), before.field + 2);
  assert.equal(p.connected, true);
  p.send({ type: "ping" });
  await p.waitFor((m) => m.type === "pong", 3000);
});

test("an oversized frame closes only that phone's socket with 1009; other users are untouched", async () => {
  const other = tp.phone("bystander@example.com");
  await other.connect();
  const big = tp.phone("big@example.com");
  await big.connect();
  big.sendRaw("x".repeat(1024 * 1024 + 1));
  await eventually(() => big.closes.length === 1, 3000, "close");
  assert.equal(big.closes[0]!.code, 1009);
  assert.equal(other.connected, true);
  other.send({ type: "ping" });
  await other.waitFor((m) => m.type === "pong", 3000);
  assert.equal((await fetch(`${tp.httpUrl}/livez`)).status, 200);
});

test("C6: a valid token without a session is 503 no_active_session, never 401; bad tokens are 401", async () => {
  const token = tp.token("nosession@example.com");
  for (const [method, path] of [["POST", `/apps/${PKG}/start`], ["GET", "/api/client/apps"], ["POST", "/api/client/audio/configure"], ["POST", "/api/client/device/state"]] as const) {
    const r = await fetch(`${tp.httpUrl}${path}`, { method, headers: { authorization: `Bearer ${token}`, "content-type": "application/json" }, body: method === "POST" ? "{}" : undefined });
    assert.equal(r.status, 503, path);
    const body = await r.json();
    assert.equal(body.error, "no_active_session");
    assert.equal(r.headers.get("retry-after"), "1");
  }
  const bad = await fetch(`${tp.httpUrl}/api/client/apps`, { headers: { authorization: "Bearer x.y.z" } });
  assert.equal(bad.status, 401);
  assert.equal((await bad.json()).error, "invalid_token");
  const none = await fetch(`${tp.httpUrl}/api/client/apps`);
  assert.equal(none.status, 401);
  assert.equal((await none.json()).error, "no_token");
});

test("REST: unknown app 404, LC3 is a clear unsupported_format, PCM accepted, bad bodies 400, device state applied", async () => {
  const p = tp.phone("rest@example.com", { glassesModel: null });
  await p.connect();
  const unknown = await p.startApp("com.nobody.here");
  assert.equal(unknown.status, 404);
  assert.equal(unknown.body.error, "app_not_found");
  const lc3 = await p.rest("POST", "/api/client/audio/configure", { format: "lc3", lc3Config: { sampleRate: 16000, frameDurationMs: 10, frameSizeBytes: 60 } });
  assert.equal(lc3.status, 422);
  assert.equal(lc3.body.error, "unsupported_format");
  assert.deepEqual(lc3.body.supported, ["pcm"]);
  const pcm = await p.rest("POST", "/api/client/audio/configure", { format: "pcm" });
  assert.equal(pcm.status, 200);
  assert.equal(pcm.body.format, "pcm");
  const bad = await p.rest("POST", "/api/client/audio/configure", { format: "mp3" });
  assert.equal(bad.status, 400);
  const notJson = await fetch(`${tp.httpUrl}/api/client/device/state`, { method: "POST", headers: { authorization: `Bearer ${tp.token("rest@example.com")}`, "content-type": "application/json" }, body: "{oops" });
  assert.equal(notJson.status, 400);
  const dev = await p.rest("POST", "/api/client/device/state", { modelName: "Even Realities G1" });
  assert.equal(dev.status, 200);
  assert.equal(dev.body.appliedState.isGlassesConnected, true);
  assert.equal(dev.body.appliedState.modelName, "Even Realities G1");
  const missing = await fetch(`${tp.httpUrl}/no/such/path`);
  assert.equal(missing.status, 404);
  assert.equal((await missing.json()).error, "not_found");
});

async function appSocket(): Promise<{ ws: WebSocket; next(): Promise<any>; closed: Promise<{ code: number; reason: string }> }> {
  const ws = new WebSocket(tp.pod.addresses.appWsUrl);
  const queue: any[] = [];
  const waiters: ((m: any) => void)[] = [];
  ws.on("message", (d) => {
    const m = JSON.parse(d.toString());
    const w = waiters.shift();
    if (w) w(m);
    else queue.push(m);
  });
  const closed = new Promise<{ code: number; reason: string }>((r) => ws.on("close", (code, reason) => r({ code, reason: reason.toString() })));
  await new Promise((r) => ws.once("open", r));
  return { ws, closed, next: () => (queue.length ? Promise.resolve(queue.shift()) : new Promise((r) => waiters.push(r))) };
}

test("app-ws: wrong API key, app not started, unknown session, non-init first frame and bad JSON each get a code and 1008", async () => {
  const p = tp.phone("appauth@example.com");
  await p.connect();
  const sid = `appauth@example.com-${PKG}`;
  const cases: [object | string, string][] = [
    [{ type: "tpa_connection_init", sessionId: sid, packageName: PKG, apiKey: "wrong" }, "INVALID_API_KEY"],
    [{ type: "tpa_connection_init", sessionId: sid, packageName: PKG, apiKey: KEY }, "APP_NOT_STARTED"],
    [{ type: "tpa_connection_init", sessionId: `nobody@example.com-${PKG}`, packageName: PKG, apiKey: KEY }, "SESSION_NOT_FOUND"],
    [{ type: "subscription_update", subscriptions: [] }, "MALFORMED_MESSAGE"],
    ["{{{", "MALFORMED_MESSAGE"],
    [{ type: "tpa_connection_init", sessionId: "no-suffix", packageName: PKG, apiKey: KEY }, "MALFORMED_MESSAGE"],
  ];
  for (const [frame, code] of cases) {
    const s = await appSocket();
    s.ws.send(typeof frame === "string" ? frame : JSON.stringify(frame));
    const err = await s.next();
    assert.equal(err.type, "tpa_connection_error");
    assert.equal(err.code, code, JSON.stringify(frame));
    assert.equal((await s.closed).code, 1008);
  }
  assert.equal(p.connected, true);
});

test("app-ws: a running app's junk frames are counted, not fatal; binary frames from apps are dropped", async () => {
  const user = "appjunk@example.com";
  const p = tp.phone(user);
  await p.connect();
  assert.equal((await p.startApp(PKG)).status, 200);
  const s = app.sessions.get(`${user}-${PKG}`)!;
  const before = await drops("app", "unsupported_type");
  s.ws.send(JSON.stringify({ type: "rtmp_stream_request" }));
  s.ws.send(Buffer.from([1, 2, 3]));
  s.ws.send(JSON.stringify({ type: "display_event", packageName: PKG, view: "main", layout: "nope" }));
  await eventually(async () => (await drops("app", "unsupported_type")) === before + 1, 3000);
  assert.ok((await drops("app", "binary_unsupported")) >= 1);
  assert.ok((await drops("app", "invalid_field")) >= 1);
  assert.equal(s.ws.readyState, WebSocket.OPEN);
});

test("admin session view requires the admin token and shows the user's session", async () => {
  const p = tp.phone("admin-view@example.com");
  await p.connect();
  assert.equal((await fetch(`${tp.httpUrl}/admin/sessions`)).status, 401);
  assert.equal((await fetch(`${tp.httpUrl}/admin/sessions`, { headers: { authorization: "Bearer wrong" } })).status, 401);
  const r = await fetch(`${tp.httpUrl}/admin/sessions/admin-view@example.com`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  assert.equal(r.status, 200);
  const view = await r.json();
  assert.equal(view.userId, "admin-view@example.com");
  assert.equal(view.phoneConnected, true);
  assert.ok("audio" in view && "transcription" in view && "subscriptions" in view);
  const text = await (await fetch(`${tp.httpUrl}/metrics`)).text();
  assert.ok(!text.includes(TEST_SECRET) && !text.includes(KEY) && !text.includes(ADMIN_TOKEN), "no secrets in metrics");
});
