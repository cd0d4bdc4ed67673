/**
 * A simulated phone (glasses client) speaking the real /glasses-ws + UDP + REST protocol
 * (protocol.md §2). Used by tests, the demo and the load test; every timer and socket it opens
 * is owned here and released by dispose().
 */
import { EventEmitter } from "node:events";
import { createSocket, type Socket as UdpSocket } from "node:dgram";
import type { IncomingHttpHeaders } from "node:http";
import { performance } from "node:perf_hooks";
import WebSocket, { type RawData } from "ws";
import {
  CloseCode,
  UDP_HEADER_BYTES,
  UDP_KEY_BYTES,
  UDP_MAX_DATAGRAM_BYTES,
  UDP_NONCE_BYTES,
  UDP_TAG_BYTES,
  encodeAudioPacket,
  encodePingPacket,
  fnv1a32,
  readWav,
  type CloudToPhoneMessage,
  type ConnectionAck,
  type DisplayEvent,
  type PhoneGlassesConnectionState,
  type PhonePong,
  type PhoneUdpRegister,
} from "@mentra-cluster/protocol";
import { TimerSet } from "./timerSet.ts";
import { backoffDelay, type BackoffOptions } from "./backoff.ts";
import { pcmChunker } from "./pcmChunker.ts";

export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
export const DEFAULT_UDP_REGISTER_TIMEOUT_MS = 2_000;
export const DEFAULT_WAIT_FOR_TIMEOUT_MS = 5_000;
export const DEFAULT_GLASSES_MODEL = "Simulated Glasses";
export const UDP_PING_COUNT = 3;
export const UDP_PING_INTERVAL_MS = 200;
/** The phone retries a failed UDP registration every 5 s while its WebSocket is up (protocol.md §2.5). */
export const UDP_REGISTER_RETRY_MS = 5_000;
const CLOSE_HANDSHAKE_WAIT_MS = 2_000;
const MAX_REFUSAL_BODY_BYTES = 64 * 1024;
const ENCRYPTION_OVERHEAD_BYTES = UDP_NONCE_BYTES + UDP_TAG_BYTES;

export interface PhoneSimOptions {
  /** e.g. ws://127.0.0.1:PORT/glasses-ws (existing query parameters such as a route ticket are kept). */
  wsUrl: string;
  /** e.g. http://127.0.0.1:PORT (a path prefix such as /p/<podId> is kept). */
  restBase: string;
  /** Core token. */
  token: string;
  /** Lower-cased email; hashed with FNV-1a for the UDP header. */
  userId: string;
  /** Default "query" (`?token=`), like the current phone. */
  tokenVia?: "query" | "header";
  /** Adds `udpEncryption=true`; UDP audio is then sealed with the key from connection_ack. */
  udpEncryption?: boolean;
  /** Default true: answer `{"type":"ping"}` with `{"type":"pong"}`; false = legacy phone. */
  answerPings?: boolean;
  /** Reconnect after an unexpected close, exponential backoff with jitter. Default false. */
  reconnect?: false | BackoffOptions;
  /** Sent as glasses_connection_state CONNECTED after each connection_ack; null = glasses not connected. */
  glassesModel?: string | null;
  /** Cap on recorded messages and displays (oldest dropped). Default 10 000. */
  maxRecorded?: number;
  /** Randomness for backoff jitter; inject a seeded source for deterministic tests. */
  random?: () => number;
  /**
   * Called before every connection attempt (first connect and each reconnect) to learn where to
   * connect, e.g. by asking a gateway for the owning pod. Without it wsUrl/restBase never change.
   */
  resolveEndpoint?: () => Promise<{ wsUrl: string; restBase?: string }>;
}

export interface StreamOptions {
  /** Packet duration. Default 40 ms (1280 bytes at 16 kHz). */
  packetMs?: number;
  /** Repeat the clip until stop(). Default false. */
  loop?: boolean;
  /** Samples per second of the s16le mono PCM. Default 16 000 (streamWav: the file's rate). */
  sampleRate?: number;
}

export interface StreamResult {
  /** Packets handed to UDP or the WebSocket. */
  packets: number;
  /** Packets that fell due while the phone had no connection. */
  dropped: number;
}

export interface AudioStream {
  stop(): void;
  done: Promise<StreamResult>;
}

export interface CloseRecord {
  code: number;
  reason: string;
  at: number;
}

