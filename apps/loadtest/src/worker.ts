/**
 * One load-generator process: a share of the simulated phones (route through the gateway, connect
 * the glasses-ws, register UDP, start the mini app, stream audio at 25 packets/s) and the lean
 * SDK-protocol mini app (AppSim) for its users. The driver forks one or more of these and talks to
 * them over IPC (see WorkerInit / WorkerCommand); each reports WorkerStats once per interval,
 * including its own event-loop lag and CPU, so the driver can tell when the generator is the limit.
 */
import { monitorEventLoopDelay, performance } from "node:perf_hooks";
import { AppSim, ClosedBeforeAckError, PhoneSim, RouteError, UpgradeRefusedError, gatewayResolver, type AppSimSession } from "@mentra-cluster/phone-sim";
import { mintUserToken, type DisplayEvent, type TranscriptionData } from "@mentra-cluster/protocol";
import { AudioPacer, PACKET_MS, loadPackets, type AudioSink } from "./audio.ts";
import { Histogram } from "./stats.ts";
import type { Feature, WorkerStats } from "./types.ts";

export interface WorkerInit {
  type: "init";
  worker: number;
  workers: number;
  gatewayUrl: string;
  jwtSecret: string;
  features: Feature[];
  wavs: string[];
  leanPackage: string;
  sdkPackage: string;
  apiKey: string;
  prefix: string;
  domain: string;
  /** Global user indices whose app is the real-SDK app. */
  sdkIndices: number[];
  statsIntervalMs: number;
  /** Connects in flight at most (per worker). */
  maxConnecting?: number;
}

export type WorkerCommand = WorkerInit | { type: "target"; count: number } | { type: "stop" };
export type WorkerEvent = { type: "ready"; appPublicUrl: string } | ({ type: "stats" } & WorkerStats) | { type: "stopped" } | { type: "fatal"; message: string };

/** Marker the lean app appends to each displayed transcript: app receive time, audio end time, interim/final. */
export const MARKER = / #lt:(\d+):(\d+):([if])$/;

class AppStartError extends Error {
  constructor(readonly status: number, readonly code: string) {
    super(`app start failed: HTTP ${status} ${code}`);
  }
}

export function classifyFailure(err: unknown): string {
  if (err instanceof RouteError) return `route_${err.status}`;
  if (err instanceof UpgradeRefusedError) return `upgrade_${err.status}`;
  if (err instanceof ClosedBeforeAckError) return `closed_before_ack_${err.code}`;
  if (err instanceof AppStartError) return `app_start_${err.status}${err.code ? `_${err.code}` : ""}`;
  const e = err as { message?: string; cause?: { code?: string } };
  const msg = e?.message ?? String(err);
  if (/app start timed out/.test(msg)) return "app_start_timeout";
  if (/no connection_ack within/.test(msg)) return "ack_timeout";
  if (e?.cause?.code === "ECONNREFUSED" || /ECONNREFUSED/.test(msg)) return "refused";
  if (/fetch failed/.test(msg)) return "route_network";
  if (/ECONNRESET|socket hang up/.test(msg)) return "reset";
  return "error";
}

type UserState = "idle" | "connecting" | "running" | "backoff" | "stopping";

class SimUser implements AudioSink {
  state: UserState = "idle";
  phone: PhoneSim | null = null;
  pacing: object | null = null;
  retryTimer: NodeJS.Timeout | null = null;
  failuresInARow = 0;
  constructor(
    readonly index: number,
    readonly userId: string,
    readonly pkg: string,
    readonly sdk: boolean,
  ) {}
  sendAudio(packet: Buffer): boolean {
    const p = this.phone;
    if (!p) return false;
    try {
      if (p.udpRegistered) {
        p.sendUdpAudio(packet);
        return true;
      }
      if (p.connected) {
        p.sendRaw(packet); // the phone's WebSocket fallback when UDP is not registered
        return true;
      }
    } catch {
      // socket went away between the check and the send
    }
    return false;
  }
}

