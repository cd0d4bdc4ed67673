/**
 * The routing gateway with three pods in one process (in-memory registry): route answers and
 * tickets, redirects for WebSocket and REST clients, the admin API, ticket refusals at the pod,
 * wrong-pod traffic on every channel (C6, C20, C26), and a pod letting go of a user it lost (C19).
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import dgram from "node:dgram";
import WebSocket from "ws";
import { AppSim, PhoneSim, gatewayResolver, route } from "@mentra-cluster/phone-sim";
import { encodeAudioPacket, fnv1a32, mintUserToken, signRouteTicket } from "@mentra-cluster/protocol";
import { startLocalCluster, type LocalCluster } from "@mentra-cluster/cli";
import { hashApiKey } from "@mentra-cluster/directory";
import { eventually, sleep } from "./helpers/pod.ts";

const SECRET = "gw-secret";
const TICKET_KEY = "gw-ticket-key";
const ADMIN = "gw-admin";
const PKG = "com.test.gateway";
const KEY = "gw-app-key";
let cluster: LocalCluster;
let app: AppSim;
const phones: PhoneSim[] = [];

before(async () => {
  app = await new AppSim({ packageName: PKG, apiKey: KEY }).start();
  cluster = await startLocalCluster({
    pods: 3,
    gatewayPort: 0,
    jwtSecret: SECRET,
    ticketKey: TICKET_KEY,
    adminToken: ADMIN,
    logLevel: "silent",
    heartbeatMs: 200,
    seed: { apps: [{ packageName: PKG, name: PKG, publicUrl: app.publicUrl, hashedApiKey: hashApiKey(KEY) }] },
  });
});
after(async () => {
  await Promise.all(phones.map((p) => p.dispose()));
  await cluster.stop();
  await app.stop();
});

const token = (u: string) => mintUserToken(u, SECRET);
const pod = (id: string) => cluster.pods.find((p) => p.config.podId === id)!;
const adminFetch = (path: string, method = "GET", body?: unknown) =>
  fetch(`${cluster.gatewayUrl}${path}`, { method, headers: { authorization: `Bearer ${ADMIN}`, ...(body ? { "content-type": "application/json" } : {}) }, body: body ? JSON.stringify(body) : undefined });

function phoneVia(user: string): PhoneSim {
  const t = token(user);
  const p = new PhoneSim({ wsUrl: "ws://unused", restBase: "http://unused", token: t, userId: user, resolveEndpoint: gatewayResolver(cluster.gatewayUrl, t) });
  phones.push(p);
  return p;
}

test("route: the owner pod's own endpoints, a ticket bound to user, pod and epoch; the same answer every time", async () => {
  const r1 = await route(cluster.gatewayUrl, token("Route@Example.com"));
  const r2 = await route(cluster.gatewayUrl, token("route@example.com"));
  assert.equal(r1.podId, r2.podId);
  assert.equal(r1.epoch, r2.epoch);
  const owner = pod(r1.podId);
  assert.equal(r1.udpPort, owner.addresses.udpPort);
  assert.equal(r1.restBaseUrl, `${cluster.gatewayUrl}/p/${r1.podId}`);
  assert.match(r1.glassesWsUrl, new RegExp(`^ws://127\\.0\\.0\\.1:\\d+/p/${r1.podId}/glasses-ws\\?ticket=`));
  assert.ok(r1.ticketExpiresAt > Date.now());
  const bad = await fetch(`${cluster.gatewayUrl}/v1/route`, { method: "POST", headers: { authorization: "Bearer nope" } });
  assert.equal(bad.status, 401);
  // The token is checked before the body is read: a bad token with a broken body is still a 401.
  const badBoth = await fetch(`${cluster.gatewayUrl}/v1/route`, { method: "POST", headers: { authorization: "Bearer nope", "content-type": "application/json" }, body: "{not json" });
  assert.equal(badBoth.status, 401);
  assert.equal((await badBoth.json()).error, "invalid_token");
  const restBoth = await fetch(`${cluster.gatewayUrl}/api/client/user/settings`, { method: "POST", headers: { "content-type": "application/json" }, body: "{" });
  assert.equal(restBoth.status, 401);
});

test("a phone routed through the gateway lands on its owner for WebSocket, REST, UDP and the app; reconnects stay", async () => {
  const user = "flow@example.com";
  const p = phoneVia(user);
  const ack = await p.connect();
  const owner = pod(ack.podId!);
  assert.ok(owner.sessions.get(user));
  await p.registerUdp();
  const started = await p.startApp(PKG); // REST through the gateway's same-origin /p/<podId>/ path
  assert.equal(started.status, 200, JSON.stringify(started.body));
  // C20: the webhook carried the owner's app-ws URL, in both fields.
  const hook = app.webhooks.find((w) => w.type === "session_request" && w.userId === user)!;
  assert.equal((hook as { mentraOSWebsocketUrl: string }).mentraOSWebsocketUrl, `ws://${new URL(cluster.gatewayUrl).host}/p/${ack.podId}/app-ws`);
  assert.equal((hook as { augmentOSWebsocketUrl: string }).augmentOSWebsocketUrl, (hook as { mentraOSWebsocketUrl: string }).mentraOSWebsocketUrl);
  assert.equal(owner.sessions.get(user)!.apps.get(PKG)!.state, "RUNNING");
  p.send({ type: "local_transcription", text: "hello cluster", isFinal: true });
  await eventually(() => app.sessions.get(`${user}-${PKG}`)?.transcripts.some((t) => t.text === "hello cluster"), 3000, "transcript at the app");
  const before = owner.sessions.get(user)!.audioBytesIn;
  p.sendUdpAudio(Buffer.alloc(640, 1));
  await eventually(() => owner.sessions.get(user)!.audioBytesIn === before + 640, 3000);
  for (const other of cluster.pods.filter((x) => x !== owner)) assert.equal(other.sessions.get(user), undefined);
  // Reconnect: same pod, same session.
  const session = owner.sessions.get(user);
  await p.close();
  const p2 = phoneVia(user);
  const ack2 = await p2.connect();
  assert.equal(ack2.podId, ack.podId);
  assert.equal(owner.sessions.get(user), session);
});

test("GET /glasses-ws and REST paths on the gateway answer 307 to the owner", async () => {
  const user = "redirect@example.com";
  const r = await route(cluster.gatewayUrl, token(user));
  const ws = new WebSocket(`${cluster.gatewayUrl.replace("http", "ws")}/glasses-ws?token=${token(user)}`, { followRedirects: true });
  const ack = await new Promise<{ type: string; podId: string }>((resolve, reject) => {
    ws.on("message", (d) => {
      const m = JSON.parse(d.toString());
      if (m.type === "connection_ack") resolve(m);
    });
    ws.on("error", reject);
  });
  assert.equal(ack.podId, r.podId);
  ws.terminate();
  const rest = await fetch(`${cluster.gatewayUrl}/api/client/apps`, { headers: { authorization: `Bearer ${token(user)}` }, redirect: "manual" });
  assert.equal(rest.status, 307);
  assert.equal(rest.headers.get("location"), `${cluster.gatewayUrl}/p/${r.podId}/api/client/apps`);
  // Followed (same origin keeps Authorization): the owner answers.
  const followed = await fetch(`${cluster.gatewayUrl}/api/client/apps`, { headers: { authorization: `Bearer ${token(user)}` } });
  assert.notEqual(followed.status, 401);
});

async function refusal(url: string): Promise<{ code: number; reason: string; message: { code?: string; reason?: string } }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    let message: { code?: string; reason?: string } = {};
    ws.on("message", (d) => (message = JSON.parse(d.toString())));
    ws.on("close", (code, reason) => resolve({ code, reason: reason.toString(), message }));
    ws.on("error", reject);
  });
}

test("forged, expired, other-user, wrong-pod and stale tickets are refused with 4001 and counted", async () => {
  const user = "ticket@example.com";
  const r = await route(cluster.gatewayUrl, token(user));
  const base = r.glassesWsUrl.split("?")[0];
  const other = cluster.podIds.find((id) => id !== r.podId)!;
  const wrongBase = base.replace(`/p/${r.podId}/`, `/p/${other}/`);
  const t = token(user);
  const sign = (o: Partial<{ userId: string; podId: string; epoch: number; expiresAt: number }>, key = TICKET_KEY) =>
    encodeURIComponent(signRouteTicket({ userId: user, podId: r.podId, epoch: r.epoch, expiresAt: Date.now() + 60_000, ...o }, key));
  const cases: [string, string][] = [
    [`${base}?token=${t}&ticket=${sign({}, "forged-key")}`, "bad_signature"],
    [`${base}?token=${t}&ticket=${sign({ expiresAt: Date.now() - 1 })}`, "expired"],
    [`${base}?token=${t}&ticket=${sign({ userId: "someone-else@example.com" })}`, "wrong_user"],
    [`${wrongBase}?token=${t}&ticket=${sign({})}`, "wrong_pod"],
    [`${wrongBase}?token=${t}`, "not_owner"],
  ];
  const before = cluster.pods.reduce((n, p) => n + (p.metrics.health() as unknown as { sessions: { userSessions: number } }).sessions.userSessions, 0);
  for (const [url, reason] of cases) {
    const res = await refusal(url);
    assert.equal(res.code, 4001, reason);
    assert.equal(res.message.reason, reason);
  }
  // A stale epoch: the user was moved, then the old ticket replayed at the old pod.
  const moved = await cluster.gateway!.deps.assignments.claim(user, other, { userId: user, podId: r.podId, epoch: r.epoch });
  assert.ok(moved.won);
  const stale = await refusal(`${base}?token=${t}&ticket=${encodeURIComponent(r.ticket)}`);
  assert.equal(stale.code, 4001);
  assert.equal(stale.message.reason, "not_owner");
  const after = cluster.pods.reduce((n, p) => n + (p.metrics.health() as unknown as { sessions: { userSessions: number } }).sessions.userSessions, 0);
  assert.equal(after, before, "no session was created for a refused phone");
  const text = await (await fetch(`${cluster.gatewayUrl}/p/${other}/metrics`)).text();
  assert.match(text, /mentra_wrong_pod_arrivals_total\{[^}]*traffic="phone_ws"[^}]*\} [1-9]/);
});

test("admin API: token required; list pods, look up a user; cordon keeps existing users and places new ones elsewhere", async () => {
  assert.equal((await fetch(`${cluster.gatewayUrl}/admin/pods`)).status, 401);
  assert.equal((await fetch(`${cluster.gatewayUrl}/admin/pods`, { headers: { authorization: "Bearer wrong" } })).status, 401);
  const pods = await (await adminFetch("/admin/pods")).json();
  assert.equal(pods.pods.length, 3);
  const user = "cordon@example.com";
  const r = await route(cluster.gatewayUrl, token(user));
  const lookup = await (await adminFetch(`/admin/users/${user}`)).json();
  assert.equal(lookup.assignment.podId, r.podId);
  assert.equal((await adminFetch("/admin/pods/nope/cordon", "POST")).status, 404);
  assert.equal((await adminFetch(`/admin/pods/${r.podId}/cordon`, "POST")).status, 200);
  assert.equal((await route(cluster.gatewayUrl, token(user))).podId, r.podId, "existing user stays");
  for (let i = 0; i < 20; i++) assert.notEqual((await route(cluster.gatewayUrl, token(`new${i}@example.com`))).podId, r.podId);
  await adminFetch(`/admin/pods/${r.podId}/uncordon`, "POST");
});

test("no pod admits: 503 with Retry-After; a drain request moves a user's next route elsewhere", async () => {
  for (const id of cluster.podIds) await adminFetch(`/admin/pods/${id}/cordon`, "POST");
  const res = await fetch(`${cluster.gatewayUrl}/v1/route`, { method: "POST", headers: { authorization: `Bearer ${token("nobody-fits@example.com")}` } });
  assert.equal(res.status, 503);
  assert.ok(Number(res.headers.get("retry-after")) > 0);
  assert.equal((await res.json()).error, "no_capacity");
  for (const id of cluster.podIds) await adminFetch(`/admin/pods/${id}/uncordon`, "POST");
  const user = "drained@example.com";
  const r = await route(cluster.gatewayUrl, token(user));
  assert.equal((await adminFetch(`/admin/pods/${r.podId}/drain`, "POST", { deadlineMs: 0 })).status, 400);
  for (const body of [[], null, 5, "drain"]) {
    const res = await fetch(`${cluster.gatewayUrl}/admin/pods/${r.podId}/drain`, { method: "POST", headers: { authorization: `Bearer ${ADMIN}`, "content-type": "application/json" }, body: JSON.stringify(body) });
    assert.equal(res.status, 400, `body ${JSON.stringify(body)}`);
    assert.equal((await res.json()).error, "invalid_request");
  }
  assert.equal((await adminFetch(`/admin/pods/${r.podId}/drain`, "POST", { deadlineMs: 60_000 })).status, 200);
  const r2 = await route(cluster.gatewayUrl, token(user));
  assert.notEqual(r2.podId, r.podId);
  assert.ok(r2.epoch > r.epoch);
  await adminFetch(`/admin/pods/${r.podId}/undrain`, "POST");
});

test("C6: REST at a pod that does not hold the user redirects to the owner; never 401", async () => {
  const user = "c6@example.com";
  const p = phoneVia(user);
  const ack = await p.connect();
  const other = cluster.podIds.find((id) => id !== ack.podId)!;
  const res = await fetch(`${cluster.gatewayUrl}/p/${other}/api/client/apps`, { headers: { authorization: `Bearer ${token(user)}` }, redirect: "manual" });
  assert.equal(res.status, 307);
  assert.equal(res.headers.get("location"), `${cluster.gatewayUrl}/p/${ack.podId}/api/client/apps`);
});

test("C26: UDP audio sent to a pod that does not own the user is dropped and counted there", async () => {
  const user = "c26@example.com";
  const p = phoneVia(user);
  const ack = await p.connect();
  await p.registerUdp();
  const wrong = cluster.pods.find((x) => x.config.podId !== ack.podId)!;
  const before = wrong.udp.drops.unknown_hash;
  const sock = dgram.createSocket("udp4");
  await new Promise<void>((r) => sock.send(encodeAudioPacket(fnv1a32(user), 1, Buffer.alloc(640)), wrong.addresses.udpPort, "127.0.0.1", () => r()));
  sock.close();
  await eventually(() => wrong.udp.drops.unknown_hash === before + 1, 3000);
  assert.equal(wrong.sessions.get(user), undefined);
});

test("C19: a pod that loses a user lets go: phone back to the gateway, nothing that ends the app, intent kept", async () => {
  const user = "c19@example.com";
  const p = phoneVia(user);
  const ack = await p.connect();
  assert.equal((await p.startApp(PKG)).status, 200);
  const appSession = app.sessions.get(`${user}-${PKG}`)!;
  const oldPod = pod(ack.podId!);
  const other = cluster.podIds.find((id) => id !== ack.podId)!;
  const cur = await cluster.gateway!.deps.assignments.get(user);
  await cluster.gateway!.deps.assignments.claim(user, other, cur);
  await eventually(() => p.closes.some((c) => c.code === 4001), 3000, "phone told to reconnect via the gateway");
  await eventually(() => oldPod.sessions.get(user) === undefined, 3000, "old pod let go");
  await sleep(200);
  assert.equal(app.webhooks.filter((w) => w.type === "stop_request").length, 0, "no stop webhook");
  assert.ok(!appSession.other.some((m) => m.type === "app_stopped"), "no app_stopped");
  assert.equal(appSession.closes.length, 0, "app socket not closed while the hand-off is pending");
  const userRec = await oldPod.ctx.directory.getOrCreateUser(user);
  assert.deepEqual(userRec.runningApps, [PKG], "running-app intent untouched");
  // The phone comes back through the gateway to the new owner, which restarts the app by webhook.
  const p2 = phoneVia(user);
  const ack2 = await p2.connect();
  assert.equal(ack2.podId, other);
  await eventually(() => pod(other).sessions.get(user)?.apps.get(PKG)?.state === "RUNNING", 5000, "app running on the new pod");
  await eventually(() => appSession.closes.length === 1, 3000, "SDK-style hand-off closed the old socket");
  p2.send({ type: "local_transcription", text: "after the move", isFinal: true });
  await eventually(() => app.sessions.get(`${user}-${PKG}`)?.transcripts.some((t) => t.text === "after the move"), 3000);
});

test("percent-encoded admin paths are still authenticated, on the gateway and on a pod", async () => {
  assert.equal((await fetch(`${cluster.gatewayUrl}/%61dmin/pods`)).status, 401);
  assert.equal((await fetch(`${cluster.gatewayUrl}/%61dmin/pods/pod-0/cordon`, { method: "POST" })).status, 401);
  assert.equal((await fetch(`${cluster.gatewayUrl}/p/pod-0/%61dmin/sessions`)).status, 401);
  assert.equal((await fetch(`${cluster.gatewayUrl}/p/pod-0/admin/sessions`)).status, 401);
});

test("REST with a JSON body through the /p/<podId>/ proxy reaches the pod (and a bad body gets the pod's 400)", async () => {
  const user = "body@example.com";
  const p = phoneVia(user);
  const ack = await p.connect();
  const url = `${cluster.gatewayUrl}/p/${ack.podId}/api/client/device/state`;
  const ok = await fetch(url, { method: "POST", headers: { authorization: `Bearer ${token(user)}`, "content-type": "application/json" }, body: JSON.stringify({ modelName: "Even Realities G1" }), signal: AbortSignal.timeout(5000) });
  assert.equal(ok.status, 200);
  assert.equal((await ok.json()).appliedState.modelName, "Even Realities G1");
  const bad = await fetch(url, { method: "POST", headers: { authorization: `Bearer ${token(user)}`, "content-type": "application/json" }, body: "{oops", signal: AbortSignal.timeout(5000) });
  assert.equal(bad.status, 400);
  const unknown = await fetch(`${cluster.gatewayUrl}/p/no-such-pod/livez`, { signal: AbortSignal.timeout(5000) });
  assert.equal(unknown.status, 404);
});
