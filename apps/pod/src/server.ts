/**
 * A session pod: fastify (REST, /glasses-ws, /app-ws, probes, metrics) plus one UDP socket.
 * createPod() wires dependencies; everything injectable (clock, directory, provider, fetch) for tests.
 */
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from "fastify";
import websocket from "@fastify/websocket";
import pino, { type Logger } from "pino";
import { EmbeddedDirectory, type Directory } from "@mentra-cluster/directory";
import { PodMetrics } from "@mentra-cluster/metrics";
import { CloseCode, CloseReason } from "@mentra-cluster/protocol";
import type { PodConfig } from "./config.ts";
import { DEFAULT_TIMINGS, type PodContext, type PodTimings } from "./context.ts";
import { errorBody } from "./errors.ts";
import { registerAdminRoutes } from "./http/adminRoutes.ts";
import { registerClientRoutes } from "./http/clientRoutes.ts";
import { SessionStore } from "./session/SessionStore.ts";
import { safeClose } from "./session/send.ts";
import { EnergyTranscriptionProvider } from "./transcription/energy.ts";
import type { TranscriptionProvider } from "./transcription/provider.ts";
import { UdpAudioServer } from "./udp/UdpAudioServer.ts";
import { realClock, type Clock } from "./util/clock.ts";
import { registerAppWs } from "./ws/appWs.ts";
import { registerGlassesWs } from "./ws/glassesWs.ts";
import { ClusterAgent, endpointsFor, type ClusterDeps } from "./cluster/agent.ts";
import { Drainer, type DrainOptions } from "./cluster/drain.ts";
import type { PodControl } from "@mentra-cluster/registry";
import { networkInterfaces } from "node:os";

/** Largest WebSocket frame accepted on either channel; larger frames close the socket with 1009. */
export const MAX_WS_FRAME_BYTES = 1024 * 1024;

export interface PodDeps {
  clock?: Clock;
  directory?: Directory;
  transcription?: TranscriptionProvider;
  logger?: Logger;
  timings?: Partial<PodTimings>;
  fetch?: typeof fetch;
  metrics?: PodMetrics;
  /** Registry and assignment store: the pod joins a cluster. */
  cluster?: ClusterDeps;
  /** Heartbeat interval for the registry (tests shorten it). */
  heartbeatMs?: number;
  /** Called when a drain this pod ran has finished (the process should stop and exit 0). */
  onDrained?: (result: "empty" | "deadline") => void;
}

export interface PodAddresses {
  httpUrl: string;
  wsUrl: string;
  appWsUrl: string;
  udpHost: string;
  udpPort: number;
  port: number;
}

export class Pod {
  readonly ctx: PodContext;
  readonly sessions: SessionStore;
  readonly app: FastifyInstance;
  readonly udp: UdpAudioServer;
  shuttingDown = false;
  private addrs: PodAddresses | null = null;
  private readyFlag = false;
  private reconcileTimer: NodeJS.Timeout | null = null;
  readonly drainer: Drainer = new Drainer(this);
  private readonly newSessionBucket: { tokens: number; at: number };
  private readonly onDrained?: (result: "empty" | "deadline") => void;

  constructor(readonly config: PodConfig, deps: PodDeps = {}) {
    const log =
      deps.logger ?? pino({ level: config.logLevel, base: { podId: config.podId }, redact: ["req.headers.authorization", "apiKey", "token"] });
    const metrics = deps.metrics ?? new PodMetrics({ podId: config.podId, region: config.region, version: config.version, lagSampleIntervalMs: config.lagSampleIntervalMs, enabled: config.metricsEnabled, onLagWarning: (lagMs) => log.warn({ lagMs }, "event loop lag above 100 ms") });
    const clock = deps.clock ?? realClock;
    const timings = { ...DEFAULT_TIMINGS, ...deps.timings };
    this.udp = new UdpAudioServer({ host: config.udpBindHost, port: config.udpPort, metrics, clock, log });
    this.ctx = {
      podId: config.podId,
      env: config.env,
      clock,
      metrics,
      log,
      directory: deps.directory ?? new EmbeddedDirectory(),
      transcription: deps.transcription ?? new EnergyTranscriptionProvider(),
      udp: this.udp,
      timings,
      fetch: deps.fetch ?? fetch,
      cluster: null,
      handoffSockets: new Set(),
      appWsUrl: () => {
        const base = this.publicHttpUrl();
        return `${base.replace(/^http/, "ws")}/app-ws`;
      },
      udpEndpoint: () => (this.addrs && config.udpAdvertiseHost ? { host: config.udpAdvertiseHost, port: this.addrs.udpPort } : null),
    };
    this.sessions = new SessionStore(this.ctx);
    this.newSessionBucket = { tokens: config.maxNewSessionsPerS, at: Date.now() };
    this.onDrained = deps.onDrained;
    if (deps.cluster) {
      this.ctx.cluster = new ClusterAgent({
        ...deps.cluster,
        podId: config.podId,
        ticketKey: config.routeTicketKey,
        log,
        heartbeatMs: deps.heartbeatMs,
        describe: () => this.describe(),
        onRecovered: () => void this.reconcile(),
        onControl: (c) => this.onControl(c),
        onLost: (a) => {
          const s = this.sessions.get(a.userId);
          if (s && !s.disposed) {
            this.ctx.log.info({ userId: a.userId, newOwner: a.podId }, "user moved to another pod: letting go");
            s.relinquish();
          }
        },
      });
    }
    this.app = this.buildApp();
  }

