/**
 * Fuzz a live pod: ≥ 10,000 random / mutated UDP datagrams and ≥ 10,000 random WebSocket frames on
 * /glasses-ws and /app-ws, while one legitimate user (connected PhoneSim, encrypted UDP, running
 * AppSim app subscribed to transcription) keeps using it. Afterwards the pod must be alive, the
 * legitimate user must be fully served, every UDP drop must be counted under the right reason,
 * and the test process must have seen no unhandledRejection / uncaughtException.
 *
 * Deterministic: FUZZ_SEED=<n> reproduces a run (the seed is printed as a diagnostic).
 */
import assert from "node:assert/strict";
import dgram from "node:dgram";
import http from "node:http";
import { after, before, test, type TestContext } from "node:test";
import WebSocket from "ws";
import { hashApiKey, type SeedFile } from "@mentra-cluster/directory";
import { AppSim, type AppSimSession, type PhoneSim } from "@mentra-cluster/phone-sim";
import {
  LAYOUT_TYPES,
  RELAYED_PHONE_TYPES,
  UDP_HEADER_BYTES,
  UDP_MAX_DATAGRAM_BYTES,
  decryptBody,
  encodeAudioPacket,
  encodePingPacket,
  fnv1a32,
  mintUserToken,
  readWav,
  type DisplayEvent,
  type UdpDropReason,
} from "@mentra-cluster/protocol";
import { TEST_SECRET, eventually, sleep, startTestPod, type TestPod } from "../../../test/helpers/pod.ts";

const SEED = Number(process.env.FUZZ_SEED ?? Date.now() % 1_000_000_007);
const WAV = "/work/shared/data/audio/what-time-is-it-16khz.wav";
const PKG = "com.fuzz.legit";
const KEY = "legit-api-key";
const RAW_PKG = "com.fuzz.raw";
const RAW_KEY = "raw-api-key";
const USER = "legit-user@example.com";
const USER2 = "plain-user@example.com"; // plaintext UDP, no app
const FUZZ_USERS = ["fuzz-1@example.com", "fuzz-2@example.com", "fuzz-3@example.com", "fuzz-4@example.com"];
const MAX_FRAME = 1024 * 1024;

// ---------------------------------------------------------------- process-level fault counters

const proc = { unhandled: [] as unknown[], uncaught: [] as unknown[] };
const onUnhandled = (r: unknown) => void proc.unhandled.push(r);
const onUncaught = (e: unknown) => void proc.uncaught.push(e);
process.on("unhandledRejection", onUnhandled);
process.on("uncaughtException", onUncaught);

// ---------------------------------------------------------------- seeded randomness

function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class Fuzz {
  constructor(readonly r: () => number) {}
  int(n: number): number {
    return Math.floor(this.r() * n);
  }
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }
  chance(p: number): boolean {
    return this.r() < p;
  }
  pick<T>(a: readonly T[]): T {
    return a[this.int(a.length)]!;
  }
  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    let i = 0;
    for (; i + 4 <= n; i += 4) b.writeUInt32LE((this.r() * 0x100000000) >>> 0, i);
    for (; i < n; i++) b[i] = this.int(256);
    return b;
  }
  string(maxLen = 40): string {
    const n = this.int(maxLen + 1);
    const kind = this.int(5);
    let s = "";
    for (let i = 0; i < n; i++) {
      if (kind === 0) s += String.fromCharCode(32 + this.int(95));
      else if (kind === 1) s += String.fromCharCode(this.int(0x80));
      else if (kind === 2) s += String.fromCharCode(this.int(0x10000)); // includes lone surrogates
      else if (kind === 3) s += this.pick(["{", "}", "[", "]", '"', "\\", ":", ",", "null", "true", "\u0000", "\n", "💥", "é"]);
      else s += this.pick(["a", "b", "-", "@", ".", ":", "?", "=", "&"]);
    }
    return s;
  }
  /** Any JSON value, nesting depth ≤ `depth`. */
  value(depth = 3): unknown {
    const k = this.int(depth > 0 ? 16 : 12);
    switch (k) {
      case 0: return this.int(100);
      case 1: return this.pick([0, -1, -0, 1.5, 1e308, -1e308, 2 ** 53, -(2 ** 53), 0xffffffff, 0x100000000, 65535, 65536]);
      case 2: return (this.r() - 0.5) * 10 ** this.int(20);
      case 3: return this.string();
      case 4: return "";
      case 5: return this.pick(["true", "false", "CONNECTED", "DISCONNECTED", "en-US", "transcription:en-US", "*", "main", "dashboard", PKG, RAW_PKG]);
      case 6: return this.chance(0.5);
      case 7: return null;
      case 8: return fnv1a32(this.pick([USER, USER2, ...FUZZ_USERS]));
      case 9: return this.int(0x100000000);
      case 10: return this.string(300);
      case 11: return this.pick([[], {}, [null], { "": "" }]);
      case 12:
      case 13: return Array.from({ length: this.int(6) }, () => this.value(depth - 1));
      default: return this.object(depth - 1);
    }
  }
  object(depth = 2): Record<string, unknown> {
    const o: Record<string, unknown> = {};
    const n = this.int(6);
    for (let i = 0; i < n; i++) {
      // defineProperty, so "__proto__" becomes a real key of the JSON text instead of a prototype.
      Object.defineProperty(o, this.chance(0.7) ? this.pick(FIELD_NAMES) : this.string(12), { value: this.value(depth), enumerable: true, writable: true, configurable: true });
    }
    return o;
  }
}

