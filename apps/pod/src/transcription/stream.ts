/**
 * A streaming WebSocket transcription provider, shaped like the production vendors' (Soniox, Azure
 * streaming): one WebSocket per transcribing user stream, PCM binary frames out, JSON results in.
 *
 * Wire protocol (what `apps/loadtest/src/stt-emulator.ts` serves):
 *   connect   <STT_URL>?language=en-US&sample_rate=16000&encoding=pcm_s16le  (optional bearer key)
 *   client →  binary frames: PCM s16le mono 16 kHz, as written
 *   server →  {"type":"result","text","isFinal","utteranceId"?,"speakerId"?,"startMs","endMs"}
 *             times in ms of audio since the start of *this connection's* audio
 *             {"type":"error","message","fatal"?}   fatal = the stream cannot go on
 *
 * Failure handling:
 * - A drop or a failed connect is transient: the stream reconnects with exponential backoff and
 *   jitter, keeping up to maxBufferedMs of audio meanwhile (oldest dropped, counted), and tells
 *   `onTransientError` (the pod wires it to logs and metrics). Audio times stay continuous across
 *   connections (each connection's offsets are shifted by the audio that went before).
 * - `onError` fires once, for what will not heal by retrying: a refused handshake (HTTP 4xx), a
 *   policy close (1008, 4000–4099), a fatal error message, or maxAttempts failed connects in a row.
 *   The session then closes the stream (and opens a new one on later audio).
 * - close() is final: the pending reconnect is cancelled and no connection is opened afterwards
 *   (failure case C11); a socket that finishes connecting after close() is closed at once and
 *   nothing rejects (C13: this file holds no promises at all). No callback fires after close().
 */
import WebSocket, { type RawData } from "ws";
import type { TranscriptionData } from "@mentra-cluster/protocol";
import type { TranscriptionProvider, TranscriptionStream, TranscriptionStreamOptions } from "./provider.ts";

const BYTES_PER_MS = 32; // 16 kHz × 2 bytes
const CLOSE_WAIT_MS = 2000;
/**
 * Default audio per STT frame. Streaming vendors recommend ~100 ms chunks (a latency/efficiency
 * trade-off); with 40 ms phone packets that is one socket write per 3 packets instead of one per
 * packet, which the load test measured as the largest single cost of a transcribing user.
 */
export const DEFAULT_STT_FRAME_MS = 100;

export interface StreamProviderOptions {
  /** ws:// or wss:// base URL of the STT service (STT_URL). */
  url: string;
  /** Sent as `Authorization: Bearer <apiKey>` when set (STT_API_KEY). */
  apiKey?: string;
  /** Provider name in results and metrics. Default "stream". */
  name?: string;
  /** A connect that has not opened by then is abandoned and retried. Default 5000 ms. */
  connectTimeoutMs?: number;
  /** Reconnect backoff: base·2^attempt capped at max, ×(1 ± jitter). Default 250 ms, 5000 ms, 0.2. */
  backoff?: { baseMs?: number; maxMs?: number; jitter?: number };
  /** Failed connects in a row before the stream gives up with onError. Default 8. */
  maxAttempts?: number;
  /** Audio kept while disconnected; older audio is dropped (and counted). Default 5000 ms. */
  maxBufferedMs?: number;
  /** Frames are dropped while the socket's send buffer is above this (a stalled STT). Default 1 MiB. */
  maxSocketBufferedBytes?: number;
  /**
   * Coalesce audio into frames of at least this many ms before sending (0 = one frame per write,
   * i.e. per 40 ms phone packet). Each frame is a socket write, the pod's main per-user cost on
   * this path. A frame that has not filled within frameMs (the mic went quiet) is sent as it is.
   * Default 100 (DEFAULT_STT_FRAME_MS).
   */
  frameMs?: number;
  /**
   * Client frames must be masked (RFC 6455). "random" masks every frame with fresh random bytes,
   * which copies and XORs every PCM byte in JavaScript; "zero" sends the all-zero masking key, which
   * the protocol's framing allows and every server unmasks the same way, so the PCM goes out as is.
   * The random key protects browsers behind caching proxies, not a server talking to its STT
   * vendor. Default "zero" (measured: about half of the pod's CPU for this socket).
   */
  mask?: "zero" | "random";
  /** Transient failures the stream recovers from by itself. */
  onTransientError?: (err: Error) => void;
  /**
   * Audio dropped instead of sent: "stt_backlog" (the socket's send buffer was full) or
   * "stt_disconnected" (more than maxBufferedMs piled up while reconnecting). The pod counts it.
   */
  onAudioDropped?: (reason: "stt_backlog" | "stt_disconnected", bytes: number) => void;
  /** Randomness for the jitter (inject a seeded one in tests). */
  random?: () => number;
}

