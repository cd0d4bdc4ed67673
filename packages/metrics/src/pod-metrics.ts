import { performance, type EventLoopUtilization } from "node:perf_hooks";
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { HealthDocument, HttpStatusClass } from "./health.ts";
import { RollingWindow } from "./window.ts";

export interface PodMetricsOptions {
  podId: string;
  /** Default label `region`; "unknown" when not given. */
  region?: string;
  /** Default label `version`; "unknown" when not given. */
  version?: string;
  /** How often the lag/ELU sampler runs. Default 2000 ms (seed). */
  lagSampleIntervalMs?: number;
  /** Samples kept for the rolling avg/p99. Default 150 (seed: ~5 min at 2 s). */
  lagWindow?: number;
  /** prom-client's default process/nodejs metrics into this registry. Default true. */
  collectDefaultMetrics?: boolean;
  /**
   * Wall clock in ms (default Date.now): /health timestamp and the lag-warning cooldown.
   * When injected it also drives uptime (measured from construction); otherwise uptime is
   * process.uptime(), as in the seed.
   */
  now?: () => number;
  /** Called when a lag sample exceeds 100 ms, at most once per 30 s. */
  onLagWarning?: (lagMs: number) => void;
  /**
   * Samples in the short window that readiness uses (default 15: 30 s at 2 s). The seed's 5-minute
   * window is too slow for a probe that must recover by itself.
   */
  recentWindow?: number;
  /**
   * false = keep only the plain counters behind /health and the lag sampler, skip every
   * prom-client update and default metric (benchmarks measure instrumentation cost with it).
   */
  enabled?: boolean;
}

export interface LagState {
  currentMs: number;
  avgMs: number;
  p99Ms: number;
  samples: number;
  /** Event loop utilization (0..1) over the last sampling interval. */
  elu: number;
  /** p99 over the short recent window (readiness). */
  recentP99Ms: number;
}