const PHONE_TYPES = ["ping", "pong", "connection_init", "start_app", "stop_app", "glasses_connection_state", "VAD", "local_transcription", "udp_register", "udp_unregister", ...RELAYED_PHONE_TYPES] as const;
const APP_TYPES = ["tpa_connection_init", "subscription_update", "display_event", "ownership_release", "ping"] as const;
const OTHER_TYPES = ["connection_ack", "data_stream", "microphone_state_change", "udp_ping_ack", "app_state_change", "device_state_update", "tpa_connection_ack", "app_stopped", "touch_event:double_tap"] as const;
const JUNK_TYPES = ["", " ", "PING", "Ping", "__proto__", "constructor", "toString", "hasOwnProperty", "valueOf", "x".repeat(300), "\u0000", "ping\n", "💥"];
const FIELD_NAMES = [
  "type", "packageName", "status", "modelName", "wifi", "text", "isFinal", "startTime", "endTime", "speakerId", "transcribeLanguage", "provider",
  "userIdHash", "userId", "coreToken", "position", "gesture_name", "device_model", "buttonId", "pressType", "lat", "lng", "sessionId", "apiKey",
  "subscriptions", "view", "layout", "durationMs", "forceDisplay", "reason", "timestamp", "__proto__", "constructor", "toJSON", "state",
];
const SUBSCRIPTIONS = ["transcription", "transcription:en-US", "transcription:en-US?hints=a,b", "transcription:fr-FR", "translation:en-US-to-fr-FR", "audio_chunk", "VAD", "*", "all", "head_position", "button_press", "touch_event", "touch_event:double_tap", "glasses_connection_state", "location_update", "phone_notification", "calendar_event", "augmentos:brightness"];

function anyType(f: Fuzz): unknown {
  const k = f.int(20);
  if (k < 11) return f.pick(PHONE_TYPES);
  if (k < 14) return f.pick(APP_TYPES);
  if (k < 15) return f.pick(OTHER_TYPES);
  if (k < 18) return f.pick(JUNK_TYPES);
  return f.value(1); // wrong-typed `type`
}

function layout(f: Fuzz): unknown {
  if (f.chance(0.2)) return f.value(2);
  const l: Record<string, unknown> = { layoutType: f.chance(0.8) ? f.pick(LAYOUT_TYPES) : f.value(0) };
  for (const k of ["text", "title", "topText", "bottomText", "leftText", "rightText", "data", "frames", "interval", "repeat"]) {
    if (f.chance(0.3)) l[k] = f.chance(0.7) ? f.string(80) : f.value(1);
  }
  return l;
}

/** A phone → pod JSON message: a well-formed one of a random type, or junk fields of wrong types. */
function phoneMessage(f: Fuzz, selfHash: number): Record<string, unknown> {
  const type = anyType(f);
  const msg: Record<string, unknown> = f.chance(0.5) ? f.object(2) : {};
  if (f.chance(0.5)) {
    switch (type) {
      case "start_app":
      case "stop_app":
        // The AppSim-backed package rarely (each start is a real webhook + socket), the raw one often (500 fast).
        msg.packageName = f.chance(0.03) ? PKG : f.chance(0.3) ? RAW_PKG : f.string(30);
        break;
      case "glasses_connection_state":
        msg.status = f.pick(["CONNECTED", "RECONNECTED", "DISCONNECTED", "connected", ""]);
        if (f.chance(0.7)) msg.modelName = f.pick(["Simulated Glasses", "Even Realities G1", f.string(20)]);
        if (f.chance(0.5)) msg.wifi = { connected: f.chance(0.5), ssid: f.string(20) };
        break;
      case "VAD":
        msg.status = f.pick([true, false, "true", "false", "maybe", 1]);
        break;
      case "local_transcription":
        msg.text = f.string(120);
        msg.isFinal = f.chance(0.5);
        if (f.chance(0.5)) msg.transcribeLanguage = f.pick(["en-US", "fr-FR", "", f.string(10)]);
        if (f.chance(0.5)) msg.startTime = f.value(0);
        break;
      case "udp_register":
      case "udp_unregister":
        msg.userIdHash = f.pick([selfHash, fnv1a32(USER), f.int(0x100000000), -1, 1.5, 0x100000000, "123"]);
        break;
      case "head_position":
        msg.position = f.pick(["up", "down", f.string(5)]);
        break;
      case "touch_event":
        msg.gesture_name = f.pick(["double_tap", "swipe", f.string(10)]);
        break;
      default:
        break;
    }
  }
  msg.type = type;
  return msg;
}

/** An app → pod JSON message for a bound /app-ws socket. */
function appMessage(f: Fuzz, sessionId: string, pkg: string): Record<string, unknown> {
  let type = anyType(f);
  // Rarely: ownership_release makes the socket's eventual close final (a hand-off), ending the app.
  if (type === "ownership_release" && !f.chance(0.05)) type = "ping";
  const msg: Record<string, unknown> = f.chance(0.5) ? f.object(2) : {};
  if (f.chance(0.6)) {
    msg.packageName = f.chance(0.8) ? pkg : f.string(20);
    msg.sessionId = f.chance(0.8) ? sessionId : f.value(0);
    switch (type) {
      case "subscription_update":
        msg.subscriptions = f.chance(0.85)
          ? Array.from({ length: f.int(8) }, () => (f.chance(0.8) ? f.pick(SUBSCRIPTIONS) : f.chance(0.5) ? { stream: f.pick(SUBSCRIPTIONS), rate: "1s" } : f.value(1)))
          : f.value(1);
        break;
      case "display_event":
        msg.view = f.pick(["main", "dashboard", "", 3]);
        msg.layout = layout(f);
        if (f.chance(0.3)) msg.durationMs = f.value(0);
        if (f.chance(0.1)) msg.forceDisplay = f.value(0);
        break;
      case "ownership_release":
        msg.reason = f.pick(["switching_clouds", "clean_shutdown", f.string(5)]);
        break;
      default:
        break;
    }
  }
  msg.type = type;
  return msg;
}