export interface RestResponse {
  status: number;
  body: any;
  headers: Headers;
}

export interface PhoneSimStats {
  pingsReceived: number;
  reconnects: number;
  udpPacketsSent: number;
  udpSendErrors: number;
  wsAudioFramesSent: number;
  /** Stream packets that fell due while the phone had no connection. */
  audioPacketsDropped: number;
  binaryFramesReceived: number;
  /** Text frames that were not JSON objects with a string `type`. */
  malformedReceived: number;
}

/** Typed event map. `message` carries every JSON message except `ping`, which only fires `ping`. */
export type PhoneSimEvents = {
  message: [CloudToPhoneMessage];
  display: [DisplayEvent];
  ack: [ConnectionAck];
  ping: [];
  close: [{ code: number; reason: string }];
  reconnected: [ConnectionAck];
  reconnect_error: [Error];
  udp_registered: [];
  udp_error: [Error];
};

/** The pod refused the WebSocket upgrade (e.g. 401 bad token, 503 draining). */
export class UpgradeRefusedError extends Error {
  override readonly name = "UpgradeRefusedError";
  constructor(
    readonly status: number,
    readonly body: unknown,
    readonly headers: IncomingHttpHeaders,
  ) {
    super(`WebSocket upgrade refused: HTTP ${status}${describeBody(body)}`);
  }
}

/** The socket closed after opening but before connection_ack arrived. */
export class ClosedBeforeAckError extends Error {
  override readonly name = "ClosedBeforeAckError";
  constructor(
    readonly code: number,
    readonly reason: string,
  ) {
    super(`WebSocket closed before connection_ack (code ${code}${reason ? `, "${reason}"` : ""})`);
  }
}

interface Connection {
  ws: WebSocket;
  opened: boolean;
  established: boolean;
}

interface Waiter {
  reject(err: Error): void;
}

export class PhoneSim extends EventEmitter<PhoneSimEvents> {
  private readonly opts: PhoneSimOptions;
  private readonly timers = new TimerSet();
  private readonly random: () => number;
  private readonly maxRecorded: number;
  private wsUrl: string;
  private restBase: string;

  private conn: Connection | null = null;
  private pendingAck: { conn: Connection; resolve(ack: ConnectionAck): void } | null = null;
  private connecting: Promise<ConnectionAck> | null = null;
  private connectTimeoutMs = DEFAULT_CONNECT_TIMEOUT_MS;
  private lastAck: ConnectionAck | null = null;
  /** Set by close()/destroy()/dispose(): no automatic reconnect until connect() is called again. */
  private stoppedByUser = false;
  private disposed = false;
  private disposing: Promise<void> | null = null;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private reconnectAttempt = 0;

  private udpSocket: UdpSocket | null = null;
  private key: Buffer | null = null;
  private sequence = 0;
  /** registerUdp() succeeded at least once, so it is redone after a reconnect. */
  private udpWanted = false;
  private udpIsRegistered = false;
  private udpRegistering: Promise<void> | null = null;
  private abortUdpRegistration: ((err: Error) => void) | null = null;

  private readonly streams = new Set<AudioStream>();
  private readonly waiters = new Set<Waiter>();

  private readonly receivedLog: CloudToPhoneMessage[] = [];
  private readonly displayLog: DisplayEvent[] = [];
  private readonly closeLog: CloseRecord[] = [];
  private readonly counters: PhoneSimStats = {
    pingsReceived: 0,
    reconnects: 0,
    udpPacketsSent: 0,
    udpSendErrors: 0,
    wsAudioFramesSent: 0,
    audioPacketsDropped: 0,
    binaryFramesReceived: 0,
    malformedReceived: 0,
  };

  constructor(opts: PhoneSimOptions) {
    super();
    this.opts = opts;
    this.wsUrl = opts.wsUrl;
    this.restBase = opts.restBase;
    this.random = opts.random ?? Math.random;
    this.maxRecorded = Math.max(1, opts.maxRecorded ?? 10_000);
    // Each pending waitFor/registerUdp holds a listener; tests may keep many at once.
    this.setMaxListeners(100);
  }

  // ---------- state ----------