export class Fleet {
  private readonly users: SimUser[] = [];
  private readonly pacer: AudioPacer;
  private readonly app: AppSim;
  private target = 0;
  private stopped = false;
  private statsTimer: NodeJS.Timeout | null = null;
  private reconcileTimer: NodeJS.Timeout | null = null;
  private readonly lag = monitorEventLoopDelay({ resolution: 10 });
  private lastCpu = process.cpuUsage();
  private lastStatsAt = performance.now();
  private readonly sdkSet: Set<number>;
  private readonly c = {
    attempts: 0,
    failures: {} as Record<string, number>,
    udpFallbacks: 0,
    disconnects: 0,
    reconnects: 0,
    transcriptsAtApp: 0,
    displaysSent: 0,
    displaysAtPhone: 0,
    audioChunkBytesAtApp: 0,
  };
  private readonly lat = { audioToApp: new Histogram(), appToPhone: new Histogram(), audioToPhone: new Histogram() };
  private sdkDisplays: { userId: string; text: string; t: number }[] = [];

  constructor(
    readonly init: WorkerInit,
    private readonly emit: (e: WorkerEvent) => void,
  ) {
    this.pacer = new AudioPacer(loadPackets(init.wavs));
    this.sdkSet = new Set(init.sdkIndices);
    const subs: string[] = [];
    if (init.features.includes("transcription")) subs.push("transcription:en-US");
    if (init.features.includes("audio")) subs.push("audio_chunk");
    this.app = new AppSim({ packageName: init.leanPackage, apiKey: init.apiKey, subscriptions: subs, echo: "none" });
    this.app.on("transcription", (s: AppSimSession, d: TranscriptionData) => this.onTranscript(s, d));
  }

  async start(): Promise<string> {
    await this.app.start();
    this.lag.enable();
    this.statsTimer = setInterval(() => this.report(), this.init.statsIntervalMs);
    this.reconcileTimer = setInterval(() => this.reconcile(), 250);
    return this.app.publicUrl;
  }

  /** The n-th user of this worker is global user worker + n·workers. */
  private user(n: number): SimUser {
    while (this.users.length <= n) {
      const i = this.init.worker + this.users.length * this.init.workers;
      const sdk = this.sdkSet.has(i);
      this.users.push(new SimUser(i, `${this.init.prefix}-${i}@${this.init.domain}`.toLowerCase(), sdk ? this.init.sdkPackage : this.init.leanPackage, sdk));
    }
    return this.users[n]!;
  }

  setTarget(count: number): void {
    this.target = Math.max(0, Math.floor(count));
    this.reconcile();
  }

  private reconcile(): void {
    if (this.stopped) return;
    const maxConnecting = this.init.maxConnecting ?? 200;
    let connecting = this.users.filter((u) => u.state === "connecting").length;
    for (let n = 0; n < this.target; n++) {
      const u = this.user(n);
      if (u.state === "idle" && connecting < maxConnecting) {
        connecting++;
        void this.connectUser(u);
      }
    }
    for (let n = this.target; n < this.users.length; n++) {
      const u = this.users[n]!;
      if (u.state !== "idle" && u.state !== "stopping") void this.stopUser(u);
    }
  }