  /**
   * Admission control for new sessions (a reconnect storm must not cascade): a token bucket of
   * maxNewSessionsPerS. Reconnects to an existing session are never limited.
   */
  admitNewSession(): boolean {
    const b = this.newSessionBucket;
    const now = Date.now();
    const rate = this.config.maxNewSessionsPerS;
    b.tokens = Math.min(rate, b.tokens + ((now - b.at) / 1000) * rate);
    b.at = now;
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  /** Operator control flags changed in the registry. */
  private onControl(c: PodControl): void {
    if (!this.readyFlag || this.shuttingDown) return; // flags present at start-up: stay drained, idle
    if (c.drainRequested && !this.drainer.active) {
      void this.drain({ deadlineMs: c.drainDeadlineMs ?? this.config.drainDeadlineMs, ratePerS: c.drainRatePerS, reason: "operator" }).then((r) => {
        if (r !== "cancelled") this.onDrained?.(r);
      });
    } else if (!c.drainRequested && this.drainer.active) {
      this.drainer.cancel();
    } else if (!c.drainRequested && this.ctx.cluster?.state === "draining" && !this.drainer.active) {
      this.ctx.cluster.setState("ready");
      void this.ctx.cluster.beat();
    }
  }

  /**
   * Runs the drain sequence (see cluster/drain.ts), then waits for pending app hand-offs (bounded
   * by the deadline) and closes what is left with 1008, which stops SDK retries without onStop.
   */
  async drain(o: DrainOptions): Promise<"empty" | "deadline" | "cancelled"> {
    if (this.drainer.active) return "cancelled";
    this.ctx.metrics.setDrain({ left: () => this.sessions.size, deadline: () => this.drainer.progress?.deadline ?? Date.now() });
    const r = await this.drainer.run(o);
    if (r === "cancelled") {
      this.ctx.metrics.setDrain(null);
      this.drainer.progress = null;
      this.ctx.cluster?.setState("ready");
      void this.ctx.cluster?.beat();
      this.ctx.log.info("drain cancelled: back in service");
      return r;
    }
    if (r === "deadline") this.ctx.metrics.drainPastDeadline();
    const deadline = this.drainer.progress!.deadline;
    while (this.ctx.handoffSockets.size > 0 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 100));
    for (const ws of this.ctx.handoffSockets) safeClose(ws, CloseCode.POLICY_VIOLATION, "Session moved to another pod");
    return r;
  }

  /** This pod's registry record (everything but state and timestamps). */
  private describe() {
    const lag = this.ctx.metrics.lag();
    const a = this.addrs!;
    return {
      podId: this.config.podId,
      endpoints: endpointsFor(this.publicHttpUrl(), a.udpHost, a.udpPort, this.internalUrl()),
      sessions: this.sessions.size,
      lagP99Ms: lag.recentP99Ms,
      elu: lag.elu,
      capacity: { maxSessions: this.config.maxSessions, lagP99CapMs: this.config.placementLagP99CapMs, eluCap: this.config.eluCap },
      startedAt: this.startedAt,
      version: this.config.version,
      ...(this.drainer.active && this.drainer.progress ? { drain: { ...this.drainer.progress, sessionsLeft: this.sessions.size } } : {}),
    };
  }
  private startedAt = Date.now();