  /** The most recent connection_ack (kept after a disconnect), or null before the first. */
  get ack(): ConnectionAck | null {
    return this.lastAck;
  }
  /** WebSocket open and connection_ack received on it. */
  get connected(): boolean {
    const c = this.conn;
    return !!c && c.established && c.ws.readyState === WebSocket.OPEN;
  }
  get received(): readonly CloudToPhoneMessage[] {
    return this.receivedLog;
  }
  get displays(): readonly DisplayEvent[] {
    return this.displayLog;
  }
  get closes(): readonly CloseRecord[] {
    return this.closeLog;
  }
  get pingsReceived(): number {
    return this.counters.pingsReceived;
  }
  get reconnects(): number {
    return this.counters.reconnects;
  }
  get stats(): Readonly<PhoneSimStats> {
    return { ...this.counters };
  }
  get userIdHash(): number {
    return fnv1a32(this.opts.userId);
  }
  /** UDP key from the latest connection_ack (null = plaintext). */
  get udpKey(): Buffer | null {
    return this.key;
  }
  get udpRegistered(): boolean {
    return this.udpIsRegistered && this.connected;
  }
  /** Sequence number the next audio datagram will carry. */
  get udpSequence(): number {
    return this.sequence;
  }

  // ---------- WebSocket ----------

  connect(timeoutMs = DEFAULT_CONNECT_TIMEOUT_MS): Promise<ConnectionAck> {
    if (this.disposed) return Promise.reject(new Error("PhoneSim is disposed"));
    if (this.connected && this.lastAck) return Promise.resolve(this.lastAck);
    if (this.connecting) return this.connecting;
    this.stoppedByUser = false;
    this.cancelReconnect();
    this.connectTimeoutMs = timeoutMs;
    const attempt = this.openSocket(timeoutMs).finally(() => {
      if (this.connecting === attempt) this.connecting = null;
    });
    this.connecting = attempt;
    return attempt;
  }

  send(msg: object): void {
    this.sendRaw(JSON.stringify(msg));
  }