export const LAG_WARNING_THRESHOLD_MS = 100;
export const LAG_WARNING_COOLDOWN_MS = 30_000;
export const DEFAULT_LAG_SAMPLE_INTERVAL_MS = 2000;
export const DEFAULT_LAG_WINDOW = 150;
export const EVENT_LOOP_DELAY_BUCKETS_SECONDS = [
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

const WRONG_POD_TRAFFIC = ["phone_ws", "udp", "rest", "app_ws", "webhook"] as const;
export type WrongPodTraffic = (typeof WRONG_POD_TRAFFIC)[number];
export type WebhookKind = "session_request" | "stop_request";

const MB = 1024 * 1024;
const round2 = (n: number) => Math.round(n * 100) / 100;

function statusClass(code: number): HttpStatusClass | undefined {
  // Same bucketing as the seed: 1xx and junk are not counted, 600+ counts as 5xx.
  if (code >= 500) return "5xx";
  if (code >= 400) return "4xx";
  if (code >= 300) return "3xx";
  if (code >= 200) return "2xx";
  return undefined;
}

/**
 * Every metric one session pod exposes, on a registry of its own so several pods can share a
 * test process. Counters are mirrored in plain numbers so health() never walks the registry.
 */
export class PodMetrics {
  readonly registry: Registry;
  readonly podId: string;
  private readonly on: boolean;

  private readonly now: () => number;
  private readonly injectedClock: boolean;
  private readonly createdAt: number;
  private readonly intervalMs: number;
  private readonly onLagWarning: ((lagMs: number) => void) | undefined;

  // --- mirrors for health() ---
  private userSessions = 0;
  private miniappSessions = 0;
  private udpRegistered = 0;
  private wsClientMessagesIn = 0;
  private wsClientMessagesOut = 0;
  private wsMiniappMessagesIn = 0;
  private wsMiniappMessagesOut = 0;
  private readonly httpRequests: Record<HttpStatusClass, number> = { "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0 };
  private udpReceivedCount = 0;
  private udpDroppedCount = 0;
  private udpPings = 0;
  private udpDecryptedCount = 0;
  private udpDecryptionFailures = 0;

  // --- lag state ---
  private readonly window: RollingWindow;
  private readonly recent: RollingWindow;
  private lagCurrent = 0;
  private eluCurrent = 0;
  private lastLagWarningAt = -Infinity;
  private lastElu: EventLoopUtilization | undefined;
  /** The one pending sampler timer (next tick or the setTimeout(0) probe); undefined when stopped. */
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  /** Memory read once per scrape: the five gauges' collect() callbacks share it. */
  private memCache: NodeJS.MemoryUsage | undefined;

  // --- prom-client metrics ---
  private readonly m: ReturnType<PodMetrics["createMetrics"]>;

  constructor(opts: PodMetricsOptions) {
    if (!opts.podId) throw new TypeError("PodMetrics: podId is required");
    this.podId = opts.podId;
    this.on = opts.enabled ?? true;
    this.injectedClock = opts.now !== undefined;
    this.now = opts.now ?? Date.now;
    this.createdAt = this.now();
    this.intervalMs = opts.lagSampleIntervalMs ?? DEFAULT_LAG_SAMPLE_INTERVAL_MS;
    if (!(this.intervalMs > 0)) throw new RangeError("PodMetrics: lagSampleIntervalMs must be > 0");
    this.window = new RollingWindow(opts.lagWindow ?? DEFAULT_LAG_WINDOW);
    this.recent = new RollingWindow(opts.recentWindow ?? 15);
    this.onLagWarning = opts.onLagWarning;

    this.registry = new Registry();
    this.registry.setDefaultLabels({
      pod: opts.podId,
      region: opts.region ?? "unknown",
      version: opts.version ?? "unknown",
    });
    if (this.on && (opts.collectDefaultMetrics ?? true)) collectDefaultMetrics({ register: this.registry });
    this.m = this.createMetrics();
  }

  private createMetrics() {
    const registers = [this.registry];
    // prom-client calls collect() with the metric as `this`.
    const gauge = (name: string, help: string, read?: () => number) =>
      new Gauge({
        name,
        help,
        registers,
        ...(read && {
          collect(this: Gauge) {
            this.set(read());
          },
        }),
      });
    const counter = <L extends string = never>(name: string, help: string, labelNames: readonly L[] = []) =>
      new Counter<L>({ name, help, registers, labelNames });

    const m = {
      // ----- seed: sessions -----
      userSessions: gauge("mentra_user_sessions", "Current number of connected UserSessions"),
      miniappSessions: gauge("mentra_miniapp_sessions", "Current number of mini app WebSocket sessions"),
      // ----- seed: event loop -----
      lag: gauge("mentra_event_loop_lag_ms", "Event loop lag in milliseconds (current sample)", () => this.lagCurrent),
      lagAvg: gauge("mentra_event_loop_lag_avg_ms", "Event loop lag rolling average in milliseconds", () => this.window.mean),
      lagP99: gauge("mentra_event_loop_lag_p99_ms", "Event loop lag p99 in milliseconds", () => this.window.p99),
      // ----- seed: UDP -----
      udpReceived: counter("mentra_udp_packets_received_total", "Total UDP audio packets received"),
      udpDropped: counter("mentra_udp_packets_dropped_total", "Total UDP packets dropped"),
      udpPings: counter("mentra_udp_pings_received_total", "Total UDP ping packets received"),
      udpDecrypted: counter("mentra_udp_packets_decrypted_total", "Total UDP packets decrypted"),
      udpDecryptFailed: counter("mentra_udp_decryption_failures_total", "Total UDP decryption failures"),
      udpRegistered: gauge("mentra_udp_registered_sessions", "UDP sessions currently registered"),
      // ----- seed: WebSocket -----
      wsClientIn: counter("mentra_ws_client_messages_in_total", "Total WebSocket messages received from mobile client"),
      wsClientOut: counter("mentra_ws_client_messages_out_total", "Total WebSocket messages sent to mobile client"),
      wsMiniappIn: counter("mentra_ws_miniapp_messages_in_total", "Total WebSocket messages received from mini apps"),
      wsMiniappOut: counter("mentra_ws_miniapp_messages_out_total", "Total WebSocket messages sent to mini apps"),
      // ----- seed: HTTP -----
      http: counter("mentra_http_requests_total", "Total HTTP requests by status code group", ["status"]),
      // ----- seed: memory and process (read at scrape) -----
      heapUsed: gauge("mentra_heap_used_bytes", "V8 heap used in bytes", () => this.mem().heapUsed),
      heapTotal: gauge("mentra_heap_total_bytes", "V8 heap total in bytes", () => this.mem().heapTotal),
      rss: gauge("mentra_rss_bytes", "Resident set size in bytes", () => this.mem().rss),
      external: gauge("mentra_external_bytes", "External memory in bytes (C++ objects bound to JS)", () => this.mem().external),
      arrayBuffers: gauge("mentra_array_buffers_bytes", "ArrayBuffers memory in bytes", () => this.mem().arrayBuffers),
      uptime: gauge("mentra_uptime_seconds", "Uptime in seconds", () => this.uptimeSeconds()),

      // ----- fleet extras -----
      delay: new Histogram({
        name: "mentra_event_loop_delay_seconds",
        help: "Event loop lag samples in seconds",
        buckets: EVENT_LOOP_DELAY_BUCKETS_SECONDS,
        registers,
      }),
      elu: gauge("mentra_event_loop_utilization", "Event loop utilization (0..1) over the last sampling interval", () => this.eluCurrent),
      udpDroppedByReason: counter("mentra_udp_packets_dropped_by_reason_total", "UDP packets dropped, by reason", ["reason"]),
      sessionCreations: counter("mentra_session_creations_total", "UserSessions created"),
      sessionDisposals: counter("mentra_session_disposals_total", "UserSessions disposed, by reason", ["reason"]),
      phoneSocketCloses: counter("mentra_phone_socket_closes_total", "Phone WebSocket closes, by close code", ["code"]),
      phoneReconnects: counter("mentra_phone_reconnects_total", "Phone WebSockets that resumed an existing UserSession"),
      webhooks: counter("mentra_webhook_results_total", "Outbound webhooks to mini apps, by kind and result", ["kind", "result"]),
      appStateTransitions: counter("mentra_app_state_transitions_total", "Mini app state transitions", ["from", "to"]),
      transcriptionErrors: counter("mentra_transcription_provider_errors_total", "Transcription provider errors", ["provider"]),
      wrongPodArrivals: counter("mentra_wrong_pod_arrivals_total", "Traffic that reached a pod not owning the user", ["traffic"]),
      unhandledRejections: counter("mentra_unhandled_rejections_total", "Unhandled promise rejections"),
      uncaughtExceptions: counter("mentra_uncaught_exceptions_total", "Uncaught exceptions"),
      logLinesDropped: counter("mentra_log_lines_dropped_total", "Log lines dropped because the log sink was behind"),
      droppedMessages: counter("mentra_dropped_messages_total", "Messages dropped instead of delivered, by channel and reason", ["channel", "reason"]),
      // ----- cluster: drain and admission -----
      draining: gauge("mentra_pod_draining", "1 while this pod drains", () => (this.drainState ? 1 : 0)),
      drainLeft: gauge("mentra_drain_sessions_left", "Sessions still on a draining pod", () => this.drainState?.left() ?? 0),
      drainDeadline: gauge("mentra_drain_deadline_seconds", "Seconds until the drain deadline (negative once past it)", () => (this.drainState ? (this.drainState.deadline() - Date.now()) / 1000 : 0)),
      drainMoves: counter("mentra_drain_moves_total", "Users moved off this pod by a drain"),
      drainsPastDeadline: counter("mentra_drains_past_deadline_total", "Drains that reached their deadline with users left"),
      newSessionRejections: counter("mentra_new_session_rejections_total", "New sessions refused with 503, by reason", ["reason"]),
    };

    // The seed always prints all four status classes; keep those series (and the fixed set of
    // wrong-pod traffic kinds) present at 0 so rate() works from the first scrape.
    for (const status of Object.keys(this.httpRequests)) m.http.inc({ status }, 0);
    for (const traffic of WRONG_POD_TRAFFIC) m.wrongPodArrivals.inc({ traffic }, 0);
    return m;
  }

  // ======================= lifecycle =======================

  /** Starts the lag + ELU sampler: one unref'd timer at a time. Idempotent. */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.lastElu = performance.eventLoopUtilization();
    this.probe(0); // first sample right away, as the seed does
  }

  /** Clears every timer. Idempotent; start() may be called again afterwards. */
  stop(): void {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  /**
   * Sample = the delay of a setTimeout(0) (seed), or the lateness of the tick that scheduled it
   * if larger: a stall that covers the tick's due time would otherwise end before the probe is
   * even scheduled and go unseen.
   */
  private probe(tickLatenessMs: number): void {
    const scheduledAt = performance.now();
    this.timer = setTimeout(() => {
      const probeDelay = performance.now() - scheduledAt;
      this.timer = undefined;
      if (!this.running) return;
      this.recordLagSample(round2(Math.max(probeDelay, tickLatenessMs)));
      this.scheduleTick();
    }, 0);
    this.timer.unref();
  }

  private scheduleTick(): void {
    const dueAt = performance.now() + this.intervalMs;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (!this.running) return;
      this.sampleElu();
      this.probe(Math.max(0, performance.now() - dueAt));
    }, this.intervalMs);
    this.timer.unref();
  }

  private sampleElu(): void {
    const current = performance.eventLoopUtilization();
    if (this.lastElu) this.eluCurrent = performance.eventLoopUtilization(current, this.lastElu).utilization;
    this.lastElu = current;
  }

  // ======================= lag =======================

  /** Feeds one lag sample (ms): current value, rolling window, histogram, warning. */
  recordLagSample(ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`lag sample must be a finite number >= 0, got ${ms}`);
    this.lagCurrent = ms;
    this.window.push(ms);
    this.recent.push(ms);
    if (this.on) this.m.delay.observe(ms / 1000);
    if (ms > LAG_WARNING_THRESHOLD_MS && this.onLagWarning) {
      const now = this.now();
      if (now - this.lastLagWarningAt >= LAG_WARNING_COOLDOWN_MS) {
        this.lastLagWarningAt = now;
        try {
          this.onLagWarning(ms);
        } catch {
          // A failing log sink must not stop lag sampling (this runs inside the sampler's timer).
        }
      }
    }
  }

  lag(): LagState {
    return {
      currentMs: this.lagCurrent,
      avgMs: this.window.mean,
      p99Ms: this.window.p99,
      samples: this.window.size,
      elu: this.eluCurrent,
      recentP99Ms: this.recent.p99,
    };
  }

  // ======================= seed counters =======================

  wsClientIn(n = 1): void {
    if (this.on) this.m.wsClientIn.inc(n);
    this.wsClientMessagesIn += n;
  }
  wsClientOut(n = 1): void {
    if (this.on) this.m.wsClientOut.inc(n);
    this.wsClientMessagesOut += n;
  }
  wsMiniappIn(n = 1): void {
    if (this.on) this.m.wsMiniappIn.inc(n);
    this.wsMiniappMessagesIn += n;
  }
  wsMiniappOut(n = 1): void {
    if (this.on) this.m.wsMiniappOut.inc(n);
    this.wsMiniappMessagesOut += n;
  }

  httpRequest(statusCode: number): void {
    const status = statusClass(statusCode);
    if (!status) return;
    if (this.on) this.m.http.inc({ status });
    this.httpRequests[status]++;
  }

  udpReceived(): void {
    if (this.on) this.m.udpReceived.inc();
    this.udpReceivedCount++;
  }
  udpPing(): void {
    if (this.on) this.m.udpPings.inc();
    this.udpPings++;
  }
  udpDecrypted(): void {
    if (this.on) this.m.udpDecrypted.inc();
    this.udpDecryptedCount++;
  }
  udpDecryptFailed(): void {
    if (this.on) this.m.udpDecryptFailed.inc();
    this.udpDecryptionFailures++;
  }
  /** Seed counter (unlabelled, unchanged series) plus the by-reason breakdown. */
  udpDropped(reason: string): void {
    if (this.on) this.m.udpDropped.inc();
    if (this.on) this.m.udpDroppedByReason.inc({ reason });
    this.udpDroppedCount++;
  }

  // ======================= gauges (kept current, never scanned) =======================

  userSessionsInc(): void {
    if (this.on) this.m.userSessions.inc();
    this.userSessions++;
  }
  userSessionsDec(): void {
    if (this.on) this.m.userSessions.dec();
    this.userSessions--;
  }
  miniappSessionsInc(): void {
    if (this.on) this.m.miniappSessions.inc();
    this.miniappSessions++;
  }
  miniappSessionsDec(): void {
    if (this.on) this.m.miniappSessions.dec();
    this.miniappSessions--;
  }
  udpRegisteredInc(): void {
    if (this.on) this.m.udpRegistered.inc();
    this.udpRegistered++;
  }
  udpRegisteredDec(): void {
    if (this.on) this.m.udpRegistered.dec();
    this.udpRegistered--;
  }

  // ======================= fleet extras =======================

  sessionCreated(): void {
    if (this.on) this.m.sessionCreations.inc();
  }
  sessionDisposed(reason: string): void {
    if (this.on) this.m.sessionDisposals.inc({ reason });
  }
  phoneSocketClosed(code: number): void {
    if (this.on) this.m.phoneSocketCloses.inc({ code: String(code) });
  }
  phoneReconnect(): void {
    if (this.on) this.m.phoneReconnects.inc();
  }
  webhook(kind: WebhookKind, result: string): void {
    if (this.on) this.m.webhooks.inc({ kind, result });
  }
  appStateTransition(from: string, to: string): void {
    if (this.on) this.m.appStateTransitions.inc({ from, to });
  }
  transcriptionError(provider: string): void {
    if (this.on) this.m.transcriptionErrors.inc({ provider });
  }
  wrongPodArrival(traffic: WrongPodTraffic): void {
    if (this.on) this.m.wrongPodArrivals.inc({ traffic });
  }
  unhandledRejection(): void {
    if (this.on) this.m.unhandledRejections.inc();
  }
  uncaughtException(): void {
    if (this.on) this.m.uncaughtExceptions.inc();
  }
  logLineDropped(n = 1): void {
    if (this.on) this.m.logLinesDropped.inc(n);
  }
  private drainState: { left(): number; deadline(): number } | null = null;

  /** Reports a drain in progress (gauges read it at scrape); null when none. */
  setDrain(state: { left(): number; deadline(): number } | null): void {
    this.drainState = state;
  }
  drainMove(): void {
    if (this.on) this.m.drainMoves.inc();
  }
  drainPastDeadline(): void {
    if (this.on) this.m.drainsPastDeadline.inc();
  }
  newSessionRejected(reason: string): void {
    if (this.on) this.m.newSessionRejections.inc({ reason });
  }

  droppedMessage(channel: string, reason: string): void {
    if (this.on) this.m.droppedMessages.inc({ channel, reason });
  }

  // ======================= output =======================

  get contentType(): string {
    return this.registry.contentType;
  }

  metricsText(): Promise<string> {
    return this.registry.metrics();
  }

  /** The seed's /health document, from mirrors: O(1) in sessions and traffic. */
  health(): HealthDocument {
    const mem = this.mem();
    const uptime = this.uptimeSeconds();
    const lagAvg = round2(this.window.mean);
    const lagP99 = round2(this.window.p99);
    return {
      status: "ok",
      timestamp: new Date(this.now()).toISOString(),
      heapUsedMB: Math.round(mem.heapUsed / MB),
      heapTotalMB: Math.round(mem.heapTotal / MB),
      rssMB: Math.round(mem.rss / MB),
      externalMB: Math.round(mem.external / MB),
      eventLoopLagMs: this.lagCurrent,
      activeSessions: this.userSessions,
      uptimeSeconds: Math.round(uptime),
      eventLoop: { lagMs: this.lagCurrent, lagAvgMs: lagAvg, lagP99Ms: lagP99, samples: this.window.size },
      sessions: { userSessions: this.userSessions, miniappSessions: this.miniappSessions },
      throughput: {
        wsClientMessagesIn: this.wsClientMessagesIn,
        wsClientMessagesOut: this.wsClientMessagesOut,
        wsMiniappMessagesIn: this.wsMiniappMessagesIn,
        wsMiniappMessagesOut: this.wsMiniappMessagesOut,
        httpRequests: { ...this.httpRequests },
      },
      udp: {
        received: this.udpReceivedCount,
        dropped: this.udpDroppedCount,
        pings: this.udpPings,
        sessions: this.udpRegistered,
        decrypted: this.udpDecryptedCount,
        decryptionFailures: this.udpDecryptionFailures,
      },
      memory: {
        rss: mem.rss,
        heapTotal: mem.heapTotal,
        heapUsed: mem.heapUsed,
        external: mem.external,
        arrayBuffers: mem.arrayBuffers,
      },
      uptime,
    };
  }

  private uptimeSeconds(): number {
    return this.injectedClock ? (this.now() - this.createdAt) / 1000 : process.uptime();
  }

  /** process.memoryUsage() once per synchronous turn, so a scrape reads it once, not five times. */
  private mem(): NodeJS.MemoryUsage {
    if (!this.memCache) {
      this.memCache = process.memoryUsage();
      queueMicrotask(() => {
        this.memCache = undefined;
      });
    }
    return this.memCache;
  }
}
