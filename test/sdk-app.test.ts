/**
 * Self-test of test/helpers/sdkApp.ts + apps/loadtest-app (real @mentra/sdk 2.1.29) against a tiny
 * fake cloud (node:http + ws) defined here. No pod involved.
 */
import assert from "node:assert/strict";
import http from "node:http";
import net from "node:net";
import { after, test } from "node:test";
import { WebSocketServer, type WebSocket } from "ws";
import { hashApiKey, postJson, startSdkApp, type SdkAppHandle } from "./helpers/sdkApp.ts";

// ---------------------------------------------------------------- fake cloud

interface AppConn {
  ws: WebSocket;
  /** parsed JSON frames received from the app */
  msgs: any[];
  /** resolves with the close code/reason seen by the server */
  closed: Promise<{ code: number; reason: string }>;
  waitFor(pred: (m: any) => boolean, timeoutMs?: number): Promise<any>;
  send(obj: unknown): void;
}

interface FakeCloud {
  port: number;
  wsUrl: string;
  conns: AppConn[];
  nextConn(timeoutMs?: number): Promise<AppConn>;
  close(): Promise<void>;
}

async function startFakeCloud(expect: { packageName: string; apiKey: string }): Promise<FakeCloud> {
  const server = http.createServer((req, res) => {
    res.writeHead(404, { connection: "close" }).end();
  });
  // The SDK's permission check hits https://127.0.0.1:<port>/api/public/permissions/... → TLS garbage on
  // this plain server; http answers 400 and closes. Harmless.
  server.on("clientError", (_err, socket) => socket.destroy());
  const wss = new WebSocketServer({ server, path: "/app-ws" });
  const conns: AppConn[] = [];
  const connWaiters: Array<(c: AppConn) => void> = [];

  wss.on("connection", (ws) => {
    const msgs: any[] = [];
    const msgWaiters = new Set<() => void>();
    const closed = new Promise<{ code: number; reason: string }>((resolve) => {
      ws.on("close", (code, reason) => resolve({ code, reason: reason.toString() }));
    });
    const conn: AppConn = {
      ws,
      msgs,
      closed,
      send: (obj) => ws.send(JSON.stringify(obj)),
      waitFor: (pred, timeoutMs = 5_000) =>
        new Promise((resolve, reject) => {
          let i = 0;
          const check = () => {
            for (; i < msgs.length; i++) {
              if (pred(msgs[i])) {
                clearTimeout(timer);
                msgWaiters.delete(check);
                resolve(msgs[i]);
                return;
              }
            }
          };
          const timer = setTimeout(() => {
            msgWaiters.delete(check);
            reject(new Error(`fake cloud: timeout waiting for app message; got ${JSON.stringify(msgs.map((m) => m.type))}`));
          }, timeoutMs);
          msgWaiters.add(check);
          check();
        }),
    };
    ws.on("message", (data, isBinary) => {
      if (isBinary) return;
      const m = JSON.parse(data.toString());
      msgs.push(m);
      if (m.type === "tpa_connection_init") {
        if (m.packageName !== expect.packageName || hashApiKey(m.apiKey) !== hashApiKey(expect.apiKey)) {
          conn.send({ type: "tpa_connection_error", code: "INVALID_API_KEY", message: "bad key", timestamp: new Date().toISOString() });
          ws.close(1008, "Invalid API key");
          return;
        }
        conn.send({
          type: "tpa_connection_ack",
          sessionId: m.sessionId,
          settings: [],
          mentraosSettings: {},
          capabilities: null,
          timestamp: new Date().toISOString(),
        });
        conn.send({ type: "device_state_update", state: {}, fullSnapshot: true, timestamp: new Date().toISOString() });
      }
      for (const w of [...msgWaiters]) w();
    });
    conns.push(conn);
    const w = connWaiters.shift();
    if (w) w(conn);
  });

  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as net.AddressInfo).port;
  let seen = 0;
  return {
    port,
    wsUrl: `ws://127.0.0.1:${port}/app-ws`,
    conns,
    nextConn: (timeoutMs = 5_000) => {
      if (seen < conns.length) return Promise.resolve(conns[seen++]!);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("fake cloud: no app connection")), timeoutMs);
        connWaiters.push((c) => {
          clearTimeout(timer);
          seen++;
          resolve(c);
        });
      });
    },
    close: async () => {
      for (const c of wss.clients) c.terminate();
      await new Promise<void>((r) => wss.close(() => r()));
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

// ---------------------------------------------------------------- helpers

const now = () => new Date().toISOString();

function sessionRequest(cloud: FakeCloud, userId: string, sessionId: string) {
  return {
    type: "session_request",
    sessionId,
    userId,
    timestamp: now(),
    mentraOSWebsocketUrl: cloud.wsUrl,
    augmentOSWebsocketUrl: cloud.wsUrl,
  };
}

function transcription(sessionId: string, text: string, isFinal = true) {
  const t = Date.now();
  return {
    type: "data_stream",
    sessionId,
    streamType: "transcription:en-US",
    data: { type: "transcription", text, isFinal, startTime: t - 500, endTime: t, transcribeLanguage: "en-US" },
    timestamp: now(),
  };
}

/** true when nothing accepts TCP connections on 127.0.0.1:port */
function portClosed(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    s.once("connect", () => {
      s.destroy();
      resolve(false);
    });
    s.once("error", () => resolve(true));
  });
}

function processGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch {
    return true;
  }
}

/** Start app + cloud, POST the webhook (not awaited before the WS handshake), return everything. */
async function connectSession(
  app: SdkAppHandle,
  cloud: FakeCloud,
  userId: string,
  sessionId = `${userId}-${app.packageName}`,
  expectStreams: string[] = ["transcription:en-US"],
) {
  const tWebhook = Date.now();
  const webhook = postJson(`${app.publicUrl}/webhook`, sessionRequest(cloud, userId, sessionId));
  const conn = await cloud.nextConn();
  const init = await conn.waitFor((m) => m.type === "tpa_connection_init");
  assert.equal(init.sessionId, sessionId);
  assert.equal(init.packageName, app.packageName);
  assert.equal(hashApiKey(init.apiKey), hashApiKey(app.apiKey));
  const sub = await conn.waitFor(
    (m) => m.type === "subscription_update" && expectStreams.every((s) => m.subscriptions?.includes(s)),
  );
  assert.equal(sub.packageName, app.packageName);
  const res = await webhook;
  const webhookMs = Date.now() - tWebhook;
  assert.equal(res.status, 200, res.text);
  assert.deepEqual(res.body, { status: "success" });
  const ev = await app.waitForEvent((e) => e.event === "session" && e.sessionId === sessionId, 5_000);
  assert.equal(ev.userId, userId);
  return { conn, webhookMs };
}

const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
});

// ---------------------------------------------------------------- tests

test("real SDK app: webhook → init/ack → transcription → text_wall → app_stopped → stop", async () => {
  const packageName = "com.test.sdkapp.echo";
  const apiKey = "self-test-key-123";
  const app = await startSdkApp({ packageName, apiKey, env: { ECHO_PREFIX: "echo: " } });
  cleanups.push(() => app.kill());
  const cloud = await startFakeCloud({ packageName, apiKey });
  cleanups.push(() => cloud.close());
  assert.equal(app.publicUrl, `http://127.0.0.1:${app.port}`);
  const listening = await app.waitForEvent("listening", 5_000);
  assert.equal(listening.port, app.port);
  assert.deepEqual(await app.health(), { status: "healthy", app: packageName, activeSessions: 0 });

  const userId = "alice@example.com";
  const sessionId = `${userId}-${packageName}`;
  const { conn, webhookMs } = await connectSession(app, cloud, userId);
  // The SDK sends [] right after the ack, then the real list.
  const subs = conn.msgs.filter((m) => m.type === "subscription_update").map((m) => m.subscriptions);
  assert.deepEqual(subs[0], []);
  assert.equal((await app.health()).activeSessions, 1);

  const tData = Date.now();
  conn.send(transcription(sessionId, "hello world"));
  const disp = await conn.waitFor((m) => m.type === "display_event");
  const displayMs = Date.now() - tData;
  assert.equal(disp.packageName, packageName);
  assert.equal(disp.view, "main");
  assert.deepEqual(disp.layout, { layoutType: "text_wall", text: "echo: hello world" });
  const tr = await app.waitForEvent("transcription");
  assert.deepEqual(
    { sessionId: tr.sessionId, userId: tr.userId, text: tr.text, isFinal: tr.isFinal },
    { sessionId, userId, text: "hello world", isFinal: true },
  );

  // bare "transcription" stream type is NOT delivered by 2.1.29 (exact match on handler key)
  conn.send({ ...transcription(sessionId, "ignored"), streamType: "transcription" });

  conn.send({ type: "app_stopped", reason: "user_disabled", timestamp: now() });
  conn.ws.close(1000, "User session ended");
  const stop = await app.waitForEvent("stop", 5_000);
  assert.equal(stop.sessionId, sessionId);
  assert.equal(stop.userId, userId);
  assert.match(stop.reason, /User session ended/);
  await new Promise((r) => setTimeout(r, 200));
  assert.equal((await app.health()).activeSessions, 0);
  assert.equal(app.count("transcription"), 1, "bare 'transcription' streamType must not be delivered");
  assert.equal(app.count("error"), 0, JSON.stringify(app.events.filter((e) => e.event === "error")));

  await app.kill();
  assert.ok(app.exitInfo(), "child exited");
  assert.ok(processGone(app.pid), "no child process left");
  assert.ok(await portClosed(app.port), "app port closed");
  await cloud.close();
  assert.ok(await portClosed(cloud.port), "fake cloud port closed");
  console.log(
    `[sdk-app] startup ${app.startupMs} ms (SDK start() ${listening.startMs} ms), webhook ${webhookMs} ms, ` +
      `display ${displayMs} ms, stop events ${app.count("stop")} (${app.events
        .filter((e) => e.event === "stop")
        .map((e) => e.reason)
        .join(" | ")})`,
  );
});