/** Text that is not a JSON object (or not JSON at all). */
function junkText(f: Fuzz): string {
  switch (f.int(8)) {
    case 0: return f.string(200);
    case 1: return f.pick(["null", "true", "0", "-1", '"ping"', "[]", "{}", "[{}]", '{"type":null}', '{"type":{}}', "{", '{"type":"ping"', "\u0000", ""]);
    case 2: return JSON.stringify(f.value(2)).slice(0, f.range(1, 60));
    case 3: return JSON.stringify(f.value(3));
    case 4: return JSON.stringify([phoneMessage(f, 0)]);
    case 5: return `{"type":"${f.pick(PHONE_TYPES)}",${f.string(20)}}`;
    case 6: return "[".repeat(f.range(1, 20)) + "]".repeat(f.range(0, 20));
    default: return f.bytes(f.int(100)).toString("latin1");
  }
}

/** A frame under 1 MiB with a huge string in it (JSON or not). */
function hugeFrame(f: Fuzz): string {
  const n = f.range(100_000, MAX_FRAME - 1000);
  const filler = f.pick(["x", "é", "a b ", "\\"]);
  const body = filler.repeat(Math.floor(n / Buffer.byteLength(filler) / (filler === "\\" ? 2 : 1)));
  switch (f.int(3)) {
    case 0: return JSON.stringify({ type: "local_transcription", text: body, isFinal: f.chance(0.5) });
    case 1: return JSON.stringify({ type: f.pick([...PHONE_TYPES, ...APP_TYPES]), [f.pick(FIELD_NAMES)]: body });
    default: return body;
  }
}

// ---------------------------------------------------------------- raw WebSocket client

interface RawClient {
  ws: WebSocket;
  texts: Record<string, unknown>[];
  binaryIn: number;
  closed: Promise<{ code: number; reason: string }>;
  close: { code: number; reason: string } | null;
  sent: number;
}

function openRaw(url: string, headers?: Record<string, string>): Promise<RawClient> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers, maxPayload: 64 * 1024 * 1024 });
    let resolveClosed!: (c: { code: number; reason: string }) => void;
    const c: RawClient = { ws, texts: [], binaryIn: 0, closed: new Promise((r) => (resolveClosed = r)), close: null, sent: 0 };
    ws.on("message", (data, isBinary) => {
      if (isBinary) return void c.binaryIn++;
      try {
        c.texts.push(JSON.parse(data.toString()));
      } catch {
        c.texts.push({ type: "__unparseable__" });
      }
    });
    ws.on("close", (code, reason) => {
      c.close = { code, reason: reason.toString() };
      resolveClosed(c.close);
    });
    ws.on("error", (err) => reject(err));
    ws.on("unexpected-response", (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
    ws.once("open", () => resolve(c));
  });
}

/** Sends and waits for the frame to be written when asked (backpressure), never throws. */
function sendRaw(c: RawClient, data: string | Buffer, wait: boolean): Promise<void> {
  if (c.ws.readyState !== WebSocket.OPEN) return Promise.resolve();
  c.sent++;
  return new Promise((resolve) => {
    c.ws.send(data, { binary: typeof data !== "string" }, () => resolve());
    if (!wait) resolve();
  });
}

async function waitText(c: RawClient, pred: (m: Record<string, unknown>) => boolean, timeoutMs = 5000, what = "message"): Promise<Record<string, unknown>> {
  return (await eventually(() => c.texts.find(pred), timeoutMs, what))!;
}

function terminate(c: RawClient): Promise<unknown> {
  if (c.ws.readyState === WebSocket.CLOSED) return Promise.resolve();
  c.ws.terminate();
  return Promise.race([c.closed, sleep(1000)]);
}

// ---------------------------------------------------------------- a raw mini app behind a webhook

/** Answers webhooks for RAW_PKG; for armed session ids it connects a raw /app-ws socket and inits it. */
class RawAppServer {
  private server: http.Server | null = null;
  url = "";
  readonly armed = new Map<string, (c: RawClient) => void>();
  readonly clients: RawClient[] = [];
  webhooks = 0;

