/**
 * PhoneSim against a tiny fake pod built here: ws WebSocketServer for /glasses-ws (ack on open,
 * pongs, udp_register), node:dgram for UDP (udp_ping_ack on PING), and an echoing REST handler.
 */
import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import { createSocket, type Socket as UdpSocket } from "node:dgram";
import { createServer as createNetServer, type AddressInfo } from "node:net";
import { once } from "node:events";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket, { WebSocketServer } from "ws";
import {
  CloseCode,
  UDP_ENCRYPTION_ALGORITHM,
  decodeDatagram,
  decryptBody,
  extractToken,
  fnv1a32,
  generateUdpKey,
  nowIso,
  readWav,
  type ConnectionAck,
  type DisplayEvent,
  type PhoneToCloudMessage,
} from "@mentra-cluster/protocol";
import { PhoneSim, UpgradeRefusedError, backoffDelay, type PhoneSimOptions } from "../src/index.ts";

const USER = "tester@example.com";
const TOKEN = "good-token";
const WAV = resolve(dirname(fileURLToPath(import.meta.url)), "../../../../shared/data/audio/short-test-16khz.wav");

let unhandledRejections = 0;
process.on("unhandledRejection", () => unhandledRejections++);

// ---------- fake pod ----------

interface PodConn {
  ws: WebSocket;
  url: URL;
  headers: IncomingHttpHeaders;
  messages: PhoneToCloudMessage[];
  binary: Buffer[];
  key: Buffer | null;
  closed: { code: number; reason: string } | null;
}

interface Datagram {
  msg: Buffer;
  at: number;
}

class FakePod {
  readonly conns: PodConn[] = [];
  readonly datagrams: Datagram[] = [];
  readonly upgradeAttempts: number[] = [];
  readonly restRequests: { method: string; url: string; authorization?: string; body: unknown }[] = [];
  /** Set to refuse every upgrade with this status and JSON body. */
  refusal: { status: number; body: unknown } | null = null;
  ackUdpPings = true;
  private readonly registered = new Map<number, PodConn>();
  private readonly wss = new WebSocketServer({ noServer: true });

  private constructor(
    private readonly http: Server,
    private readonly udp: UdpSocket,
  ) {}