  /** Users whose owner-change message was missed (Redis blip) are found by a periodic check. */
  private async reconcile(): Promise<void> {
    const c = this.ctx.cluster;
    if (!c) return;
    const users = [...this.sessions.values()].filter((s) => !s.disposed).map((s) => s.userId);
    for (let i = 0; i < users.length; i += 500) {
      const batch = users.slice(i, i + 500);
      const owners = await c.owners(batch);
      if (!owners) return;
      for (let j = 0; j < owners.length; j++) {
        const a = owners[j];
        const s = this.sessions.get(batch[j]!);
        if (!s || s.disposed) continue;
        if (a && a.podId !== this.config.podId) s.relinquish();
        else if (!a) {
          // The store lost the assignment (restarted empty): this pod still holds the user.
          const r = await c.reclaim(s.userId);
          if (r?.won) s.epoch = r.epoch;
          else if (r && r.owner && r.owner !== this.config.podId) s.relinquish();
        }
      }
    }
  }

  get metrics(): PodMetrics {
    return this.ctx.metrics;
  }

  get addresses(): PodAddresses {
    if (!this.addrs) throw new Error("pod not started");
    return this.addrs;
  }

  /** Why the pod is not ready, or null when it is. O(1): no session walk, no I/O. */
  notReadyReason(): string | null {
    if (!this.readyFlag) return (this.ctx.directory as { warm?: boolean }).warm === false ? "directory_cache_cold" : "starting";
    if (this.shuttingDown || this.drainer.active || this.ctx.cluster?.state === "draining") return "draining";
    const p99 = this.ctx.metrics.lag().recentP99Ms;
    if (p99 > this.config.readyLagP99CapMs) return "event_loop_lag";
    return null;
  }

  get ready(): boolean {
    return this.notReadyReason() === null;
  }

  /** Where another process reaches this pod: not 127.0.0.1 when bound to every interface. */
  private internalUrl(): string {
    const a = this.addrs!;
    let host = this.config.internalHost;
    if (!host && this.config.host === "0.0.0.0") {
      host = Object.values(networkInterfaces()).flat().find((i) => i && i.family === "IPv4" && !i.internal)?.address ?? null;
    }
    return host ? `http://${host}:${a.port}` : a.httpUrl;
  }

  private publicHttpUrl(): string {
    if (this.config.publicUrl) return this.config.publicUrl;
    if (this.config.publicUrlTemplate) return this.config.publicUrlTemplate.replace("{podId}", this.config.podId).replace(/\/+$/, "");
    if (!this.addrs) throw new Error("pod not started");
    return this.addrs.httpUrl;
  }

  private buildApp(): FastifyInstance {
    // Same-origin path routing: /p/<podId>/… reaches this pod unchanged through the ingress.
    const prefix = `/p/${this.config.podId}`;
    const app = Fastify({
      rewriteUrl: (req) => {
        const url = req.url ?? "/";
        return url === prefix || url.startsWith(`${prefix}/`) || url.startsWith(`${prefix}?`) ? url.slice(prefix.length) || "/" : url;
      },
      loggerInstance: this.ctx.log as unknown as FastifyBaseLogger, logController: new LogController({ disableRequestLogging: true }), bodyLimit: 256 * 1024, return503OnClosing: false });
    void app.register(websocket, { options: { maxPayload: MAX_WS_FRAME_BYTES } });
    app.addHook("onResponse", async (_req, reply) => {
      this.ctx.metrics.httpRequest(reply.statusCode);
    });
    app.setNotFoundHandler((req, reply) => {
      void reply.code(404).send({ ...errorBody("NOT_FOUND", `No route ${req.method} ${req.url.split("?")[0]}`) });
    });
    app.setErrorHandler((err: { statusCode?: number; code?: string; message: string }, req, reply) => {
      const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 600 ? err.statusCode : 500;
      if (status >= 500) this.ctx.log.error({ err: err.message, url: req.url.split("?")[0] }, "request failed");
      void reply.code(status).send({ success: false, error: status >= 500 ? "internal" : (err.code ?? "bad_request").toLowerCase(), message: status >= 500 ? "Internal error" : err.message });
    });
    void app.register(async (scoped) => {
      registerGlassesWs(scoped, this);
      registerAppWs(scoped, this);
      registerClientRoutes(scoped, this);
      registerAdminRoutes(scoped, this);
      scoped.get("/livez", async (_req, reply) => reply.type("text/plain").send("ok"));
      scoped.get("/readyz", async (_req, reply) => {
        const reason = this.notReadyReason();
        return reply.code(reason ? 503 : 200).send({ ready: !reason, reason, podId: this.config.podId, lagP99Ms: this.ctx.metrics.lag().recentP99Ms });
      });
      scoped.get("/health", async () => this.ctx.metrics.health());
      scoped.get("/metrics", async (_req, reply) => reply.type(this.ctx.metrics.contentType).send(await this.ctx.metrics.metricsText()));
      // Probes and metrics are GET only: other methods get a clear 405 with Allow.
      for (const url of ["/livez", "/readyz", "/health", "/metrics"]) {
        scoped.route({
          method: ["POST", "PUT", "DELETE", "PATCH"],
          url,
          handler: async (_req, reply) => reply.code(405).header("allow", "GET, HEAD").send(errorBody("METHOD_NOT_ALLOWED")),
        });
      }
    });
    return app;
  }

