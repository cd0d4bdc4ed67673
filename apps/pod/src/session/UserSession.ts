/**
 * One user's in-memory session on this pod: the phone socket, UDP audio, apps, subscriptions,
 * display, microphone and transcription. Every timer and stream it starts is released by dispose().
 */
import type { WebSocket } from "ws";
import {
  CloseCode,
  fnv1a32,
  generateUdpKey,
  nowIso,
  RELAYED_PHONE_TYPES,
  UDP_ENCRYPTION_ALGORITHM,
  type ConnectionAck,
  type DisplayEvent,
  type TranscriptionData,
} from "@mentra-cluster/protocol";
import type { PodContext } from "../context.ts";
import type { TimerId } from "../util/clock.ts";
import type { TranscriptionStream } from "../transcription/provider.ts";
import { ReorderBuffer } from "../udp/reorder.ts";
import type { UdpTarget } from "../udp/UdpAudioServer.ts";
import { AppManager } from "./AppManager.ts";
import { DisplayManager } from "./DisplayManager.ts";
import { MicrophoneManager } from "./MicrophoneManager.ts";
import { safeClose, sendJson } from "./send.ts";
import { SubscriptionManager } from "./SubscriptionManager.ts";

const RELAYED = new Set<string>(RELAYED_PHONE_TYPES);

export interface DeviceState {
  isGlassesConnected: boolean;
  isPhoneConnected: boolean;
  modelName: string | null;
  capabilities: unknown | null;
  wifi?: { connected: boolean; ssid?: string };
}

export type DropFn = (reason: string) => void;

export class UserSession implements UdpTarget {
  readonly createdAt: number;
  ws: WebSocket | null = null;
  wsOpenedAt = 0;
  disconnectedAt: number | null = null;
  lastPhoneMessageAt = 0;
  udpKey: Buffer | null = null;
  udpHash: number | null = null;
  readonly reorder = new ReorderBuffer();
  audioFormat: "pcm" = "pcm";
  readonly device: DeviceState = { isGlassesConnected: false, isPhoneConnected: false, modelName: null, capabilities: null };
  readonly subscriptions = new SubscriptionManager();
  readonly apps: AppManager;
  readonly display: DisplayManager;
  readonly mic: MicrophoneManager;
  private readonly streams = new Map<string, TranscriptionStream>();
  /** Per language: failed streams in a row and when a new one may open (after a fatal provider error). */
  private readonly streamBackoff = new Map<string, { failures: number; retryAt: number }>();
  private pcmCarry: Buffer | null = null;
  private pingTimer: TimerId | null = null;
  private graceTimer: TimerId | null = null;
  disposed = false;
  audioBytesIn = 0;
  transcriptsOut = 0;
  reconnects = 0;
  /** Assignment epoch under which this pod holds the user (cluster mode). */
  epoch: number | null = null;

  constructor(
    private readonly ctx: PodContext,
    readonly userId: string,
    private readonly onDisposed: (s: UserSession, reason: string) => void,
  ) {
    this.createdAt = ctx.clock.now();
    this.apps = new AppManager(ctx, this);
    this.display = new DisplayManager(ctx.clock, {
      canDisplay: () => this.phoneConnected && (this.device.isGlassesConnected || this.device.modelName === "Simulated Glasses"),
      sendDisplay: (ev: DisplayEvent) => this.sendToPhone(ev),
    }, ctx.timings.displayThrottleMs, ctx.timings.bootWindowMs);
    this.mic = new MicrophoneManager(ctx.clock, {
      needsAudio: () => this.subscriptions.needsAudio(),
      sendMicState: (enabled) =>
        this.sendToPhone({
          type: "microphone_state_change",
          sessionId: this.userId,
          isMicrophoneEnabled: enabled,
          requiredData: enabled ? ["pcm"] : [],
          bypassVad: false,
          timestamp: nowIso(this.ctx.clock.now()),
        }),
    });
  }

  get phoneConnected(): boolean {
    return !!this.ws && this.ws.readyState === 1;
  }