  async start(): Promise<void> {
    this.server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        this.webhooks++;
        let body: { type?: string; sessionId?: string; mentraOSWebsocketUrl?: string } = {};
        try {
          body = JSON.parse(Buffer.concat(chunks).toString());
        } catch {
          /* answered below */
        }
        const deliver = body.type === "session_request" && body.sessionId ? this.armed.get(body.sessionId) : undefined;
        if (!deliver || !body.mentraOSWebsocketUrl) {
          res.writeHead(body.type === "stop_request" ? 200 : 500, { "content-type": "application/json" }).end('{"status":"error"}');
          return;
        }
        this.armed.delete(body.sessionId!);
        void openRaw(body.mentraOSWebsocketUrl).then(
          async (c) => {
            this.clients.push(c);
            await sendRaw(c, JSON.stringify({ type: "tpa_connection_init", sessionId: body.sessionId, packageName: RAW_PKG, apiKey: RAW_KEY, timestamp: new Date().toISOString() }), true);
            await waitText(c, (m) => m.type === "tpa_connection_ack", 5000, "tpa_connection_ack").catch(() => undefined);
            res.writeHead(200, { "content-type": "application/json" }).end('{"status":"success"}');
            deliver(c);
          },
          () => res.writeHead(500).end('{"status":"error"}'),
        );
      });
    });
    this.server.keepAliveTimeout = 500;
    await new Promise<void>((r) => this.server!.listen(0, "127.0.0.1", r));
    this.url = `http://127.0.0.1:${(this.server.address() as { port: number }).port}`;
  }

  async stop(): Promise<void> {
    await Promise.all(this.clients.map(terminate));
    const s = this.server;
    this.server = null;
    if (s) {
      s.closeAllConnections();
      await new Promise<void>((r) => s.close(() => r()));
    }
  }
}

// ---------------------------------------------------------------- shared setup

let tp: TestPod;
let appSim: AppSim;
let rawApps: RawAppServer;
let phone: PhoneSim;
let phone2: PhoneSim;
let legit: AppSimSession;
const legitSessionId = `${USER}-${PKG}`;
const cleanups: (() => Promise<unknown> | void)[] = [];
let udpStats: { sent: number; expected: Record<string, number>; legitPings: number } | null = null;
let wsFramesSent = 0;

function promMetric(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name + "{") && !line.startsWith(name + " ")) continue;
    const m = /^([^{ ]+)(\{[^}]*\})?\s+(\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const lbl = m[2] ?? "";
    if (Object.entries(labels).every(([k, v]) => lbl.includes(`${k}="${v}"`))) sum += Number(m[3]);
  }
  return sum;
}

before(async () => {
  appSim = await new AppSim({ packageName: PKG, apiKey: KEY, subscriptions: ["transcription:en-US"], echo: "final", echoPrefix: "echo: " }).start();
  rawApps = new RawAppServer();
  await rawApps.start();
  const seed: SeedFile = {
    apps: [
      { packageName: PKG, name: "Legit", publicUrl: appSim.publicUrl, hashedApiKey: hashApiKey(KEY) },
      { packageName: RAW_PKG, name: "Raw", publicUrl: rawApps.url, hashedApiKey: hashApiKey(RAW_KEY) },
    ],
    users: [USER, USER2, ...FUZZ_USERS].map((id) => ({ id, installedApps: [PKG, RAW_PKG] })),
  };
  tp = await startTestPod({ seed });
  phone = tp.phone(USER, { udpEncryption: true });
  await phone.connect();
  await phone.registerUdp();
  assert.ok(phone.udpKey, "legit phone uses encrypted UDP");
  const started = await phone.startApp(PKG);
  assert.equal(started.status, 200, JSON.stringify(started.body));
  legit = (await eventually(() => appSim.sessions.get(legitSessionId), 5000, "legit app session"))!;
  await phone.waitFor((m) => m.type === "microphone_state_change" && (m as { isMicrophoneEnabled: boolean }).isMicrophoneEnabled, 5000);
  phone2 = tp.phone(USER2);
  await phone2.connect();
  await phone2.registerUdp();
  await sleep(600); // the phones' 2nd and 3rd registration PINGs land before the UDP baseline
  // The path under test works before the fuzz.
  phone.send({ type: "local_transcription", text: "before fuzz", isFinal: true });
  await eventually(() => legit.transcripts.some((t) => t.text === "before fuzz"), 3000, "baseline transcript");
});

after(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  await tp?.close();
  await rawApps?.stop();
  await appSim?.stop();
  process.off("unhandledRejection", onUnhandled);
  process.off("uncaughtException", onUncaught);
});

// ---------------------------------------------------------------- UDP