test("real SDK app: audio byte counting + stop_request webhook", async () => {
  const packageName = "com.test.sdkapp.audio";
  const apiKey = "audio-key";
  const app = await startSdkApp({ packageName, apiKey, features: ["transcription", "display", "audio"] });
  cleanups.push(() => app.kill());
  const cloud = await startFakeCloud({ packageName, apiKey });
  cleanups.push(() => cloud.close());

  const userId = "bob@example.com";
  const sessionId = `${userId}-${packageName}`;
  const { conn } = await connectSession(app, cloud, userId, sessionId, ["transcription:en-US", "audio_chunk"]);

  const frame = Buffer.alloc(640); // 20 ms of 16 kHz s16le mono
  for (let i = 0; i < 25; i++) conn.ws.send(frame, { binary: true });
  const a = await app.waitForEvent((e) => e.event === "audio" && e.bytes === 25 * 640, 5_000);
  assert.equal(a.sessionId, sessionId);
  const audioEvents = app.events.filter((e) => e.event === "audio");
  assert.ok(audioEvents.length <= 2, `audio events throttled (got ${audioEvents.length})`);

  const r = await postJson(`${app.publicUrl}/webhook`, {
    type: "stop_request",
    sessionId,
    userId,
    reason: "user_disabled",
    timestamp: now(),
  });
  assert.equal(r.status, 200);
  assert.deepEqual(r.body, { status: "success" });
  const stop = await app.waitForEvent("stop");
  assert.equal(stop.reason, "user_disabled");
  const closed = await conn.closed;
  assert.equal(closed.code, 1005, "SDK closes from its side without a status code");
  assert.equal((await app.health()).activeSessions, 0);

  await app.kill();
  assert.ok(processGone(app.pid));
  assert.ok(await portClosed(app.port));
  await cloud.close();
});

test("real SDK app: CLEAR_STATE_ON_STOP — a stale stop for an old session id breaks the new one", async () => {
  const packageName = "com.test.sdkapp.state";
  const apiKey = "state-key";
  const app = await startSdkApp({ packageName, apiKey, clearStateOnStop: true });
  cleanups.push(() => app.kill());
  const cloud = await startFakeCloud({ packageName, apiKey });
  cleanups.push(() => cloud.close());

  const userId = "carol@example.com";
  const oldId = `${userId}-${packageName}-podA`;
  const newId = `${userId}-${packageName}-podB`;
  const { conn: oldConn } = await connectSession(app, cloud, userId, oldId);
  const { conn: newConn } = await connectSession(app, cloud, userId, newId);

  newConn.send(transcription(newId, "before"));
  await newConn.waitFor((m) => m.type === "display_event" && m.layout?.text === "before");

  // Stale pod ends the OLD session cleanly → app's onStop(oldId, userId) wipes the user's state.
  oldConn.ws.close(1000, "User session ended");
  const stop = await app.waitForEvent((e) => e.event === "stop" && e.sessionId === oldId);
  assert.equal(stop.clearedState, true);
  assert.equal(stop.clearedOtherSession, true);

  newConn.send(transcription(newId, "after"));
  const missing = await app.waitForEvent("state_missing");
  assert.equal(missing.sessionId, newId);
  await new Promise((r) => setTimeout(r, 200));
  assert.ok(!newConn.msgs.some((m) => m.type === "display_event" && m.layout?.text === "after"));

  await app.kill();
  assert.ok(processGone(app.pid));
  assert.ok(await portClosed(app.port));
  await cloud.close();
});