  static async start(): Promise<FakePod> {
    const http = createServer();
    const udp = createSocket("udp4");
    const pod = new FakePod(http, udp);
    http.on("request", (req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        const entry = { method: req.method ?? "", url: req.url ?? "", authorization: req.headers.authorization, body: text ? JSON.parse(text) : null };
        pod.restRequests.push(entry);
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify({ success: true, echo: entry }));
      });
    });
    http.on("upgrade", (req, socket, head) => pod.onUpgrade(req, socket, head));
    udp.on("message", (msg) => pod.onDatagram(msg));
    await new Promise<void>((r) => udp.bind(0, "127.0.0.1", () => r()));
    await new Promise<void>((r) => http.listen(0, "127.0.0.1", () => r()));
    return pod;
  }

  get port(): number {
    return (this.http.address() as AddressInfo).port;
  }
  get udpPort(): number {
    return this.udp.address().port;
  }
  get wsUrl(): string {
    return `ws://127.0.0.1:${this.port}/glasses-ws`;
  }
  get restBase(): string {
    return `http://127.0.0.1:${this.port}`;
  }
  get last(): PodConn {
    const c = this.conns.at(-1);
    assert.ok(c, "no phone connection at the fake pod");
    return c;
  }
  audioDatagrams(): Datagram[] {
    return this.datagrams.filter((d) => decodeDatagram(d.msg).kind === "audio");
  }
  pingDatagrams(): Datagram[] {
    return this.datagrams.filter((d) => decodeDatagram(d.msg).kind === "ping");
  }
  send(conn: PodConn, msg: object): void {
    conn.ws.send(JSON.stringify(msg));
  }

  private onUpgrade(req: import("node:http").IncomingMessage, socket: import("node:stream").Duplex, head: Buffer): void {
    this.upgradeAttempts.push(Date.now());
    const url = new URL(req.url ?? "/", "http://fake");
    const token = extractToken(req.headers.authorization, url.searchParams.get("token") ?? undefined);
    const refusal =
      this.refusal ?? (token === TOKEN ? null : { status: 401, body: { type: "connection_error", message: "Invalid core token", timestamp: nowIso() } });
    if (refusal) {
      const body = JSON.stringify(refusal.body);
      socket.end(
        `HTTP/1.1 ${refusal.status} Refused\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      );
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => this.onConnection(ws, url, req.headers));
  }

  private onConnection(ws: WebSocket, url: URL, headers: IncomingHttpHeaders): void {
    const key = url.searchParams.get("udpEncryption") === "true" ? generateUdpKey() : null;
    const conn: PodConn = { ws, url, headers, messages: [], binary: [], key, closed: null };
    this.conns.push(conn);
    ws.on("message", (data, isBinary) => {
      if (isBinary) return void conn.binary.push(Buffer.from(data as Buffer));
      const msg = JSON.parse(data.toString()) as PhoneToCloudMessage;
      conn.messages.push(msg);
      if (msg.type === "ping") ws.send(JSON.stringify({ type: "pong" }));
      if (msg.type === "udp_register") this.registered.set(msg.userIdHash, conn);
    });
    ws.on("close", (code, reason) => (conn.closed = { code, reason: reason.toString() }));
    const ack: ConnectionAck = {
      type: "connection_ack",
      sessionId: USER,
      timestamp: nowIso(),
      env: "test",
      udpHost: "127.0.0.1",
      udpPort: this.udpPort,
      ...(key ? { udpEncryption: { key: key.toString("base64"), algorithm: UDP_ENCRYPTION_ALGORITHM } } : {}),
    };
    ws.send(JSON.stringify(ack));
  }

  private onDatagram(msg: Buffer): void {
    this.datagrams.push({ msg, at: performance.now() });
    const d = decodeDatagram(msg);
    if (d.kind !== "ping" || !this.ackUdpPings) return;
    const conn = this.registered.get(d.userIdHash);
    if (conn && conn.ws.readyState === WebSocket.OPEN) this.send(conn, { type: "udp_ping_ack", timestamp: Date.now() });
  }

  async close(): Promise<void> {
    for (const c of this.wss.clients) c.terminate();
    this.wss.close();
    this.http.closeAllConnections();
    await new Promise<void>((r) => this.http.close(() => r()));
    await new Promise<void>((r) => this.udp.close(() => r()));
  }
}

// ---------- helpers ----------

async function setup(t: TestContext, overrides: Partial<PhoneSimOptions> = {}) {
  const pod = await FakePod.start();
  const sims: PhoneSim[] = [];
  const makeSim = (more: Partial<PhoneSimOptions> = {}) => {
    const sim = new PhoneSim({ wsUrl: pod.wsUrl, restBase: pod.restBase, token: TOKEN, userId: USER, ...overrides, ...more });
    sims.push(sim);
    return sim;
  };
  t.after(async () => {
    await Promise.all(sims.map((s) => s.dispose()));
    await pod.close();
  });
  return { pod, makeSim };
}

async function until(cond: () => boolean, timeoutMs = 2000, what = "condition", pollMs = 5): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(pollMs);
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** PCM whose bytes identify their position, so packet contents can be checked. */
function patternPcm(bytes: number): Buffer {
  const b = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i++) b[i] = (i * 7 + (i >> 8)) & 0xff;
  return b;
}

function resourceCounts(): Map<string, number> {
  const m = new Map<string, number>();
  for (const r of process.getActiveResourcesInfo()) m.set(r, (m.get(r) ?? 0) + 1);
  return m;
}

// ---------- connection ----------

test("connect: token in the query, ack resolves, glasses state follows", async (t) => {
  const { pod, makeSim } = await setup(t);
  const sim = makeSim();
  const acks: ConnectionAck[] = [];
  sim.on("ack", (a) => acks.push(a));
  const ack = await sim.connect();
  assert.equal(ack.type, "connection_ack");
  assert.equal(ack.udpPort, pod.udpPort);
  assert.equal(sim.connected, true);
  assert.equal(sim.ack, ack);
  assert.equal(acks.length, 1);
  assert.equal(sim.received[0]?.type, "connection_ack");
  assert.equal(pod.last.url.searchParams.get("token"), TOKEN);
  assert.equal(pod.last.url.searchParams.has("udpEncryption"), false);
  assert.equal(pod.last.headers.authorization, undefined);
  await until(() => pod.last.messages.length > 0, 1000, "glasses_connection_state");
  assert.deepEqual(pod.last.messages[0], { type: "glasses_connection_state", status: "CONNECTED", modelName: "Simulated Glasses" });
  assert.equal(sim.udpKey, null);
});

test("connect: token in the Authorization header; glassesModel null sends nothing", async (t) => {
  const { pod, makeSim } = await setup(t);
  const sim = makeSim({ tokenVia: "header", glassesModel: null });
  await sim.connect();
  assert.equal(pod.last.headers.authorization, `Bearer ${TOKEN}`);
  assert.equal(pod.last.url.searchParams.has("token"), false);
  await sleep(100);
  assert.deepEqual(pod.last.messages, []);
});

test("connect: a refused upgrade rejects with the HTTP status and JSON body", async (t) => {
  const { makeSim } = await setup(t);
  const sim = makeSim({ token: "bad", reconnect: { baseMs: 10 } });
  const err = await sim.connect().then(
    () => assert.fail("connect should reject"),
    (e: unknown) => e,
  );
  assert.ok(err instanceof UpgradeRefusedError);
  assert.equal(err.status, 401);
  assert.deepEqual((err.body as { type: string; message: string }).type, "connection_error");
  assert.equal((err.body as { message: string }).message, "Invalid core token");
  assert.equal(sim.connected, false);
  assert.deepEqual(sim.closes, []);
  await sleep(60);
  assert.equal(sim.reconnects, 0, "a failed first connect never starts the reconnect loop");
});

test("connect: an unreachable pod rejects with ECONNREFUSED", async (t) => {
  const { makeSim } = await setup(t);
  const probe = createNetServer();
  await new Promise<void>((r) => probe.listen(0, "127.0.0.1", () => r()));
  const port = (probe.address() as AddressInfo).port;
  await new Promise<void>((r) => probe.close(() => r()));
  const sim = makeSim({ wsUrl: `ws://127.0.0.1:${port}/glasses-ws` });
  await assert.rejects(sim.connect(1000), (e: NodeJS.ErrnoException) => e.code === "ECONNREFUSED");
});

test("connect: resolveEndpoint is asked where to connect", async (t) => {
  const { pod, makeSim } = await setup(t);
  let calls = 0;
  const sim = makeSim({
    wsUrl: "ws://127.0.0.1:1/unused",
    resolveEndpoint: async () => {
      calls++;
      return { wsUrl: `${pod.wsUrl}?ticket=abc`, restBase: pod.restBase };
    },
  });
  await sim.connect();
  assert.equal(calls, 1);
  assert.equal(pod.last.url.searchParams.get("ticket"), "abc");
  assert.equal(pod.last.url.searchParams.get("token"), TOKEN);
});

// ---------- messages ----------

test("pings are answered with pongs, counted, and not recorded", async (t) => {
  const { pod, makeSim } = await setup(t);
  const sim = makeSim({ glassesModel: null });
  await sim.connect();
  for (let i = 0; i < 3; i++) pod.send(pod.last, { type: "ping" });
  await until(() => pod.last.messages.filter((m) => m.type === "pong").length === 3, 1000, "3 pongs");
  assert.equal(sim.pingsReceived, 3);
  assert.ok(sim.received.every((m) => m.type !== "ping"));
});

test("a legacy phone (answerPings: false) ignores pings", async (t) => {
  const { pod, makeSim } = await setup(t);
  const sim = makeSim({ answerPings: false, glassesModel: null });
  await sim.connect();
  pod.send(pod.last, { type: "ping" });
  pod.send(pod.last, { type: "ping" });
  await until(() => sim.pingsReceived === 2, 1000, "2 pings");
  await sleep(100);
  assert.deepEqual(pod.last.messages, []);
});

test("displays are recorded and emitted; waitFor sees past and future messages and times out", async (t) => {
  const { pod, makeSim } = await setup(t);
  const sim = makeSim();
  const shown: DisplayEvent[] = [];
  sim.on("display", (d) => shown.push(d));
  await sim.connect();
  const display: DisplayEvent = {
    type: "display_event",
    packageName: "com.example.app",
    view: "main",
    layout: { layoutType: "text_wall", text: "hello" },
    sessionId: USER,
    timestamp: nowIso(),
  };
  pod.send(pod.last, display);
  const got = await sim.waitFor<DisplayEvent>((m) => m.type === "display_event");
  assert.deepEqual(got, display);
  assert.deepEqual(sim.displays, [display]);
  assert.deepEqual(shown, [display]);
  const past = await sim.waitFor<ConnectionAck>((m) => m.type === "connection_ack", 10);
  assert.equal(past.sessionId, USER);
  const future = sim.waitFor((m) => m.type === "app_state_change", 1000);
  pod.send(pod.last, { type: "app_state_change", sessionId: USER, timestamp: nowIso() });
  assert.equal((await future as { type: string }).type, "app_state_change");
  await assert.rejects(sim.waitFor((m) => m.type === "app_stopped", 30), /timed out/);
});

test("maxRecorded caps the message log, dropping the oldest", async (t) => {
  const { pod, makeSim } = await setup(t);
  const sim = makeSim({ maxRecorded: 5 });
  await sim.connect();
  for (let i = 0; i < 10; i++) pod.send(pod.last, { type: "app_state_change", sessionId: USER, timestamp: String(i) });
  await until(() => (sim.received.at(-1) as { timestamp?: string } | undefined)?.timestamp === "9", 1000, "10 messages");
  assert.equal(sim.received.length, 5);
  assert.equal((sim.received[0] as { timestamp: string }).timestamp, "5");
});

// ---------- UDP ----------

test("registerUdp: udp_register over WS, then 3 PINGs 200 ms apart; udp_ping_ack resolves", async (t) => {
  const { pod, makeSim } = await setup(t);
  const sim = makeSim({ glassesModel: null });
  await sim.connect();
  await sim.registerUdp();
  assert.equal(sim.udpRegistered, true);
  assert.deepEqual(pod.last.messages[0], { type: "udp_register", userIdHash: fnv1a32(USER) });
  await until(() => pod.pingDatagrams().length === 3, 1000, "3 PINGs");
  const pings = pod.pingDatagrams();
  for (const p of pings) {
    assert.equal(p.msg.length, 10);
    assert.equal(p.msg.readUInt32BE(0), fnv1a32(USER));
    assert.equal(p.msg.readUInt16BE(4), 0);
    assert.equal(p.msg.subarray(6).toString("ascii"), "PING");
  }
  const gap1 = pings[1]!.at - pings[0]!.at;
  const gap2 = pings[2]!.at - pings[1]!.at;
  assert.ok(gap1 > 150 && gap1 < 350, `PING gap ${gap1} ms`);
  assert.ok(gap2 > 150 && gap2 < 350, `PING gap ${gap2} ms`);
});

test("registerUdp rejects when no udp_ping_ack comes back", async (t) => {
  const { pod, makeSim } = await setup(t);
  pod.ackUdpPings = false;
  const sim = makeSim();
  await sim.connect();
  const started = Date.now();
  await assert.rejects(sim.registerUdp(300), /no udp_ping_ack within 300 ms/);
  assert.ok(Date.now() - started >= 290);
  assert.equal(sim.udpRegistered, false);
});

test("streamPcm over UDP: 1286-byte datagrams, hash, consecutive seq, paced at 40 ms", async (t) => {
  const { pod, makeSim } = await setup(t);
  const sim = makeSim();
  await sim.connect();
  await sim.registerUdp();
  const pcm = patternPcm(1280 * 10);
  const started = performance.now();
  const result = await sim.streamPcm(pcm).done;
  const elapsed = performance.now() - started;
  assert.deepEqual(result, { packets: 10, dropped: 0 });
  assert.ok(elapsed >= 390 && elapsed < 700, `10 packets of 40 ms took ${elapsed.toFixed(0)} ms`);
  await until(() => pod.audioDatagrams().length === 10, 1000, "10 datagrams");
  const audio = pod.audioDatagrams();
  audio.forEach((d, i) => {
    assert.equal(d.msg.length, 1286);
    assert.equal(d.msg.readUInt32BE(0), fnv1a32(USER));
    assert.equal(d.msg.readUInt16BE(4), i);
    assert.ok(d.msg.subarray(6).equals(pcm.subarray(i * 1280, (i + 1) * 1280)), `payload of packet ${i}`);
  });
  const span = audio[9]!.at - audio[0]!.at;
  assert.ok(span >= 9 * 40 - 10 && span < 9 * 40 + 150, `first-to-last span ${span.toFixed(0)} ms`);
  assert.equal(sim.udpSequence, 10);
  assert.equal(sim.stats.udpPacketsSent, 10);
  assert.deepEqual(pod.last.binary, []);
});

test("streamPcm without UDP falls back to WS binary frames (short last packet)", async (t) => {
  const { pod, makeSim } = await setup(t);
  const sim = makeSim();
  await sim.connect();
  const pcm = patternPcm(1280 * 4 + 640);
  const result = await sim.streamPcm(pcm).done;
  assert.deepEqual(result, { packets: 5, dropped: 0 });
  await until(() => pod.last.binary.length === 5, 1000, "5 binary frames");
  assert.deepEqual(pod.last.binary.map((b) => b.length), [1280, 1280, 1280, 1280, 640]);
  assert.ok(Buffer.concat(pod.last.binary).equals(pcm));
  assert.deepEqual(pod.datagrams, []);
});

test("streamWav streams a real speech file; loop wraps; stop() ends early", async (t) => {
  const { pod, makeSim } = await setup(t);
  const sim = makeSim();
  await sim.connect();
  const wav = readWav(WAV);
  assert.equal(wav.sampleRate, 16000);
  const stream = sim.streamWav(WAV, { loop: true });
  await until(() => pod.last.binary.length >= 4, 1000, "4 frames");
  stream.stop();
  const { packets } = await stream.done;
  await sleep(60);
  assert.equal(pod.last.binary.length, packets);
  assert.ok(pod.last.binary.every((b) => b.length === 1280));
  assert.ok(pod.last.binary[0]!.equals(wav.pcm.subarray(0, 1280)));

  const short = patternPcm(1000);
  const looped = sim.streamPcm(short, { loop: true });
  await until(() => pod.last.binary.length >= packets + 2, 1000, "2 looped frames");
  looped.stop();
  const first = pod.last.binary[packets]!;
  assert.equal(first.length, 1280);
  assert.ok(first.equals(Buffer.concat([short, short.subarray(0, 280)])));
});

test("udpEncryption: key from the ack seals audio; PINGs stay plaintext; decryptBody round-trips", async (t) => {
  const { pod, makeSim } = await setup(t);
  const sim = makeSim({ udpEncryption: true });
  const ack = await sim.connect();
  assert.equal(pod.last.url.searchParams.get("udpEncryption"), "true");
  const key = pod.last.key!;
  assert.equal(ack.udpEncryption?.algorithm, "xsalsa20-poly1305");
  assert.ok(sim.udpKey?.equals(key));
  await sim.registerUdp();
  const pcm = patternPcm(1280 * 3);
  await sim.streamPcm(pcm).done;
  await until(() => pod.audioDatagrams().length === 3, 1000, "3 datagrams");
  pod.audioDatagrams().forEach((d, i) => {
    assert.equal(d.msg.length, 1286 + 40);
    const decoded = decodeDatagram(d.msg);
    assert.ok(decoded.kind === "audio");
    assert.equal(decoded.sequence, i);
    const plain = decryptBody(decoded.body, key);
    assert.ok(plain?.equals(pcm.subarray(i * 1280, (i + 1) * 1280)), `packet ${i} decrypts`);
    assert.equal(decryptBody(decoded.body, generateUdpKey()), null);
  });
  assert.ok(pod.pingDatagrams().length >= 1);

  // A stale key can be forced (failure case C25), and null sends plaintext.
  const stale = generateUdpKey();
  sim.sendUdpAudio(Buffer.from([1, 2, 3, 4]), { key: stale });
  sim.sendUdpAudio(Buffer.from([5, 6]), { key: null });
  await until(() => pod.audioDatagrams().length === 5, 1000, "2 more datagrams");
  const [staleD, plainD] = pod.audioDatagrams().slice(3).map((d) => decodeDatagram(d.msg));
  assert.ok(staleD?.kind === "audio" && plainD?.kind === "audio");
  assert.equal(decryptBody(staleD.body, key), null);
  assert.deepEqual([...decryptBody(staleD.body, stale)!], [1, 2, 3, 4]);
  assert.deepEqual([...plainD.body], [5, 6]);
});

test("sendUdpAudio refuses datagrams over 1472 bytes", async (t) => {
  const { makeSim } = await setup(t);
  const plain = makeSim();
  await plain.connect();
  plain.sendUdpAudio(Buffer.alloc(1466));
  assert.throws(() => plain.sendUdpAudio(Buffer.alloc(1467)), RangeError);
  assert.equal(plain.udpSequence, 1, "a refused payload does not consume a sequence number");
  const sealed = makeSim({ udpEncryption: true });
  await sealed.connect();
  sealed.sendUdpAudio(Buffer.alloc(1426));
  assert.throws(() => sealed.sendUdpAudio(Buffer.alloc(1427)), RangeError);
  assert.throws(() => sealed.streamPcm(Buffer.alloc(4000), { packetMs: 50 }), RangeError);
  const unconnected = makeSim();
  assert.throws(() => unconnected.sendUdpAudio(Buffer.alloc(10)), /no UDP endpoint/);
});

test("the UDP sequence number wraps from 65535 to 0", async (t) => {
  const { pod, makeSim } = await setup(t);
  const sim = makeSim();
  await sim.connect();
  const tiny = Buffer.alloc(2);
  // In slices, so the loopback buffers drain (drops here do not matter, only the sequence does).
  for (let i = 0; i < 65_535; i++) {
    sim.sendUdpAudio(tiny);
    if (i % 2000 === 1999) await sleep(1);
  }
  assert.equal(sim.udpSequence, 65_535);
  await sleep(200);
  const marker = Buffer.from([0xab, 0xcd]);
  sim.sendUdpAudio(marker);
  sim.sendUdpAudio(marker);
  assert.equal(sim.udpSequence, 1);
  const marked = () => pod.datagrams.filter((d) => d.msg.subarray(6).equals(marker));
  await until(() => marked().length === 2, 2000, "the two marked datagrams");
  assert.deepEqual(marked().map((d) => d.msg.readUInt16BE(4)), [65_535, 0]);
});

// ---------- REST ----------

test("rest: bearer token, JSON bodies, app start/stop/list paths, path prefix kept", async (t) => {
  const { pod, makeSim } = await setup(t);
  const sim = makeSim({ restBase: `${pod.restBase}/p/pod-1/` });
  const started = await sim.startApp("com.example.app");
  assert.equal(started.status, 200);
  assert.equal(started.body.success, true);
  assert.match(started.headers.get("content-type") ?? "", /json/);
  await sim.stopApp("com.example.app");
  await sim.listApps();
  await sim.rest("POST", "/api/client/audio/configure", { format: "pcm" });
  assert.deepEqual(
    pod.restRequests.map((r) => [r.method, r.url, r.authorization, r.body]),
    [
      ["POST", "/p/pod-1/apps/com.example.app/start", `Bearer ${TOKEN}`, null],
      ["POST", "/p/pod-1/apps/com.example.app/stop", `Bearer ${TOKEN}`, null],
      ["GET", "/p/pod-1/api/client/apps", `Bearer ${TOKEN}`, null],
      ["POST", "/p/pod-1/api/client/audio/configure", `Bearer ${TOKEN}`, { format: "pcm" }],
    ],
  );
});

// ---------- reconnect ----------

test("backoffDelay doubles up to maxMs and spreads by jitter", () => {
  const o = { baseMs: 100, maxMs: 1000, jitter: 0 };
  assert.deepEqual([0, 1, 2, 3, 4, 5].map((a) => backoffDelay(a, o)), [100, 200, 400, 800, 1000, 1000]);
  assert.equal(backoffDelay(1, { ...o, jitter: 0.5 }, () => 0), 100);
  assert.equal(backoffDelay(1, { ...o, jitter: 0.5 }, () => 1), 300);
  assert.equal(backoffDelay(1, { ...o, jitter: 0.5 }, () => 0.5), 200);
});

test("reconnect after the pod terminates the socket (1006): new key replaces the old, UDP re-registers", async (t) => {
  const { pod, makeSim } = await setup(t);
  let resolves = 0;
  const sim = makeSim({
    udpEncryption: true,
    reconnect: { baseMs: 50, maxMs: 400, jitter: 0 },
    resolveEndpoint: async () => {
      resolves++;
      return { wsUrl: pod.wsUrl };
    },
  });
  await sim.connect();
  await sim.registerUdp();
  const firstKey = pod.last.key!;
  const closes: { code: number }[] = [];
  sim.on("close", (c) => closes.push(c));
  const reconnected = once(sim, "reconnected");
  const udpBack = once(sim, "udp_registered");
  const cutAt = Date.now();
  pod.last.ws.terminate();
  const [ack] = (await reconnected) as [ConnectionAck];
  assert.ok(Date.now() - cutAt >= 45, "waited for the backoff");
  assert.deepEqual(closes, [{ code: 1006, reason: "" }]);
  assert.equal(sim.closes[0]?.code, 1006);
  assert.equal(sim.reconnects, 1);
  assert.equal(resolves, 2);
  assert.equal(pod.conns.length, 2);
  assert.equal(ack.udpEncryption?.key, pod.last.key!.toString("base64"));
  assert.ok(sim.udpKey?.equals(pod.last.key!));
  assert.ok(!sim.udpKey?.equals(firstKey));

  await udpBack;
  assert.ok(pod.last.messages.some((m) => m.type === "udp_register"));
  assert.ok(pod.last.messages.some((m) => m.type === "glasses_connection_state"));
  const before = pod.audioDatagrams().length;
  await sim.streamPcm(patternPcm(1280)).done;
  await until(() => pod.audioDatagrams().length === before + 1, 1000, "datagram after reconnect");
  const d = decodeDatagram(pod.audioDatagrams().at(-1)!.msg);
  assert.ok(d.kind === "audio" && decryptBody(d.body, pod.last.key!) !== null, "sealed with the new key");
});

test("reconnect backs off exponentially while the pod refuses, then recovers (close 1001)", async (t) => {
  const { pod, makeSim } = await setup(t);
  const sim = makeSim({ reconnect: { baseMs: 40, maxMs: 2000, jitter: 0 } });
  await sim.connect();
  const errors: Error[] = [];
  sim.on("reconnect_error", (e) => errors.push(e));
  pod.refusal = { status: 503, body: { status: "draining" } };
  const attemptsBefore = pod.upgradeAttempts.length;
  const closedAt = Date.now();
  pod.last.ws.close(CloseCode.GOING_AWAY, "Server shutting down");
  await until(() => pod.upgradeAttempts.length - attemptsBefore === 3, 3000, "3 refused attempts");
  pod.refusal = null;
  await once(sim, "reconnected");
  assert.equal(sim.connected, true);
  assert.deepEqual(sim.closes.map((c) => [c.code, c.reason]), [[1001, "Server shutting down"]]);
  assert.equal(errors.length, 3);
  assert.ok(errors.every((e) => e instanceof UpgradeRefusedError && e.status === 503));
  const times = [closedAt, ...pod.upgradeAttempts.slice(attemptsBefore)];
  const gaps = times.slice(1).map((t1, i) => t1 - times[i]!);
  // Expected 40, 80, 160, 320 ms (+ a few ms for each refused round trip).
  [40, 80, 160, 320].forEach((want, i) => assert.ok(gaps[i]! >= want - 5 && gaps[i]! < want + 80, `gap ${i} was ${gaps[i]} ms, want ≈${want}`));
  assert.equal(sim.reconnects, 1);
});

test("no reconnect after close(), destroy() or a 4000 'replaced' close", async (t) => {
  const { pod, makeSim } = await setup(t);
  const reconnect = { baseMs: 20, jitter: 0 };

  const a = makeSim({ reconnect });
  await a.connect();
  const aConn = pod.last;
  await a.close();
  await until(() => aConn.closed !== null, 1000, "server sees close");
  assert.equal(aConn.closed?.code, 1000);
  assert.equal(a.connected, false);

  const b = makeSim({ reconnect });
  await b.connect();
  const bConn = pod.last;
  b.destroy();
  await until(() => bConn.closed !== null, 1000, "server sees the dead socket");
  assert.equal(bConn.closed?.code, 1006, "no close frame was sent");

  const c = makeSim({ reconnect });
  await c.connect();
  pod.last.ws.close(CloseCode.REPLACED, "replaced");
  await once(c, "close");

  await sleep(150);
  assert.equal(pod.conns.length, 3);
  assert.deepEqual([a.reconnects, b.reconnects, c.reconnects], [0, 0, 0]);
  // An explicit connect() after close() works again.
  await a.connect();
  assert.equal(pod.conns.length, 4);
});

// ---------- dispose ----------

test("dispose: idempotent, stops streams, rejects waits, leaves no socket or timer behind", async (t) => {
  const { pod, makeSim } = await setup(t);
  await sleep(20);
  const baseline = resourceCounts();
  const sim = makeSim({ reconnect: { baseMs: 10 } });
  await sim.connect();
  await sim.registerUdp();
  const stream = sim.streamPcm(patternPcm(1280 * 4), { loop: true });
  const waiting = sim.waitFor((m) => m.type === "app_stopped", 60_000);
  const waitingRejected = assert.rejects(waiting, /disposed/);
  const serverConn = pod.last;
  await until(() => pod.audioDatagrams().length >= 2, 1000, "streaming");
  const during = resourceCounts();
  assert.ok((during.get("UDPWrap") ?? 0) > (baseline.get("UDPWrap") ?? 0), "the phone's UDP socket is open");
  assert.ok((during.get("TCPSocketWrap") ?? 0) > (baseline.get("TCPSocketWrap") ?? 0), "the phone's TCP socket is open");
  assert.ok((during.get("Timeout") ?? 0) > (baseline.get("Timeout") ?? 0), "stream and wait timers are pending");
  await Promise.all([sim.dispose(), sim.dispose()]);
  await sim.dispose();
  await waitingRejected;
  const result = await stream.done;
  assert.ok(result.packets >= 2, `stream sent ${result.packets} packets`);
  assert.equal(sim.connected, false);
  await until(() => serverConn.closed !== null, 1000, "server sees the close");
  assert.equal(serverConn.closed?.code, 1000);
  await sleep(50);
  const after = resourceCounts();
  assert.deepEqual(Object.fromEntries(resourceCounts()), Object.fromEntries(baseline));
  await sleep(50);
  assert.equal(pod.conns.length, 1, "no reconnect after dispose");
  await assert.rejects(sim.connect(), /disposed/);
});

test("no unhandled rejections", () => {
  assert.equal(unhandledRejections, 0);
});