  async start(): Promise<PodAddresses> {
    const udp = await this.udp.start();
    await this.app.listen({ host: this.config.host, port: this.config.port });
    const a = this.app.server.address();
    const port = typeof a === "object" && a ? a.port : this.config.port;
    const host = this.config.host === "0.0.0.0" ? "127.0.0.1" : this.config.host;
    const httpUrl = `http://${host}:${port}`;
    this.addrs = { httpUrl, wsUrl: `ws://${host}:${port}/glasses-ws`, appWsUrl: "", udpHost: this.config.udpAdvertiseHost ?? udp.address, udpPort: udp.port, port };
    this.addrs.appWsUrl = this.ctx.appWsUrl();
    this.ctx.metrics.start();
    if (this.ctx.cluster) await this.ctx.cluster.start();
    await this.ctx.directory.ready();
    this.readyFlag = true;
    if (this.ctx.cluster) {
      // A pod (re)started while an operator's drain flag is set stays drained until undrain.
      this.ctx.cluster.setState(this.ctx.cluster.control.drainRequested ? "draining" : "ready");
      void this.ctx.cluster.beat();
      const loop = () => {
        this.reconcileTimer = setTimeout(() => void this.reconcile().finally(() => this.reconcileTimer && loop()), 10_000);
        this.reconcileTimer.unref();
      };
      loop();
    }
    this.ctx.log.info({ httpUrl, udpPort: udp.port, appWsUrl: this.addrs.appWsUrl }, "pod listening");
    return this.addrs;
  }

  /** Dies without goodbyes: sockets terminated, record left to expire, assignments kept. */
  async crash(): Promise<void> {
    this.shuttingDown = true;
    if (this.reconcileTimer) clearTimeout(this.reconcileTimer);
    this.reconcileTimer = null;
    this.ctx.cluster?.halt();
    const wss = (this.app as unknown as { websocketServer?: { clients: Set<{ terminate(): void }> } }).websocketServer;
    for (const c of wss?.clients ?? []) c.terminate();
    this.sessions.disposeAll("crash");
    this.ctx.metrics.stop();
    this.app.server.closeAllConnections();
    await this.app.close();
    await this.udp.stop();
  }

  /** Stops the pod: every phone and app gets close 1001 "Server shutting down" (override of @fastify/websocket's code-less close). */
  async stop(): Promise<void> {
    if (this.shuttingDown && !this.app.server.listening) return;
    this.shuttingDown = true;
    if (this.reconcileTimer) clearTimeout(this.reconcileTimer);
    this.reconcileTimer = null;
    if (this.ctx.cluster) {
      this.ctx.cluster.setState("draining");
      await this.ctx.cluster.beat();
    }
    for (const s of [...this.sessions.values()]) {
      for (const a of s.apps.apps.values()) safeClose(a.ws, CloseCode.GOING_AWAY, CloseReason.SERVER_SHUTTING_DOWN);
      safeClose(s.ws, CloseCode.GOING_AWAY, CloseReason.SERVER_SHUTTING_DOWN);
    }
    this.sessions.disposeAll("shutdown");
    this.ctx.metrics.stop();
    await this.ctx.cluster?.stop();
    await this.app.close();
    await this.udp.stop();
  }
}

/** For tests and the local cluster: die like a SIGKILLed process (no close frames, no registry goodbye). */
export async function crashPod(pod: Pod): Promise<void> {
  await pod.crash();
}

export function createPod(config: PodConfig, deps: PodDeps = {}): Pod {
  return new Pod(config, deps);
}