test("UDP: ≥ 10,000 random and mutated datagrams, every drop counted under the right reason", async (t: TestContext) => {
  t.diagnostic(`FUZZ_SEED=${SEED}`);
  const f = new Fuzz(rng(SEED ^ 0x5eed01));
  const sock = dgram.createSocket("udp4");
  cleanups.push(() => new Promise<void>((r) => sock.close(() => r())));
  let sendErrors = 0;
  sock.on("error", () => sendErrors++);
  const port = tp.pod.addresses.udpPort;
  const legitHash = phone.userIdHash;
  const plainHash = phone2.userIdHash;
  const key = phone.udpKey!;
  const known = new Set([legitHash, plainHash]);
  for (const u of FUZZ_USERS) assert.ok(!known.has(fnv1a32(u)));

  const validLegit = (payloadLen: number, seq = f.int(65536)) => encodeAudioPacket(legitHash, seq, f.bytes(payloadLen), key);
  const withHeader = (hash: number, seq: number, body: Buffer) => {
    const b = Buffer.allocUnsafe(UDP_HEADER_BYTES + body.length);
    b.writeUInt32BE(hash >>> 0, 0);
    b.writeUInt16BE(seq & 0xffff, 4);
    body.copy(b, UDP_HEADER_BYTES);
    return b;
  };
  const gen = (): Buffer => {
    switch (f.int(10)) {
      case 0:
      case 1:
        return f.bytes(f.int(2001)); // anything
      case 2:
        return withHeader(legitHash, f.int(65536), f.bytes(f.int(1500))); // valid hash, garbage body
      case 3:
        return withHeader(plainHash, f.int(65536), f.bytes(f.int(1400))); // plaintext user: garbage is "audio"
      case 4: {
        const v = validLegit(f.range(2, 978)); // truncated valid packet
        return v.subarray(0, f.int(v.length));
      }
      case 5: {
        const ping = encodePingPacket(f.pick([legitHash, plainHash, f.int(0x100000000), legitHash ^ 1]));
        switch (f.int(7)) {
          case 0: return ping;
          case 1: return Buffer.concat([ping, f.bytes(f.range(1, 4))]);
          case 2: return ping.subarray(0, 9);
          case 3: return Buffer.concat([ping.subarray(0, 6), Buffer.from(f.pick(["ping", "PINH", "PIN\0", "GNIP"]))]);
          case 4: {
            const p = Buffer.from(ping);
            p.writeUInt16BE(f.int(65536), 4);
            return p;
          }
          case 5: return Buffer.concat([ping, Buffer.from("PING")]);
          default: return encodePingPacket(legitHash);
        }
      }
      case 6:
        // Legit user's hash, random sequence, valid box. Even lengths: a key holder (the phone) only
        // sends whole s16 samples, and an odd one would shift the user's PCM alignment for good.
        return validLegit(2 * f.range(1, 489));
      case 7: {
        const v = validLegit(f.range(2, 978));
        const bit = UDP_HEADER_BYTES * 8 + f.int((v.length - UDP_HEADER_BYTES) * 8);
        v[bit >> 3]! ^= 1 << (bit & 7);
        return v;
      }
      case 8:
        return withHeader(f.pick([legitHash, plainHash, f.int(0x100000000)]), f.int(65536), f.bytes(f.range(UDP_MAX_DATAGRAM_BYTES + 1 - UDP_HEADER_BYTES, 2000)));
      default:
        return withHeader(f.pick([legitHash, plainHash]), f.int(65536), Buffer.alloc(0)); // header only
    }
  };

  // Oracle: the drop reason the pod must count for each datagram (null = accepted: ping ack or audio).
  const expected: Record<string, number> = { too_small: 0, too_large: 0, unknown_hash: 0, decrypt_failed: 0, empty: 0 };
  let legitPings = 0;
  const classify = (d: Buffer): void => {
    if (d.length > UDP_MAX_DATAGRAM_BYTES) return void expected.too_large!++;
    if (d.length < UDP_HEADER_BYTES) return void expected.too_small!++;
    const hash = d.readUInt32BE(0);
    const body = d.subarray(UDP_HEADER_BYTES);
    const isPing = body.length === 4 && body.toString("latin1") === "PING";
    if (!known.has(hash)) return void expected.unknown_hash!++;
    if (isPing) {
      if (hash === legitHash) legitPings++;
      return;
    }
    if (hash === legitHash) {
      const opened = decryptBody(body, key);
      if (!opened) return void expected.decrypt_failed!++;
      if (opened.length === 0) return void expected.empty!++;
      return;
    }
    if (body.length === 0) expected.empty!++;
  };

  const h0 = tp.pod.metrics.health().udp;
  const drops0 = { ...tp.pod.udp.drops };
  const acks0 = phone.received.filter((m) => m.type === "udp_ping_ack").length;
  const TOTAL = 12_000;
  const BATCH = 48;
  let sent = 0;
  const received = () => tp.pod.metrics.health().udp.received - h0.received;
  while (sent < TOTAL) {
    for (let i = 0; i < BATCH && sent < TOTAL; i++, sent++) {
      const d = gen();
      classify(d);
      sock.send(d, port, "127.0.0.1");
    }
    // Let the pod (same process) drain its socket before the next batch: the kernel buffer is not under test.
    const deadline = Date.now() + 1000;
    while (received() < sent && Date.now() < deadline) await new Promise((r) => setImmediate(r));
  }
  await eventually(() => received() >= sent, 5000, `pod to receive all ${sent} datagrams (got ${received()})`);
  assert.equal(sendErrors, 0);
  assert.equal(received(), sent, "every datagram reached the pod (no kernel drops)");

  const drops = tp.pod.udp.drops;
  const delta = (r: UdpDropReason) => drops[r] - drops0[r];
  for (const reason of Object.keys(expected) as UdpDropReason[]) {
    assert.equal(delta(reason), expected[reason], `drops.${reason}: pod ${delta(reason)}, oracle ${expected[reason]}`);
    assert.ok(expected[reason]! > 0, `the fuzz produced ${reason}`);
  }
  assert.ok(delta("late") > 0, "random sequences for a registered hash produced late drops");
  assert.equal(delta("not_owner"), 0);
  const h1 = tp.pod.metrics.health().udp;
  const allDrops = (Object.keys(drops) as UdpDropReason[]).reduce((n, r) => n + delta(r), 0);
  assert.equal(h1.dropped - h0.dropped, allDrops, "health().udp.dropped matches the per-reason counters");
  assert.equal(h1.decryptionFailures - h0.decryptionFailures, expected.decrypt_failed);
  assert.equal(h1.sessions, 2);
  // Every PING for the legit hash was acknowledged on its WebSocket.
  await eventually(() => phone.received.filter((m) => m.type === "udp_ping_ack").length - acks0 >= legitPings, 5000, `${legitPings} udp_ping_acks`);
  udpStats = { sent, expected, legitPings };
  t.diagnostic(`udp: sent ${sent}, expected drops ${JSON.stringify(expected)}, late ${delta("late")}, legit pings ${legitPings}`);
  assert.ok(sent >= 10_000);
});