/** Provider-wide counters (all streams): for tests, metrics and the load test's report. */
export interface StreamProviderStats {
  streamsOpen: number;
  connectAttempts: number;
  connectsOpened: number;
  reconnectsScheduled: number;
  transientErrors: number;
  fatalErrors: number;
  resultsIn: number;
  framesOut: number;
  bytesOut: number;
  droppedBytes: number;
}

export class StreamTranscriptionProvider implements TranscriptionProvider {
  readonly name: string;
  readonly stats: StreamProviderStats = {
    streamsOpen: 0,
    connectAttempts: 0,
    connectsOpened: 0,
    reconnectsScheduled: 0,
    transientErrors: 0,
    fatalErrors: 0,
    resultsIn: 0,
    framesOut: 0,
    bytesOut: 0,
    droppedBytes: 0,
  };

  readonly frameMs: number;
  /** Streams holding a part-filled frame, with when its first chunk arrived (performance.now()). */
  private readonly partials = new Map<WsTranscriptionStream, number>();
  private sweepTimer: NodeJS.Timeout | null = null;

  constructor(readonly opts: StreamProviderOptions) {
    let url: URL | null = null;
    try {
      url = new URL(opts.url);
    } catch {
      url = null;
    }
    // The URL may carry a key in its query: errors name only its scheme and host.
    if (!url || (url.protocol !== "ws:" && url.protocol !== "wss:") || !url.hostname) {
      throw new Error(`STT_URL must be a ws:// or wss:// URL with a host, got ${url ? `${url.protocol}//${url.host}…` : "something that is not a URL"}`);
    }
    this.name = opts.name ?? "stream";
    const frameMs = opts.frameMs ?? DEFAULT_STT_FRAME_MS;
    if (!(Number.isFinite(frameMs) && frameMs >= 0 && frameMs <= 1000)) throw new Error(`STT frame must be 0–1000 ms, got ${frameMs}`);
    this.frameMs = Math.round(frameMs);
  }

  /** @internal a stream started a frame; one provider-wide timer sends frames that go stale. */
  partialStarted(s: WsTranscriptionStream): void {
    this.partials.set(s, performance.now());
    if (this.sweepTimer) return;
    this.sweepTimer = setInterval(() => {
      const now = performance.now();
      for (const [stream, since] of this.partials) {
        if (now - since >= this.frameMs) stream.flushPartial();
      }
      if (this.partials.size === 0 && this.sweepTimer) {
        clearInterval(this.sweepTimer);
        this.sweepTimer = null;
      }
    }, Math.max(10, this.frameMs));
    this.sweepTimer.unref();
  }

  /** @internal the stream's frame was sent or discarded. */
  partialEnded(s: WsTranscriptionStream): void {
    this.partials.delete(s);
  }

  /** @internal */
  dropped(reason: "stt_backlog" | "stt_disconnected", bytes: number): void {
    this.stats.droppedBytes += bytes;
    try {
      this.opts.onAudioDropped?.(reason, bytes);
    } catch {
      // a failing hook must not break the stream
    }
  }

  createStream(o: TranscriptionStreamOptions): TranscriptionStream {
    return new WsTranscriptionStream(this, o);
  }
}

export class WsTranscriptionStream implements TranscriptionStream {
  closed = false;
  private ws: WebSocket | null = null;
  private connectTimer: NodeJS.Timeout | null = null;
  private reconnectTimer: NodeJS.Timeout | null = null;
  /** Failed connects since the last open. */
  private failures = 0;
  /** Connections opened so far; results of later ones get a prefixed utteranceId. */
  private generation = 0;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Audio bytes written (sent, pending or dropped): the stream's audio clock. */
  private bytesWritten = 0;
  /** Audio before the current connection's first byte, in ms (its result offsets start there). */
  private connBaseMs = 0;
  private readonly url: string;
  private readonly maxPendingBytes: number;
  private readonly frameBytes: number;
  /** Audio waiting to fill a frame (frameMs > 0), sent as one frame once full. */
  private partial: Buffer[] = [];
  private partialBytes = 0;