  /** Attaches a (new or replacing) phone socket. The replaced socket is closed and its close ignored. */
  attach(ws: WebSocket, opts: { udpEncryption: boolean }): void {
    const old = this.ws;
    const isReconnect = old !== null || this.disconnectedAt !== null;
    this.ws = ws;
    this.wsOpenedAt = this.ctx.clock.now();
    this.lastPhoneMessageAt = this.wsOpenedAt;
    this.disconnectedAt = null;
    this.device.isPhoneConnected = true;
    this.ctx.clock.clearTimeout(this.graceTimer);
    this.graceTimer = null;
    if (old && old !== ws) safeClose(old, CloseCode.REPLACED, "Replaced by a newer connection");
    // A new key on every connection: packets sealed with the old key are refused (C25).
    this.udpKey = opts.udpEncryption ? generateUdpKey() : null;
    this.ctx.clock.clearInterval(this.pingTimer);
    this.pingTimer = this.ctx.clock.setInterval(() => this.sendToPhone({ type: "ping" }), this.ctx.timings.phonePingMs);
    // The user's own hash is registered at connect: UDP PINGs often overtake the udp_register
    // message (they skip the WebSocket path), and must not be dropped as unknown.
    if (this.udpHash === null) {
      const own = fnv1a32(this.userId);
      if (this.ctx.udp.register(own, this) === "ok") this.udpHash = own;
    }
    if (isReconnect) {
      this.reconnects++;
      this.ctx.metrics.phoneReconnect();
      this.mic.onReconnect();
    }
  }

  ackMessage(): ConnectionAck {
    const udp = this.ctx.udpEndpoint();
    return {
      type: "connection_ack",
      sessionId: this.userId,
      timestamp: nowIso(this.ctx.clock.now()),
      env: this.ctx.env,
      podId: this.ctx.podId,
      ...(udp ? { udpHost: udp.host, udpPort: udp.port } : {}),
      ...(this.udpKey ? { udpEncryption: { key: this.udpKey.toString("base64"), algorithm: UDP_ENCRYPTION_ALGORITHM } } : {}),
    };
  }

  sendToPhone(msg: object): boolean {
    if (!sendJson(this.ws, msg)) return false;
    this.ctx.metrics.wsClientOut();
    return true;
  }

  sendAppStateChange(): void {
    this.sendToPhone({ type: "app_state_change", sessionId: this.userId, timestamp: nowIso(this.ctx.clock.now()) });
  }

  /** The phone socket closed. Only the current socket's close starts the grace period (C4). */
  onPhoneClose(ws: WebSocket): boolean {
    if (this.ws !== ws || this.disposed) return false;
    this.ws = null;
    this.device.isPhoneConnected = false;
    this.disconnectedAt = this.ctx.clock.now();
    this.ctx.clock.clearInterval(this.pingTimer);
    this.pingTimer = null;
    // No provider socket idles through the grace period: the next audio opens a fresh stream, whose
    // result times start from that audio (a kept stream would date them by audio received only).
    for (const st of this.streams.values()) st.close();
    this.streams.clear();
    this.graceTimer = this.ctx.clock.setTimeout(() => {
      this.graceTimer = null;
      if (!this.ws) this.dispose("grace_expired");
    }, this.ctx.timings.phoneGraceMs);
    return true;
  }

  // ---------- phone messages ----------