// ---------------------------------------------------------------- /glasses-ws

test("WS /glasses-ws: random frames over several connections; oversized frames close with 1009", async (t: TestContext) => {
  const PER_CONN = 1_900;
  const msgIn0 = tp.pod.metrics.health().throughput.wsClientMessagesIn;
  let total = 0;
  const closes: { code: number; reason: string }[] = [];

  await Promise.all(
    FUZZ_USERS.map(async (user, idx) => {
      const f = new Fuzz(rng(SEED ^ (0x100 + idx)));
      const url = `${tp.wsUrl}?token=${encodeURIComponent(mintUserToken(user, TEST_SECRET))}${f.chance(0.5) ? "&udpEncryption=true" : ""}`;
      let c = await openRaw(url);
      const selfHash = fnv1a32(user);
      for (let i = 0; i < PER_CONN; i++) {
        if (c.ws.readyState !== WebSocket.OPEN) {
          // A connection the pod closed (it should not) is recorded and replaced.
          closes.push((await c.closed) ?? { code: -1, reason: "" });
          c = await openRaw(url);
        }
        const k = f.int(1000);
        let frame: string | Buffer;
        if (k < 3) frame = hugeFrame(f);
        else if (k < 150) frame = f.bytes(f.chance(0.1) ? f.int(2) : f.int(3200)); // binary: audio-ish garbage
        else if (k < 400) frame = junkText(f);
        else frame = JSON.stringify(phoneMessage(f, selfHash));
        await sendRaw(c, frame, i % 32 === 0 || typeof frame === "string" && frame.length > 50_000);
        total++;
        if (i % 200 === 0) await new Promise((r) => setImmediate(r));
      }
      // All frames processed: a ping sent last is answered by a pong.
      await sendRaw(c, '{"type":"ping"}', true);
      total++;
      await waitText(c, (m) => m.type === "pong" && typeof m.timestamp === "number", 10_000, `pong for ${user}`);
      cleanups.push(() => terminate(c));
    }),
  );

  // One frame over the 1 MiB limit: the pod closes that socket with 1009 and nothing else happens.
  const big = await openRaw(`${tp.wsUrl}?token=${encodeURIComponent(mintUserToken("fuzz-big@example.com", TEST_SECRET))}`);
  await sendRaw(big, JSON.stringify({ type: "local_transcription", text: "x".repeat(MAX_FRAME), isFinal: true }), true);
  total++;
  const bigClose = await Promise.race([big.closed, sleep(5000).then(() => null)]);
  assert.equal(bigClose?.code, 1009, `oversized frame close: ${JSON.stringify(bigClose)}`);

  assert.deepEqual(closes, [], "the pod closed no fuzzing phone socket");
  await eventually(() => tp.pod.metrics.health().throughput.wsClientMessagesIn - msgIn0 >= total - 1, 5000, "pod counted every phone frame");
  wsFramesSent += total;
  t.diagnostic(`glasses-ws frames: ${total}`);
  assert.ok(total >= 7_000);
});

// ---------------------------------------------------------------- /app-ws