  constructor(
    private readonly p: StreamTranscriptionProvider,
    private readonly o: TranscriptionStreamOptions,
  ) {
    const url = new URL(p.opts.url);
    url.searchParams.set("language", o.language);
    url.searchParams.set("sample_rate", "16000");
    url.searchParams.set("encoding", "pcm_s16le");
    this.url = url.toString();
    this.maxPendingBytes = Math.max(0, p.opts.maxBufferedMs ?? 5000) * BYTES_PER_MS;
    this.frameBytes = p.frameMs * BYTES_PER_MS;
    p.stats.streamsOpen++;
    this.connect();
  }

  get bufferedBytes(): number {
    return this.pendingBytes + this.partialBytes + (this.ws?.bufferedAmount ?? 0);
  }

  write(chunk: Buffer): void {
    if (this.closed || chunk.length === 0) return;
    this.bytesWritten += chunk.length;
    if (this.frameBytes > 0) {
      if (this.partialBytes === 0) this.p.partialStarted(this);
      this.partial.push(chunk);
      this.partialBytes += chunk.length;
      if (this.partialBytes >= this.frameBytes) this.flushPartial();
      return;
    }
    this.sendOrQueue(chunk);
  }

  /** Sends the part-filled frame now (it is full, or it went stale while the mic was quiet). */
  flushPartial(): void {
    this.p.partialEnded(this);
    if (this.partialBytes === 0) return;
    const pcm = this.partial.length === 1 ? this.partial[0]! : Buffer.concat(this.partial, this.partialBytes);
    this.partial = [];
    this.partialBytes = 0;
    this.sendOrQueue(pcm);
  }