  /** Handles one parsed phone message; returns a drop reason when it was not acted on. */
  handlePhoneMessage(msg: Record<string, unknown>): string | null {
    this.lastPhoneMessageAt = this.ctx.clock.now();
    const type = msg.type;
    switch (type) {
      case "pong":
        return null;
      case "ping":
        this.sendToPhone({ type: "pong", timestamp: this.ctx.clock.now() });
        return null;
      case "connection_init":
        this.sendToPhone(this.ackMessage());
        return null;
      case "start_app":
      case "stop_app": {
        if (typeof msg.packageName !== "string" || !msg.packageName) return "invalid_field";
        if (type === "start_app") void this.apps.startApp(msg.packageName);
        else void this.apps.stopApp(msg.packageName);
        return null;
      }
      case "glasses_connection_state": {
        const status = msg.status;
        if (status !== "CONNECTED" && status !== "RECONNECTED" && status !== "DISCONNECTED") return "invalid_field";
        this.device.isGlassesConnected = status !== "DISCONNECTED";
        if (typeof msg.modelName === "string") this.device.modelName = msg.modelName;
        if (msg.wifi && typeof msg.wifi === "object") {
          const w = msg.wifi as Record<string, unknown>;
          this.device.wifi = { connected: w.connected === true, ...(typeof w.ssid === "string" ? { ssid: w.ssid.slice(0, 64) } : {}) };
        }
        this.relay("glasses_connection_state", msg);
        this.pushDeviceState();
        if (this.device.isGlassesConnected) this.display.flush();
        return null;
      }
      case "VAD": {
        const s = msg.status;
        if (typeof s !== "boolean" && s !== "true" && s !== "false") return "invalid_field";
        this.relay("VAD", { ...msg, status: s === true || s === "true" });
        return null;
      }
      case "local_transcription": {
        if (typeof msg.text !== "string" || typeof msg.isFinal !== "boolean") return "invalid_field";
        const lang = typeof msg.transcribeLanguage === "string" && msg.transcribeLanguage ? msg.transcribeLanguage : "en-US";
        const now = this.ctx.clock.now();
        this.fanOutTranscription(lang, {
          type: "transcription",
          text: msg.text,
          isFinal: msg.isFinal,
          startTime: typeof msg.startTime === "number" ? msg.startTime : now,
          endTime: typeof msg.endTime === "number" ? msg.endTime : now,
          transcribeLanguage: lang,
          ...(typeof msg.speakerId === "string" ? { speakerId: msg.speakerId } : {}),
          provider: typeof msg.provider === "string" ? msg.provider : "local",
        });
        return null;
      }
      case "udp_register":
        return this.registerUdp(msg.userIdHash);
      case "udp_unregister":
        this.unregisterUdp();
        return null;
      default:
        if (typeof type === "string" && RELAYED.has(type)) {
          this.relay(type, msg);
          if (type === "touch_event" && typeof msg.gesture_name === "string") this.relay(`touch_event:${msg.gesture_name}`, msg);
          return null;
        }
        return typeof type === "string" ? "unknown_type" : "missing_type";
    }
  }

  private relay(stream: string, data: unknown): void {
    for (const [pkg, sub] of this.subscriptions.targets(stream)) this.apps.sendDataStream(pkg, sub, data);
  }

  private pushDeviceState(): void {
    const state = { connected: this.device.isGlassesConnected, modelName: this.device.modelName, wifi: this.device.wifi };
    for (const a of this.apps.apps.values()) {
      this.apps.sendToApp(a, { type: "device_state_update", state, fullSnapshot: false, timestamp: nowIso(this.ctx.clock.now()) });
    }
  }

  /** REST /api/client/device/state: a `modelName` means glasses are connected. */
  applyDeviceState(patch: Record<string, unknown>): DeviceState {
    if (typeof patch.modelName === "string" && patch.modelName) {
      this.device.modelName = patch.modelName;
      this.device.isGlassesConnected = true;
    }
    if (typeof patch.isGlassesConnected === "boolean") this.device.isGlassesConnected = patch.isGlassesConnected;
    if (patch.capabilities !== undefined) this.device.capabilities = patch.capabilities;
    this.pushDeviceState();
    if (this.device.isGlassesConnected) this.display.flush();
    return { ...this.device };
  }

  // ---------- UDP ----------

  private registerUdp(hash: unknown): string | null {
    if (typeof hash !== "number" || !Number.isInteger(hash) || hash < 0 || hash > 0xffffffff) return "invalid_field";
    if (hash !== fnv1a32(this.userId)) {
      this.sendToPhone({ type: "udp_register_error", code: "HASH_MISMATCH", message: "userIdHash is not FNV-1a of this user's id", timestamp: nowIso(this.ctx.clock.now()) });
      return "udp_hash_mismatch";
    }
    if (this.ctx.udp.register(hash, this) === "collision") {
      this.ctx.log.warn({ userId: this.userId, hash }, "udp hash collision: registration refused, phone stays on WebSocket audio");
      this.sendToPhone({ type: "udp_register_error", code: "HASH_COLLISION", message: "UDP hash already registered by another user; use WebSocket audio", timestamp: nowIso(this.ctx.clock.now()) });
      return "udp_hash_collision";
    }
    // A (re)registration starts a new packet stream: the phone's sequence may restart at 0.
    for (const chunk of this.reorder.flush()) this.handleAudio(chunk, "udp");
    this.udpHash = hash;
    return null;
  }