  private async connectUser(u: SimUser): Promise<void> {
    u.state = "connecting";
    this.c.attempts++;
    const token = mintUserToken(u.userId, this.init.jwtSecret);
    const phone = new PhoneSim({
      wsUrl: "ws://unused",
      restBase: "http://unused",
      token,
      userId: u.userId,
      resolveEndpoint: gatewayResolver(this.init.gatewayUrl, token),
      reconnect: { baseMs: 1000, maxMs: 15_000, jitter: 0.3 },
      maxRecorded: 8,
    });
    u.phone = phone;
    phone.on("display", (m) => this.onDisplay(u, m));
    phone.on("close", () => {
      if (u.state === "running") this.c.disconnects++;
    });
    phone.on("reconnected", () => void this.c.reconnects++);
    phone.on("reconnect_error", (err) => {
      this.c.attempts++;
      this.fail(`reconnect_${classifyFailure(err)}`);
    });
    phone.on("udp_error", () => undefined);
    try {
      await phone.connect(15_000);
      try {
        await phone.registerUdp(5000);
      } catch {
        this.c.udpFallbacks++; // keeps streaming over the WebSocket, like the phone
      }
      const r = await withTimeout(phone.startApp(u.pkg), 20_000, "app start timed out");
      if (r.status !== 200) throw new AppStartError(r.status, typeof r.body?.error === "string" ? r.body.error : "");
      if (this.stopped || u.phone !== phone || u.state !== "connecting") return;
      u.state = "running";
      u.failuresInARow = 0;
      u.pacing = this.pacer.add(u);
    } catch (err) {
      if (u.phone !== phone || u.state !== "connecting") return;
      this.fail(classifyFailure(err));
      u.phone = null;
      void phone.dispose().catch(() => undefined);
      if (this.stopped) return;
      // Like a phone: try again later, with backoff.
      u.state = "backoff";
      u.failuresInARow++;
      const delay = Math.min(15_000, 1000 * 2 ** Math.min(4, u.failuresInARow - 1)) * (0.7 + Math.random() * 0.6);
      u.retryTimer = setTimeout(() => {
        u.retryTimer = null;
        if (u.state === "backoff") u.state = "idle";
        this.reconcile();
      }, delay);
    }
  }

  private fail(kind: string): void {
    this.c.failures[kind] = (this.c.failures[kind] ?? 0) + 1;
  }

  private async stopUser(u: SimUser): Promise<void> {
    const phone = u.phone;
    u.state = "stopping";
    if (u.retryTimer) clearTimeout(u.retryTimer);
    u.retryTimer = null;
    if (u.pacing) this.pacer.remove(u.pacing);
    u.pacing = null;
    u.phone = null;
    if (phone) await phone.dispose().catch(() => undefined);
    if (u.state === "stopping") u.state = "idle";
  }

  private onTranscript(s: AppSimSession, d: TranscriptionData): void {
    const now = Date.now();
    this.c.transcriptsAtApp++;
    s.transcripts.length = 0; // AppSim keeps every transcript; a long run must not
    // The pod stamps audio time at the end of each packet, which the phone sent one packet earlier.
    if (!d.isFinal && typeof d.endTime === "number") this.lat.audioToApp.add(now - (d.endTime - PACKET_MS));
    if (!this.init.features.includes("display") || s.ws.readyState !== s.ws.OPEN) return;
    const text = `${d.text} #lt:${now}:${d.endTime ?? 0}:${d.isFinal ? "f" : "i"}`;
    s.ws.send(JSON.stringify({ type: "display_event", packageName: this.init.leanPackage, view: "main", layout: { layoutType: "text_wall", text }, sessionId: s.sessionId, timestamp: new Date(now).toISOString() }));
    this.c.displaysSent++;
  }

  private onDisplay(u: SimUser, m: DisplayEvent): void {
    if (m.layout.layoutType !== "text_wall") return;
    const now = Date.now();
    const text = m.layout.text;
    const mk = MARKER.exec(text);
    if (mk) {
      this.c.displaysAtPhone++;
      this.lat.appToPhone.add(now - Number(mk[1]));
      if (mk[3] === "i" && Number(mk[2]) > 0) this.lat.audioToPhone.add(now - (Number(mk[2]) - PACKET_MS));
    } else if (u.sdk && text && m.packageName === this.init.sdkPackage) {
      this.c.displaysAtPhone++;
      if (this.sdkDisplays.length < 1000) this.sdkDisplays.push({ userId: u.userId, text, t: now });
    }
  }