  private sendOrQueue(pcm: Buffer): void {
    const ws = this.ws;
    if (ws && ws.readyState === WebSocket.OPEN) {
      if (ws.bufferedAmount > (this.p.opts.maxSocketBufferedBytes ?? 1024 * 1024)) {
        this.p.dropped("stt_backlog", pcm.length);
        return;
      }
      this.send(ws, pcm);
      return;
    }
    this.pending.push(pcm);
    this.pendingBytes += pcm.length;
    while (this.pendingBytes > this.maxPendingBytes && this.pending.length > 0) {
      const old = this.pending.shift()!;
      this.pendingBytes -= old.length;
      this.p.dropped("stt_disconnected", old.length);
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.p.stats.streamsOpen--;
    this.clearTimer("connectTimer");
    this.clearTimer("reconnectTimer");
    this.pending = [];
    this.pendingBytes = 0;
    this.partial = [];
    this.partialBytes = 0;
    this.p.partialEnded(this);
    const ws = this.ws;
    this.ws = null;
    if (ws) this.shut(ws);
  }

  // ---------- internals ----------

  private connect(): void {
    if (this.closed) return; // C11: nothing opens after close()
    this.p.stats.connectAttempts++;
    const headers = this.p.opts.apiKey ? { authorization: `Bearer ${this.p.opts.apiKey}` } : undefined;
    let ws: WebSocket;
    try {
      ws = new WebSocket(this.url, { headers, perMessageDeflate: false, ...((this.p.opts.mask ?? "zero") === "zero" ? { generateMask: leaveZero } : {}) });
    } catch (err) {
      // A malformed URL throws synchronously; retrying will not fix it.
      this.fatal(err instanceof Error ? err : new Error(String(err)));
      return;
    }
    this.ws = ws;
    let refusedStatus = 0;
    let lastError: Error | null = null;
    // Every socket keeps an error listener for life, so a late error can never crash the process.
    ws.on("error", (err) => (lastError ??= err));
    ws.on("unexpected-response", (_req, res) => {
      refusedStatus = res.statusCode ?? 0;
      res.resume();
      ws.terminate(); // aborts the request; "error" and "close" follow
    });
    this.connectTimer = setTimeout(() => {
      this.connectTimer = null;
      lastError = new Error(`STT connect timed out after ${this.p.opts.connectTimeoutMs ?? 5000} ms`);
      ws.terminate();
    }, this.p.opts.connectTimeoutMs ?? 5000);
    this.connectTimer.unref();
    ws.on("open", () => {
      if (this.closed || this.ws !== ws) {
        // C13: finished connecting after close(): close it at once, report nothing.
        this.shut(ws);
        return;
      }
      this.clearTimer("connectTimer");
      this.failures = 0;
      this.generation++;
      this.p.stats.connectsOpened++;
      this.connBaseMs = (this.bytesWritten - this.pendingBytes - this.partialBytes) / BYTES_PER_MS;
      const queued = this.pending;
      this.pending = [];
      this.pendingBytes = 0;
      for (const b of queued) this.send(ws, b);
    });
    ws.on("message", (data, isBinary) => {
      if (this.closed || this.ws !== ws || isBinary) return;
      this.onMessage(data);
    });
    ws.on("close", (code, reasonBuf) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.clearTimer("connectTimer");
      if (this.closed) return;
      const reason = reasonBuf.toString();
      if (refusedStatus >= 400 && refusedStatus < 500 && refusedStatus !== 408 && refusedStatus !== 429) {
        this.fatal(new Error(`STT refused the connection: HTTP ${refusedStatus}`));
      } else if (code === 1008 || (code >= 4000 && code < 4100)) {
        this.fatal(new Error(`STT closed the stream: ${code}${reason ? ` ${reason}` : ""}`));
      } else {
        const what = refusedStatus ? `HTTP ${refusedStatus}` : lastError ? lastError.message : `closed ${code}${reason ? ` ${reason}` : ""}`;
        this.transient(new Error(`STT connection lost (${what})`));
      }
    });
  }

  private onMessage(data: RawData): void {
    let msg: { type?: unknown; [k: string]: unknown };
    try {
      msg = JSON.parse(rawToString(data));
    } catch {
      this.report(new Error("STT sent a frame that is not JSON"));
      return;
    }
    if (msg?.type === "result") {
      if (typeof msg.text !== "string") return this.report(new Error("STT result without text"));
      this.p.stats.resultsIn++;
      const startMs = this.connBaseMs + num(msg.startMs);
      const endMs = this.connBaseMs + num(msg.endMs, num(msg.startMs));
      const id = typeof msg.utteranceId === "string" || typeof msg.utteranceId === "number" ? String(msg.utteranceId) : undefined;
      const result: TranscriptionData = {
        type: "transcription",
        text: msg.text,
        isFinal: msg.isFinal === true,
        ...(id !== undefined ? { utteranceId: this.generation > 1 ? `c${this.generation}-${id}` : id } : {}),
        speakerId: typeof msg.speakerId === "string" ? msg.speakerId : "0",
        startTime: Math.round(this.o.startEpochMs + startMs),
        endTime: Math.round(this.o.startEpochMs + endMs),
        transcribeLanguage: this.o.language,
        provider: this.p.name,
      };
      try {
        this.o.onResult(result);
      } catch (err) {
        this.report(err instanceof Error ? err : new Error(String(err)));
      }
    } else if (msg?.type === "error") {
      const err = new Error(`STT error: ${typeof msg.message === "string" ? msg.message : "unknown"}`);
      if (msg.fatal === true) this.fatal(err);
      else this.report(err);
    }
    // Other message types (e.g. a vendor's keep-alives) are ignored.
  }

  private send(ws: WebSocket, pcm: Buffer): void {
    this.p.stats.framesOut++;
    this.p.stats.bytesOut += pcm.length;
    ws.send(pcm, { binary: true });
  }