  private unregisterUdp(): void {
    if (this.udpHash === null) return;
    this.ctx.udp.unregister(this.udpHash, this);
    this.udpHash = null;
    for (const chunk of this.reorder.flush()) this.handleAudio(chunk, "udp");
  }

  onUdpPing(): void {
    this.sendToPhone({ type: "udp_ping_ack", timestamp: this.ctx.clock.now() });
  }

  onUdpAudio(pcm: Buffer): void {
    this.handleAudio(pcm, "udp");
  }

  // ---------- audio and transcription ----------

  /**
   * PCM s16le 16 kHz from UDP or the WebSocket fallback. A datagram is self-contained: an odd
   * trailing byte is dropped (and counted) rather than carried, so one bad packet cannot shift every
   * later sample. WebSocket frames of a stream may split a sample and keep one carry byte.
   */
  handleAudio(chunk: Buffer, via: "udp" | "ws" = "ws"): void {
    if (this.disposed || chunk.length === 0) return;
    let pcm = chunk;
    if (via === "udp") {
      if (pcm.length & 1) {
        this.ctx.metrics.droppedMessage("udp", "odd_length_byte");
        pcm = pcm.subarray(0, pcm.length - 1);
      }
    } else if (this.pcmCarry) {
      pcm = Buffer.concat([this.pcmCarry, chunk]);
      this.pcmCarry = null;
    }
    if (via === "ws" && pcm.length & 1) {
      this.pcmCarry = Buffer.from(pcm.subarray(pcm.length - 1));
      pcm = pcm.subarray(0, pcm.length - 1);
    }
    if (pcm.length === 0) return;
    this.audioBytesIn += pcm.length;
    for (const [pkg] of this.subscriptions.audioChunkApps()) this.apps.sendBinary(pkg, pcm);
    for (const lang of this.subscriptions.transcriptionLanguages()) {
      let stream = this.streams.get(lang);
      if (!stream || stream.closed) {
        const b = this.streamBackoff.get(lang);
        if (b && this.ctx.clock.now() < b.retryAt) {
          this.ctx.metrics.droppedMessage("transcription", "provider_backoff");
          continue;
        }
        stream = this.openStream(lang) ?? undefined;
        if (!stream) continue;
      }
      stream.write(pcm);
    }
  }

  private openStream(lang: string): TranscriptionStream | null {
    try {
      const stream = this.ctx.transcription.createStream({
        language: lang,
        startEpochMs: this.ctx.clock.now(),
        onResult: (data) => {
          if (this.disposed) return;
          this.streamBackoff.delete(lang); // the provider works again
          this.fanOutTranscription(lang, data);
        },
        onError: (err) => {
          this.ctx.metrics.transcriptionError(this.ctx.transcription.name);
          const b = this.streamFailed(lang);
          this.ctx.log.warn({ userId: this.userId, err: err.message, lang, retryInMs: b.retryAt - this.ctx.clock.now() }, "transcription stream error");
          if (this.streams.get(lang) === stream) this.streams.delete(lang);
          stream.close();
        },
      });
      this.streams.set(lang, stream);
      return stream;
    } catch (err) {
      this.ctx.metrics.transcriptionError(this.ctx.transcription.name);
      this.streamFailed(lang);
      this.ctx.log.warn({ userId: this.userId, err: (err as Error).message }, "transcription stream could not open");
      return null;
    }
  }

  private streamFailed(lang: string): { failures: number; retryAt: number } {
    const t = this.ctx.timings;
    const failures = (this.streamBackoff.get(lang)?.failures ?? 0) + 1;
    const b = { failures, retryAt: this.ctx.clock.now() + Math.min(t.transcriptionRetryMaxMs, t.transcriptionRetryMs * 2 ** (failures - 1)) };
    this.streamBackoff.set(lang, b);
    return b;
  }