  private report(): void {
    const now = performance.now();
    const intervalMs = now - this.lastStatsAt;
    this.lastStatsAt = now;
    const cpu = process.cpuUsage(this.lastCpu);
    this.lastCpu = process.cpuUsage();
    let running = 0, connected = 0, connecting = 0;
    for (const u of this.users) {
      if (u.state === "running") running++;
      if (u.state === "connecting") connecting++;
      if (u.phone?.connected) connected++;
    }
    for (const s of this.app.sessions.values()) {
      this.c.audioChunkBytesAtApp += s.audioBytes;
      s.audioBytes = 0;
    }
    if (this.app.webhooks.length > 1000) this.app.webhooks = [];
    if (this.app.ended.length > 1000) this.app.ended.length = 0;
    const snap = (h: Histogram) => {
      const r = { counts: [...h.counts], max: h.max };
      h.reset();
      return r;
    };
    const stats: WorkerStats = {
      worker: this.init.worker,
      t: Date.now(),
      intervalMs,
      target: this.target,
      running,
      connected,
      connecting,
      attempts: this.c.attempts,
      failures: { ...this.c.failures },
      udpFallbacks: this.c.udpFallbacks,
      disconnects: this.c.disconnects,
      reconnects: this.c.reconnects,
      packetsSent: this.pacer.sent,
      packetsOffline: this.pacer.offline,
      packetsLateDropped: this.pacer.lateDropped,
      sendLateP99Ms: this.pacer.lateness.quantile(0.99) ?? 0,
      sendLateMaxMs: this.pacer.lateness.max,
      lagP99Ms: this.lag.count > 0 ? this.lag.percentile(99) / 1e6 : 0,
      lagMaxMs: this.lag.count > 0 ? this.lag.max / 1e6 : 0,
      cpuCores: intervalMs > 0 ? (cpu.user + cpu.system) / 1000 / intervalMs : 0,
      rssMB: process.memoryUsage.rss() / 1048576,
      transcriptsAtApp: this.c.transcriptsAtApp,
      displaysSent: this.c.displaysSent,
      displaysAtPhone: this.c.displaysAtPhone,
      audioChunkBytesAtApp: this.c.audioChunkBytesAtApp,
      appSessions: this.app.sessions.size,
      latency: { audioToApp: snap(this.lat.audioToApp), appToPhone: snap(this.lat.appToPhone), audioToPhone: snap(this.lat.audioToPhone) },
      sdkDisplays: this.sdkDisplays,
      appPublicUrl: this.app.publicUrl,
    };
    this.sdkDisplays = [];
    this.pacer.lateness.reset();
    this.lag.reset();
    this.emit({ type: "stats", ...stats });
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.statsTimer) clearInterval(this.statsTimer);
    if (this.reconcileTimer) clearInterval(this.reconcileTimer);
    this.pacer.stop();
    this.lag.disable();
    await Promise.all(
      this.users.map(async (u) => {
        if (u.retryTimer) clearTimeout(u.retryTimer);
        const p = u.phone;
        u.phone = null;
        u.state = "idle";
        if (p) await p.dispose().catch(() => undefined);
      }),
    );
    await this.app.stop();
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([p, new Promise<never>((_, reject) => (t = setTimeout(() => reject(new Error(message)), ms)))]).finally(() => clearTimeout(t));
}

// ---------- process entry (forked by the driver) ----------

if (import.meta.url === `file://${process.argv[1]}` && process.send) {
  let fleet: Fleet | null = null;
  const send = (e: WorkerEvent) => {
    if (process.connected) process.send!(e);
  };
  process.on("message", (m: WorkerCommand) => {
    if (m.type === "init") {
      fleet = new Fleet(m, send);
      fleet.start().then(
        (url) => send({ type: "ready", appPublicUrl: url }),
        (err: Error) => {
          send({ type: "fatal", message: err.message });
          process.exit(1);
        },
      );
    } else if (m.type === "target") {
      fleet?.setTarget(m.count);
    } else if (m.type === "stop") {
      void (fleet?.stop() ?? Promise.resolve()).then(() => {
        send({ type: "stopped" });
        setTimeout(() => process.exit(0), 50);
      });
    }
  });
  // The driver went away: leave no phones behind.
  process.on("disconnect", () => void (fleet?.stop() ?? Promise.resolve()).finally(() => process.exit(0)));
  process.on("unhandledRejection", (r) => {
    // Counted by the driver through the fatal path only when it stops the worker; keep running.
    process.stderr.write(`loadtest worker ${process.pid}: unhandled rejection: ${r instanceof Error ? r.message : String(r)}\n`);
  });
}