test("WS /app-ws: random frames before init (refused) and after a successful init (bound socket)", async (t: TestContext) => {
  const f = new Fuzz(rng(SEED ^ 0x5eed03));
  const miniIn0 = tp.pod.metrics.health().throughput.wsMiniappMessagesIn;
  let total = 0;

  // --- before init: 1..4 frames per connection, the pod refuses with 1008 (or we give up after 300 ms).
  const closeCodes = new Map<number, number>();
  const preInitFrame = (): string | Buffer => {
    const fuzzUser = f.pick(FUZZ_USERS);
    switch (f.int(9)) {
      case 0: return junkText(f);
      case 1: return f.bytes(f.int(500));
      case 2: return JSON.stringify(appMessage(f, `${fuzzUser}-${RAW_PKG}`, RAW_PKG));
      case 3: return JSON.stringify({ type: "tpa_connection_init", ...f.object(1) });
      case 4: // right key, app not started for this user
        return JSON.stringify({ type: "tpa_connection_init", sessionId: `${fuzzUser}-${RAW_PKG}`, packageName: RAW_PKG, apiKey: RAW_KEY });
      case 5: // the legit user's session id with a wrong key: must not touch the legit app
        return JSON.stringify({ type: "tpa_connection_init", sessionId: legitSessionId, packageName: PKG, apiKey: f.pick(["", "wrong", RAW_KEY, f.string(20)]) });
      case 6: // malformed session ids / package names / wrong types
        return JSON.stringify({ type: "tpa_connection_init", sessionId: f.pick([PKG, `-${PKG}`, `${USER}${PKG}`, f.value(0)]), packageName: f.pick([PKG, "", f.value(0)]), apiKey: f.value(0) });
      case 7: // unknown user with the right key
        return JSON.stringify({ type: "tpa_connection_init", sessionId: `nobody-${f.int(1e6)}@example.com-${PKG}`, packageName: PKG, apiKey: KEY });
      default:
        return hugeFrame(new Fuzz(() => f.r() * 0.2)); // small-ish huge frames only here
    }
  };
  const CONNS = 300;
  const PARALLEL = 25;
  for (let base = 0; base < CONNS; base += PARALLEL) {
    await Promise.all(
      Array.from({ length: Math.min(PARALLEL, CONNS - base) }, async () => {
        const c = await openRaw(tp.pod.addresses.appWsUrl);
        const n = f.range(1, 4);
        for (let i = 0; i < n && c.ws.readyState === WebSocket.OPEN; i++) {
          await sendRaw(c, preInitFrame(), true);
          total++;
        }
        const closed = await Promise.race([c.closed, sleep(120).then(() => null)]);
        if (closed) closeCodes.set(closed.code, (closeCodes.get(closed.code) ?? 0) + 1);
        else await terminate(c);
      }),
    );
  }
  t.diagnostic(`pre-init close codes: ${JSON.stringify([...closeCodes])}`);
  for (const code of closeCodes.keys()) assert.ok([1008, 1009, 1011].includes(code), `unexpected close ${code} before init`);
  assert.ok((closeCodes.get(1008) ?? 0) > CONNS / 2, "most pre-init connections were refused with 1008");
  assert.equal(closeCodes.get(1011) ?? 0, 0, "no INTERNAL_ERROR during init");

  // The oversized first frame on /app-ws closes with 1009.
  const big = await openRaw(tp.pod.addresses.appWsUrl);
  await sendRaw(big, "y".repeat(MAX_FRAME + 1), true);
  total++;
  assert.equal((await Promise.race([big.closed, sleep(5000).then(() => null)]))?.code, 1009);

  // --- after init: two fuzz users start RAW_PKG; the raw app inits and then sends random frames.
  const bound: { c: RawClient; sessionId: string; phone: RawClient }[] = [];
  for (const user of FUZZ_USERS.slice(0, 2)) {
    const phoneC = await openRaw(`${tp.wsUrl}?token=${encodeURIComponent(mintUserToken(user, TEST_SECRET))}`);
    cleanups.push(() => terminate(phoneC));
    await sendRaw(phoneC, JSON.stringify({ type: "glasses_connection_state", status: "CONNECTED", modelName: "Simulated Glasses" }), true);
    const sessionId = `${user}-${RAW_PKG}`;
    const got = new Promise<RawClient>((r) => rawApps.armed.set(sessionId, r));
    const res = await fetch(`${tp.httpUrl}/apps/${RAW_PKG}/start`, { method: "POST", headers: { authorization: `Bearer ${mintUserToken(user, TEST_SECRET)}` } });
    const body = await res.text();
    assert.equal(res.status, 200, body);
    const c = await got;
    assert.ok(c.texts.some((m) => m.type === "tpa_connection_ack"));
    bound.push({ c, sessionId, phone: phoneC });
  }
  const PER_APP = 2_600;
  await Promise.all(
    bound.map(async ({ c, sessionId, phone: phoneC }, idx) => {
      const g = new Fuzz(rng(SEED ^ (0x200 + idx)));
      for (let i = 0; i < PER_APP && c.ws.readyState === WebSocket.OPEN; i++) {
        const k = g.int(1000);
        let frame: string | Buffer;
        if (k < 3) frame = hugeFrame(g);
        else if (k < 60) frame = g.bytes(g.int(2000));
        else if (k < 250) frame = junkText(g);
        else frame = JSON.stringify(appMessage(g, sessionId, RAW_PKG));
        await sendRaw(c, frame, i % 32 === 0 || typeof frame === "string" && frame.length > 50_000);
        total++;
        // Feed the fuzz user's session some audio and transcripts too, so subscriptions have traffic.
        if (i % 25 === 0) await sendRaw(phoneC, g.bytes(1280), false);
        if (i % 40 === 0) await sendRaw(phoneC, JSON.stringify({ type: "local_transcription", text: `t${i}`, isFinal: g.chance(0.5) }), false);
        if (i % 200 === 0) await new Promise((r) => setImmediate(r));
      }
      // Still bound and served: an app-level ping is answered with a pong.
      assert.equal(c.ws.readyState, WebSocket.OPEN, `bound app socket closed: ${JSON.stringify(c.close)}`);
      await sendRaw(c, '{"type":"ping"}', true);
      total++;
      await waitText(c, (m) => m.type === "pong", 10_000, "app pong");
    }),
  );
  await eventually(() => tp.pod.metrics.health().throughput.wsMiniappMessagesIn - miniIn0 >= total * 0.8, 5000, "pod counted the app frames");
  wsFramesSent += total;
  t.diagnostic(`app-ws frames: ${total}; total ws frames so far ${wsFramesSent}`);
  assert.ok(total >= 3_000);
  assert.ok(wsFramesSent >= 10_000, `only ${wsFramesSent} WebSocket frames`);
});

// ---------------------------------------------------------------- aftermath