  fanOutTranscription(lang: string, data: TranscriptionData): void {
    this.transcriptsOut++;
    for (const [pkg, sub] of this.subscriptions.transcriptionTargets(lang)) this.apps.sendDataStream(pkg, sub, data);
  }

  /** Subscriptions changed: close streams nobody wants, and update the microphone. */
  onSubscriptionsChanged(): void {
    if (this.disposed) return;
    const wanted = new Set(this.subscriptions.transcriptionLanguages());
    for (const [lang, s] of this.streams) {
      if (!wanted.has(lang)) {
        s.close();
        this.streams.delete(lang);
      }
    }
    for (const lang of this.streamBackoff.keys()) if (!wanted.has(lang)) this.streamBackoff.delete(lang);
    this.mic.requestUpdate();
  }

  /** Memory view for operators (what MEMORY_TELEMETRY showed). */
  telemetry() {
    let streamBytes = 0;
    for (const s of this.streams.values()) streamBytes += s.bufferedBytes;
    return {
      userId: this.userId,
      createdAt: new Date(this.createdAt).toISOString(),
      phoneConnected: this.phoneConnected,
      connectedSinceMs: this.phoneConnected ? this.ctx.clock.now() - this.wsOpenedAt : null,
      disconnectedAt: this.disconnectedAt ? new Date(this.disconnectedAt).toISOString() : null,
      reconnects: this.reconnects,
      device: { ...this.device },
      apps: [...this.apps.apps.values()].map((a) => ({ packageName: a.packageName, state: a.state, connected: !!a.ws, messagesIn: a.messagesIn, messagesOut: a.messagesOut })),
      subscriptions: this.subscriptions.all(),
      microphoneEnabled: this.mic.enabled,
      audio: {
        udpRegistered: this.udpHash !== null,
        encrypted: this.udpKey !== null,
        reorderBufferedPackets: this.reorder.size,
        reorderBufferedBytes: this.reorder.bufferedBytes,
        carryBytes: this.pcmCarry?.length ?? 0,
        bytesIn: this.audioBytesIn,
      },
      transcription: {
        provider: this.ctx.transcription.name,
        streams: [...this.streams.keys()],
        bufferedBytes: streamBytes,
        resultsOut: this.transcriptsOut,
      },
      display: { queued: this.display.queued, sent: this.display.sent },
    };
  }

  /**
   * Another pod owns this user now: send the phone back through the gateway and let go, without
   * touching the new owner's app sessions or the user's running-app intent.
   */
  relinquish(): void {
    if (this.disposed) return;
    this.sendToPhone({ type: "connection_error", code: "MOVED", message: "This user is served by another pod; reconnect through the gateway", timestamp: nowIso(this.ctx.clock.now()) });
    safeClose(this.ws, CloseCode.RECONNECT_VIA_GATEWAY, "Reconnect via gateway");
    this.dispose("lost_ownership", { handoff: true });
  }

  /** Idempotent. Safe against late async work: every callback checks `disposed`. */
  dispose(reason: string, opts: { handoff?: boolean } = {}): void {
    if (this.disposed) return;
    this.disposed = true;
    this.ctx.clock.clearInterval(this.pingTimer);
    this.ctx.clock.clearTimeout(this.graceTimer);
    this.pingTimer = this.graceTimer = null;
    if (this.udpHash !== null) {
      this.ctx.udp.unregister(this.udpHash, this);
      this.udpHash = null;
    }
    this.reorder.flush();
    for (const s of this.streams.values()) s.close();
    this.streams.clear();
    this.apps.disposeAll(opts);
    this.display.dispose();
    this.mic.dispose();
    if (this.ws) safeClose(this.ws, opts.handoff ? CloseCode.RECONNECT_VIA_GATEWAY : CloseCode.NORMAL, opts.handoff ? "Reconnect via gateway" : "User session ended");
    this.ws = null;
    this.onDisposed(this, reason);
  }
}