  sendRaw(data: string | Buffer): void {
    const ws = this.conn?.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) throw new Error("PhoneSim: WebSocket is not open");
    ws.send(data, { binary: typeof data !== "string" });
  }

  /** Resolves on a matching message already received or arriving within timeoutMs. */
  waitFor<T = CloudToPhoneMessage>(predicate: (m: CloudToPhoneMessage) => boolean, timeoutMs = DEFAULT_WAIT_FOR_TIMEOUT_MS): Promise<T> {
    try {
      const hit = this.receivedLog.find(predicate);
      if (hit) return Promise.resolve(hit as T);
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.disposed) return Promise.reject(new Error("PhoneSim is disposed"));
    return new Promise<T>((resolve, reject) => {
      const cleanup = () => {
        this.timers.cancel(timer);
        this.off("message", onMessage);
        this.waiters.delete(waiter);
      };
      const waiter: Waiter = {
        reject: (err) => {
          cleanup();
          reject(err);
        },
      };
      const onMessage = (m: CloudToPhoneMessage) => {
        let matched: boolean;
        try {
          matched = predicate(m);
        } catch (err) {
          waiter.reject(err instanceof Error ? err : new Error(String(err)));
          return;
        }
        if (!matched) return;
        cleanup();
        resolve(m as T);
      };
      const timer = this.timers.after(timeoutMs, () => waiter.reject(new Error(`PhoneSim.waitFor timed out after ${timeoutMs} ms`)));
      this.on("message", onMessage);
      this.waiters.add(waiter);
    });
  }

  /** Clean close (default 1000); no automatic reconnect afterwards. */
  async close(code: number = CloseCode.NORMAL, reason = ""): Promise<void> {
    this.stoppedByUser = true;
    this.cancelReconnect();
    const ws = this.conn?.ws;
    if (ws) await this.closeSocket(ws, code, reason);
  }

  /** Drops the TCP connection without a close frame (dead phone); no automatic reconnect. */
  destroy(): void {
    this.stoppedByUser = true;
    this.cancelReconnect();
    this.conn?.ws.terminate();
  }

  /** Closes the WebSocket and the UDP socket, stops streams, rejects pending waits, clears timers. Idempotent. */
  dispose(): Promise<void> {
    if (this.disposing) return this.disposing;
    this.disposed = true;
    this.stoppedByUser = true;
    this.disposing = (async () => {
      this.timers.clearAll();
      this.reconnectTimer = null;
      for (const s of [...this.streams]) s.stop();
      const gone = new Error("PhoneSim is disposed");
      for (const w of [...this.waiters]) w.reject(gone);
      this.abortUdpRegistration?.(gone);
      const ws = this.conn?.ws;
      if (ws) await this.closeSocket(ws, CloseCode.NORMAL, "");
      const udp = this.udpSocket;
      this.udpSocket = null;
      if (udp) await new Promise<void>((resolve) => udp.close(() => resolve()));
      this.timers.clearAll();
    })();
    return this.disposing;
  }

  // ---------- UDP ----------

  /**
   * WS udp_register, then 3 UDP PINGs 200 ms apart to the ack's udpHost:udpPort; resolves on
   * udp_ping_ack. After success, audio streams go over UDP and registration is redone on reconnect.
   */
  registerUdp(timeoutMs = DEFAULT_UDP_REGISTER_TIMEOUT_MS): Promise<void> {
    if (this.udpRegistering) return this.udpRegistering;
    const conn = this.conn;
    const ack = this.lastAck;
    if (this.disposed) return Promise.reject(new Error("PhoneSim is disposed"));
    if (!conn || !this.connected || !ack) return Promise.reject(new Error("PhoneSim: not connected"));
    const target = udpTarget(ack);
    if (!target) return Promise.reject(new Error("connection_ack carries no udpHost/udpPort"));

    const registering = new Promise<void>((resolve, reject) => {
      const socket = this.ensureUdpSocket();
      const ping = encodePingPacket(this.userIdHash);
      let settled = false;
      const finish = (err?: Error) => {
        if (settled) return;
        settled = true;
        this.timers.cancel(timeout);
        this.off("message", onMessage);
        this.off("close", onClose);
        this.abortUdpRegistration = null;
        this.udpRegistering = null;
        if (err) return reject(err);
        this.udpWanted = true;
        this.udpIsRegistered = true;
        this.emit("udp_registered");
        resolve();
      };
      const onMessage = (m: CloudToPhoneMessage) => {
        if (m.type === "udp_ping_ack") finish();
      };
      const onClose = () => finish(new Error("WebSocket closed during UDP registration"));
      const timeout = this.timers.after(timeoutMs, () => finish(new Error(`no udp_ping_ack within ${timeoutMs} ms`)));
      this.on("message", onMessage);
      this.on("close", onClose);
      this.abortUdpRegistration = finish;

      this.send({ type: "udp_register", userIdHash: this.userIdHash } satisfies PhoneUdpRegister);
      // Like the phone, all three probes go out even if the ack comes back after the first.
      for (let i = 0; i < UDP_PING_COUNT; i++) {
        this.timers.after(i * UDP_PING_INTERVAL_MS, () => {
          if (this.conn === conn && this.udpSocket === socket) this.sendDatagram(ping, target);
        });
      }
    });
    this.udpRegistering = registering;
    return registering;
  }

  /**
   * One audio datagram to the ack's UDP endpoint: header (hash, seq) + payload, sealed when a key is
   * set (`opts.key` overrides it, e.g. to send with a stale key). Throws if it would exceed 1472 bytes.
   */
  sendUdpAudio(payload: Buffer, opts: { key?: Uint8Array | null } = {}): void {
    const target = this.lastAck ? udpTarget(this.lastAck) : null;
    if (!target) throw new Error("PhoneSim: no UDP endpoint (connect first; the ack must carry udpHost/udpPort)");
    const key = opts.key === undefined ? this.key : opts.key;
    const size = UDP_HEADER_BYTES + (key ? ENCRYPTION_OVERHEAD_BYTES : 0) + payload.length;
    if (size > UDP_MAX_DATAGRAM_BYTES) {
      throw new RangeError(`UDP datagram would be ${size} bytes (max ${UDP_MAX_DATAGRAM_BYTES}); payload ${payload.length} bytes is too large`);
    }
    const packet = encodeAudioPacket(this.userIdHash, this.sequence, payload, key ?? undefined);
    this.sequence = (this.sequence + 1) & 0xffff;
    this.ensureUdpSocket();
    this.sendDatagram(packet, target);
    this.counters.udpPacketsSent++;
  }

  // ---------- audio streaming ----------

  /**
   * Streams s16le mono PCM in real time: one packet every packetMs on a drift-free schedule
   * (each send is timed against the start, and packets that fell due during a stall go out at once,
   * as a phone's mic buffer would). Over UDP when registered, else as WS binary frames.
   */
  streamPcm(pcm: Buffer, opts: StreamOptions = {}): AudioStream {
    const packetMs = opts.packetMs ?? 40;
    const sampleRate = opts.sampleRate ?? 16_000;
    if (!(packetMs > 0) || !(sampleRate > 0)) throw new RangeError("packetMs and sampleRate must be positive");
    const bytesPerPacket = Math.round((sampleRate * packetMs) / 1000) * 2;
    const worstCase = UDP_HEADER_BYTES + ENCRYPTION_OVERHEAD_BYTES + bytesPerPacket;
    if (worstCase > UDP_MAX_DATAGRAM_BYTES) {
      throw new RangeError(`${packetMs} ms packets (${bytesPerPacket} bytes) would not fit a ${UDP_MAX_DATAGRAM_BYTES}-byte datagram`);
    }
    const next = pcmChunker(pcm, bytesPerPacket, opts.loop ?? false);
    const start = performance.now();
    let sent = 0;
    let dropped = 0;
    let timer: NodeJS.Timeout | null = null;
    let finished = false;
    let resolveDone!: (r: StreamResult) => void;
    const done = new Promise<StreamResult>((resolve) => (resolveDone = resolve));

    const finish = () => {
      if (finished) return;
      finished = true;
      this.timers.cancel(timer);
      timer = null;
      this.streams.delete(stream);
      resolveDone({ packets: sent, dropped });
    };
    const dueAt = () => start + (sent + dropped) * packetMs;
    const tick = () => {
      timer = null;
      const now = performance.now();
      while (!finished && dueAt() <= now) {
        const chunk = next();
        if (!chunk) return finish();
        if (this.sendAudioChunk(chunk)) sent++;
        else dropped++;
      }
      if (!finished) timer = this.timers.after(dueAt() - performance.now(), tick);
    };
    const stream: AudioStream = { stop: finish, done };
    this.streams.add(stream);
    timer = this.timers.after(0, tick);
    return stream;
  }

  /** streamPcm over a 16-bit mono WAV file; its sample rate is used unless opts.sampleRate is set. */
  streamWav(path: string, opts: StreamOptions = {}): AudioStream {
    const wav = readWav(path);
    if (wav.channels !== 1) throw new Error(`${path}: expected mono audio, got ${wav.channels} channels`);
    return this.streamPcm(wav.pcm, { sampleRate: wav.sampleRate, ...opts });
  }

  // ---------- REST ----------

  async rest(method: string, path: string, body?: unknown): Promise<RestResponse> {
    const headers: Record<string, string> = { authorization: `Bearer ${this.opts.token}` };
    if (body !== undefined) headers["content-type"] = "application/json";
    const url = this.restBase.replace(/\/+$/, "") + (path.startsWith("/") ? path : `/${path}`);
    const res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    return { status: res.status, body: parseBody(text), headers: res.headers };
  }

  startApp(pkg: string): Promise<RestResponse> {
    return this.rest("POST", `/apps/${encodeURIComponent(pkg)}/start`);
  }

  stopApp(pkg: string): Promise<RestResponse> {
    return this.rest("POST", `/apps/${encodeURIComponent(pkg)}/stop`);
  }

  listApps(): Promise<RestResponse> {
    return this.rest("GET", "/api/client/apps");
  }

  // ---------- internals ----------

  private async openSocket(timeoutMs: number): Promise<ConnectionAck> {
    if (this.opts.resolveEndpoint) {
      const endpoint = await this.opts.resolveEndpoint();
      this.wsUrl = endpoint.wsUrl;
      if (endpoint.restBase) this.restBase = endpoint.restBase;
    }
    if (this.disposed || this.stoppedByUser) throw new Error("PhoneSim was closed while connecting");

    return new Promise<ConnectionAck>((resolve, reject) => {
      const headers = this.opts.tokenVia === "header" ? { authorization: `Bearer ${this.opts.token}` } : undefined;
      const ws = new WebSocket(this.buildWsUrl(), { headers, handshakeTimeout: timeoutMs });
      const conn: Connection = { ws, opened: false, established: false };
      this.conn = conn;
      let settled = false;
      const fail = (err: Error) => {
        if (settled) return;
        settled = true;
        this.timers.cancel(timer);
        if (this.pendingAck?.conn === conn) this.pendingAck = null;
        if (ws.readyState !== WebSocket.CLOSED) ws.terminate();
        reject(err);
      };
      const timer = this.timers.after(timeoutMs, () => fail(new Error(`no connection_ack within ${timeoutMs} ms`)));
      this.pendingAck = {
        conn,
        resolve: (ack) => {
          if (settled) return;
          settled = true;
          this.timers.cancel(timer);
          this.pendingAck = null;
          resolve(ack);
        },
      };

      ws.on("unexpected-response", (_req, res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on("data", (chunk: Buffer) => {
          if (size >= MAX_REFUSAL_BODY_BYTES) return;
          chunks.push(chunk);
          size += chunk.length;
        });
        const refused = () => fail(new UpgradeRefusedError(res.statusCode ?? 0, parseBody(Buffer.concat(chunks).toString("utf8")), res.headers));
        res.once("end", refused);
        res.once("close", refused);
        res.once("error", refused);
      });
      ws.on("error", (err) => fail(err));
      ws.on("open", () => {
        conn.opened = true;
      });
      ws.on("message", (data, isBinary) => this.onWsMessage(conn, data, isBinary));
      ws.on("close", (code, reasonBuf) => {
        const reason = reasonBuf.toString("utf8");
        this.onWsClose(conn, code, reason);
        fail(new ClosedBeforeAckError(code, reason));
      });
    });
  }

  private buildWsUrl(): string {
    const url = new URL(this.wsUrl);
    if ((this.opts.tokenVia ?? "query") === "query") url.searchParams.set("token", this.opts.token);
    if (this.opts.udpEncryption) url.searchParams.set("udpEncryption", "true");
    return url.toString();
  }

  private onWsMessage(conn: Connection, data: RawData, isBinary: boolean): void {
    if (conn !== this.conn) return;
    if (isBinary) {
      this.counters.binaryFramesReceived++;
      return;
    }
    let msg: unknown;
    try {
      msg = JSON.parse(rawToString(data));
    } catch {
      this.counters.malformedReceived++;
      return;
    }
    if (!msg || typeof msg !== "object" || typeof (msg as { type?: unknown }).type !== "string") {
      this.counters.malformedReceived++;
      return;
    }
    const m = msg as CloudToPhoneMessage;
    if (m.type === "ping") {
      this.counters.pingsReceived++;
      if (this.opts.answerPings ?? true) this.sendOn(conn, { type: "pong" } satisfies PhonePong);
      this.emit("ping");
      return;
    }
    pushCapped(this.receivedLog, m, this.maxRecorded);
    if (m.type === "connection_ack") this.onAck(conn, m);
    else if (m.type === "display_event") {
      pushCapped(this.displayLog, m, this.maxRecorded);
      this.emit("display", m);
    }
    this.emit("message", m);
  }

  private onAck(conn: Connection, ack: ConnectionAck): void {
    this.lastAck = ack;
    this.key = null;
    const encoded = ack.udpEncryption?.key;
    if (encoded) {
      const key = Buffer.from(encoded, "base64");
      if (key.length === UDP_KEY_BYTES) this.key = key;
      else this.emit("udp_error", new Error(`connection_ack udpEncryption.key is ${key.length} bytes, expected ${UDP_KEY_BYTES}`));
    }
    const first = !conn.established;
    conn.established = true;
    const model = this.opts.glassesModel === undefined ? DEFAULT_GLASSES_MODEL : this.opts.glassesModel;
    if (first && model !== null) {
      this.sendOn(conn, { type: "glasses_connection_state", status: "CONNECTED", modelName: model } satisfies PhoneGlassesConnectionState);
    }
    this.emit("ack", ack);
    if (this.pendingAck?.conn === conn) this.pendingAck.resolve(ack);
  }

  private onWsClose(conn: Connection, code: number, reason: string): void {
    if (conn !== this.conn) return;
    this.conn = null;
    this.udpIsRegistered = false;
    if (conn.opened) {
      pushCapped(this.closeLog, { code, reason, at: Date.now() }, this.maxRecorded);
      this.emit("close", { code, reason });
    }
    // A socket replaced by a newer one for the same user must not fight it (protocol.md §2.4).
    if (conn.established && code !== CloseCode.REPLACED && this.mayReconnect()) this.scheduleReconnect();
  }

  private mayReconnect(): boolean {
    return !this.disposed && !this.stoppedByUser && !!this.opts.reconnect;
  }

  private scheduleReconnect(): void {
    const delay = backoffDelay(this.reconnectAttempt++, this.opts.reconnect || {}, this.random);
    this.reconnectTimer = this.timers.after(delay, () => {
      this.reconnectTimer = null;
      // Shared with connect() so a caller connecting mid-attempt joins it instead of opening a second socket.
      const attempt = this.openSocket(this.connectTimeoutMs).finally(() => {
        if (this.connecting === attempt) this.connecting = null;
      });
      this.connecting = attempt;
      attempt.then(
        (ack) => {
          this.reconnectAttempt = 0;
          this.counters.reconnects++;
          if (this.udpWanted) this.reregisterUdp();
          this.emit("reconnected", ack);
        },
        (err: Error) => {
          if (!this.mayReconnect()) return;
          this.emit("reconnect_error", err);
          this.scheduleReconnect();
        },
      );
    });
  }

  private cancelReconnect(): void {
    this.timers.cancel(this.reconnectTimer);
    this.reconnectTimer = null;
    this.reconnectAttempt = 0;
  }

  /** After a reconnect: register again (possibly with a new key), retrying every 5 s like the phone. */
  private reregisterUdp(): void {
    const conn = this.conn;
    this.registerUdp().catch((err: Error) => {
      this.emit("udp_error", err);
      if (!this.disposed && conn && this.conn === conn) this.timers.after(UDP_REGISTER_RETRY_MS, () => this.reregisterUdp());
    });
  }

  private sendAudioChunk(chunk: Buffer): boolean {
    if (!this.connected) {
      this.counters.audioPacketsDropped++;
      return false;
    }
    if (this.udpIsRegistered) {
      this.sendUdpAudio(chunk);
    } else {
      this.conn!.ws.send(chunk, { binary: true });
      this.counters.wsAudioFramesSent++;
    }
    return true;
  }

  private ensureUdpSocket(): UdpSocket {
    if (this.udpSocket) return this.udpSocket;
    const socket = createSocket("udp4");
    socket.on("error", (err) => {
      this.counters.udpSendErrors++;
      this.emit("udp_error", err);
    });
    this.udpSocket = socket;
    return socket;
  }

  private sendDatagram(packet: Buffer, target: { host: string; port: number }): void {
    this.udpSocket?.send(packet, target.port, target.host, (err) => {
      if (!err) return;
      this.counters.udpSendErrors++;
      this.emit("udp_error", err);
    });
  }

  private sendOn(conn: Connection, msg: object): void {
    if (conn.ws.readyState === WebSocket.OPEN) conn.ws.send(JSON.stringify(msg));
  }

  private closeSocket(ws: WebSocket, code: number, reason: string): Promise<void> {
    if (ws.readyState === WebSocket.CLOSED) return Promise.resolve();
    return new Promise<void>((resolve) => {
      // Without a close handshake reply within the wait, drop the TCP connection.
      const fallback = this.timers.after(CLOSE_HANDSHAKE_WAIT_MS, () => ws.terminate());
      ws.once("close", () => {
        this.timers.cancel(fallback);
        resolve();
      });
      if (ws.readyState === WebSocket.OPEN) {
        try {
          ws.close(code, reason);
        } catch {
          ws.terminate(); // invalid close code
        }
      } else if (ws.readyState === WebSocket.CONNECTING) {
        ws.terminate();
      }
    });
  }
}

function udpTarget(ack: ConnectionAck): { host: string; port: number } | null {
  return ack.udpHost && ack.udpPort ? { host: ack.udpHost, port: ack.udpPort } : null;
}

function pushCapped<T>(list: T[], item: T, max: number): void {
  list.push(item);
  if (list.length > max) list.splice(0, list.length - max);
}

function rawToString(data: RawData): string {
  if (Buffer.isBuffer(data)) return data.toString("utf8");
  if (Array.isArray(data)) return Buffer.concat(data).toString("utf8");
  return Buffer.from(data).toString("utf8");
}

function parseBody(text: string): unknown {
  if (text === "") return null;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function describeBody(body: unknown): string {
  if (body && typeof body === "object") {
    const b = body as { message?: unknown; error?: unknown };
    const detail = typeof b.message === "string" ? b.message : typeof b.error === "string" ? b.error : null;
    if (detail) return ` (${detail})`;
  }
  return typeof body === "string" && body ? ` (${body.slice(0, 200)})` : "";
}