  /** A problem the stream survives: counted and reported, never onError. */
  private report(err: Error): void {
    this.p.stats.transientErrors++;
    try {
      this.p.opts.onTransientError?.(err);
    } catch {
      // the hook's own failure must not break the stream
    }
  }

  private transient(err: Error): void {
    this.report(err);
    this.failures++;
    const max = this.p.opts.maxAttempts ?? 8;
    if (this.failures >= max) {
      this.fatal(new Error(`STT unreachable after ${this.failures} attempts: ${err.message}`));
      return;
    }
    const b = this.p.opts.backoff ?? {};
    const base = b.baseMs ?? 250;
    const cap = b.maxMs ?? 5000;
    const jitter = b.jitter ?? 0.2;
    const rnd = this.p.opts.random ?? Math.random;
    const delay = Math.round(Math.min(cap, base * 2 ** (this.failures - 1)) * (1 + jitter * (2 * rnd() - 1)));
    this.p.stats.reconnectsScheduled++;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.connect();
    }, Math.max(0, delay));
    this.reconnectTimer.unref();
  }

  /** The stream cannot go on: onError once; the owner closes it. */
  private fatal(err: Error): void {
    if (this.closed) return;
    this.p.stats.fatalErrors++;
    this.clearTimer("reconnectTimer");
    const ws = this.ws;
    this.ws = null;
    if (ws) this.shut(ws);
    try {
      this.o.onError(err);
    } catch {
      // an owner's failing handler must not break the provider
    }
  }

  /** Closes a socket in any state; one that does not finish the close handshake is dropped. */
  private shut(ws: WebSocket): void {
    if (ws.readyState === WebSocket.OPEN) {
      ws.close(1000, "end of stream");
      const t = setTimeout(() => ws.terminate(), CLOSE_WAIT_MS);
      t.unref();
      ws.once("close", () => clearTimeout(t));
    } else if (ws.readyState === WebSocket.CONNECTING) {
      ws.terminate();
    }
  }

  private clearTimer(which: "connectTimer" | "reconnectTimer"): void {
    const t = this[which];
    if (t) clearTimeout(t);
    this[which] = null;
  }
}

/** ws's mask hook: leaving the key all zeros makes ws skip the per-byte XOR and the copy. */
function leaveZero(): void {}

function num(v: unknown, d = 0): number {
  return typeof v === "number" && Number.isFinite(v) ? v : d;
}

function rawToString(data: RawData): string {
  if (Buffer.isBuffer(data)) return data.toString("utf8");
  if (Array.isArray(data)) return Buffer.concat(data).toString("utf8");
  return Buffer.from(data).toString("utf8");
}

/**
 * The provider the environment selects: TRANSCRIPTION_PROVIDER=stream with STT_URL (and optional
 * STT_API_KEY, STT_FRAME_MS) → this streaming provider; anything else → null (the caller keeps the default
 * in-process energy provider).
 */
export function streamProviderFromEnv(env: NodeJS.ProcessEnv, hooks: Pick<StreamProviderOptions, "onTransientError" | "onAudioDropped"> = {}): StreamTranscriptionProvider | null {
  const kind = (env.TRANSCRIPTION_PROVIDER ?? "").trim().toLowerCase();
  if (kind === "" || kind === "energy") return null;
  if (kind !== "stream") throw new Error(`TRANSCRIPTION_PROVIDER must be "energy" or "stream", got ${JSON.stringify(env.TRANSCRIPTION_PROVIDER)}`);
  if (!env.STT_URL) throw new Error("TRANSCRIPTION_PROVIDER=stream needs STT_URL (ws://host:port)");
  const frameMs = env.STT_FRAME_MS ? Number(env.STT_FRAME_MS) : undefined;
  if (frameMs !== undefined && !(Number.isFinite(frameMs) && frameMs >= 0 && frameMs <= 1000)) throw new Error(`STT_FRAME_MS must be a number of ms from 0 to 1000, got ${JSON.stringify(env.STT_FRAME_MS)}`);
  return new StreamTranscriptionProvider({ url: env.STT_URL, apiKey: env.STT_API_KEY || undefined, frameMs, ...hooks });
}