test("after the fuzz: pod alive, legit user fully served, drops counted, no process-level faults", async () => {
  assert.ok(udpStats, "UDP fuzz ran");
  // Alive.
  const livez = await fetch(`${tp.httpUrl}/livez`);
  assert.equal(livez.status, 200);
  assert.equal(await livez.text(), "ok");
  assert.equal((await fetch(`${tp.httpUrl}/health`)).status, 200);

  // The legit phone's socket was never closed and still gets the 2 s app-level pings (checked below).
  assert.deepEqual(phone.closes, []);
  assert.ok(phone.connected);
  const pings0 = phone.pingsReceived;
  // UDP registration still acknowledged.
  await phone.registerUdp(3000);

  // The legit app was never disturbed: same socket, no close, no stop webhook, no re-start webhook.
  assert.equal(appSim.sessions.get(legitSessionId), legit);
  assert.deepEqual(legit.closes, []);
  assert.equal(appSim.webhooks.filter((w) => w.sessionId === legitSessionId).length, 1);

  // Transcription via local_transcription still reaches the app, and its echo reaches the phone.
  const text = `after fuzz ${SEED}`;
  phone.send({ type: "local_transcription", text, isFinal: true, transcribeLanguage: "en-US" });
  await eventually(() => legit.transcripts.some((t) => t.text === text && t.isFinal), 5000, "local transcript at the app");
  await phone.waitFor((m) => m.type === "display_event" && ((m as DisplayEvent).layout as { text?: string }).text === `echo: ${text}`, 5000);

  // Real speech over encrypted UDP still transcribes. A burst of silence first resyncs the reorder
  // buffer the fuzz scrambled with random sequence numbers (as any continuous phone stream would).
  for (let i = 0; i < 75; i++) phone.sendUdpAudio(Buffer.alloc(1280));
  await sleep(200);
  const mark = legit.transcripts.length;
  const { pcm } = readWav(WAV);
  await phone.streamPcm(pcm).done;
  await eventually(() => legit.transcripts.slice(mark).some((t) => t.isFinal && t.provider === "energy"), 10_000, "a final transcript of the real speech");

  await eventually(() => phone.pingsReceived > pings0, 5000, "a ping after the fuzz");

  // Metrics moved: UDP drops by reason, WebSocket drops by channel, both in /health and /metrics.
  const health = tp.pod.metrics.health();
  assert.ok(health.udp.dropped >= Object.values(udpStats.expected).reduce((a, b) => a + b, 0));
  const res = await fetch(`${tp.httpUrl}/metrics`);
  assert.equal(res.status, 200);
  const prom = await res.text();
  assert.equal(promMetric(prom, "mentra_udp_packets_dropped_total"), tp.pod.metrics.health().udp.dropped);
  for (const reason of ["too_small", "too_large", "unknown_hash", "decrypt_failed", "empty", "late"]) {
    assert.ok(promMetric(prom, "mentra_udp_packets_dropped_by_reason_total", { reason }) > 0, `udp drops{reason=${reason}}`);
  }
  assert.ok(promMetric(prom, "mentra_udp_packets_received_total") >= udpStats.sent);
  assert.ok(promMetric(prom, "mentra_udp_decryption_failures_total") >= udpStats.expected.decrypt_failed!);
  for (const [channel, reason] of [["phone", "malformed_json"], ["phone", "not_an_object"], ["phone", "unknown_type"], ["phone", "invalid_field"], ["app", "malformed_json"], ["app", "init_malformed_message"], ["app", "init_invalid_api_key"], ["app", "unsupported_type"]] as const) {
    assert.ok(promMetric(prom, "mentra_dropped_messages_total", { channel, reason }) > 0, `dropped_messages{channel=${channel},reason=${reason}}`);
  }
  assert.ok(promMetric(prom, "mentra_ws_client_messages_in_total") >= wsFramesSent / 2);

  // No process-level faults, from the pod or from anything else in this process.
  assert.equal(proc.uncaught.length, 0, `uncaughtException: ${proc.uncaught.map(String).join("; ")}`);
  assert.equal(proc.unhandled.length, 0, `unhandledRejection: ${proc.unhandled.map(String).join("; ")}`);
});

// ---------------------------------------------------------------- known crash

test(
  "deeply nested JSON from a phone or an app must not throw out of a socket 'message' handler",
  async () => {
    // Own pod and app. The frames are fed to the pod's own 'message' listeners with emit(), so a throw
    // surfaces here synchronously instead of as an uncaughtException (which is what ws would produce).
    const sim = await new AppSim({ packageName: PKG, apiKey: KEY, subscriptions: ["*"], echo: "none" }).start();
    const pod2 = await startTestPod({
      seed: { apps: [{ packageName: PKG, name: "x", publicUrl: sim.publicUrl, hashedApiKey: hashApiKey(KEY) }], users: [{ id: USER, installedApps: [PKG] }] },
      deps: { timings: { bootWindowMs: 100, displayThrottleMs: 50 } },
    });
    const thrown: string[] = [];
    try {
      const p = pod2.phone(USER);
      await p.connect();
      assert.equal((await p.startApp(PKG)).status, 200);
      await eventually(() => sim.sessions.get(legitSessionId), 5000, "app session");
      await sleep(300); // past the boot window and the clear card's throttle: a display is sent synchronously
      const session = pod2.pod.sessions.get(USER)!;
      const phoneWs = session.ws!;
      const appWs = session.apps.get(PKG)!.ws!;
      const deep = "[".repeat(6000) + "]".repeat(6000); // 12 kB, far under the 1 MiB frame limit
      const frames: [string, typeof phoneWs, string][] = [
        ["phone head_position", phoneWs, `{"type":"head_position","position":${deep}}`],
        ["phone glasses_connection_state wifi", phoneWs, `{"type":"glasses_connection_state","status":"CONNECTED","wifi":{"connected":true,"ssid":${deep}}}`],
        ["app display_event", appWs, `{"type":"display_event","packageName":"${PKG}","view":"main","layout":{"layoutType":"text_wall","text":${deep}},"sessionId":""}`],
      ];
      for (const [what, ws, frame] of frames) {
        try {
          ws.emit("message", Buffer.from(frame), false);
        } catch (err) {
          thrown.push(`${what}: ${(err as Error).name}: ${(err as Error).message}`);
        }
      }
      assert.equal((await fetch(`${pod2.httpUrl}/livez`)).status, 200);
    } finally {
      await pod2.close();
      await sim.stop();
    }
    assert.deepEqual(thrown, []);
  },
);
