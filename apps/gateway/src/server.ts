/**
 * The routing gateway: stateless, thin. Verifies the phone's core token, asks the Router for the
 * user's pod (keep a live assignment, else place and claim it atomically) and answers with that
 * pod's own endpoints and a signed route ticket, or a 307 to the pod for clients that follow
 * redirects. Admin API for operators. Several replicas share one Redis and give the same answer.
 */
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from "fastify";
import pino, { type Logger } from "pino";
import { createHash, timingSafeEqual } from "node:crypto";
import http from "node:http";
import type { Duplex } from "node:stream";
import { extractToken, signRouteTicket, verifyCoreToken } from "@mentra-cluster/protocol";
import { Router, type AssignmentStore, type PodRegistry, type PodView, type RouteDecision } from "@mentra-cluster/registry";
import type { GatewayConfig } from "./config.ts";
import { GatewayMetrics } from "./metrics.ts";
import { proxyHttp, proxyUpgrade, rawResponse } from "./proxy.ts";

export interface GatewayDeps {
  registry: PodRegistry;
  assignments: AssignmentStore;
  logger?: Logger;
  random?: () => number;
  snapshotIntervalMs?: number;
}

const digest = (s: string) => createHash("sha256").update(s).digest();
const POD_PATH = /^\/p\/([A-Za-z0-9._-]+)(\/.*)?$/;

export class Gateway {
  readonly app: FastifyInstance;
  readonly router: Router;
  readonly metrics: GatewayMetrics;
  readonly log: Logger;
  url = "";

  constructor(readonly config: GatewayConfig, readonly deps: GatewayDeps) {
    this.log = deps.logger ?? pino({ level: config.logLevel, base: { gatewayId: config.gatewayId } });
    this.router = new Router({
      registry: deps.registry,
      assignments: deps.assignments,
      random: deps.random,
      snapshotIntervalMs: deps.snapshotIntervalMs,
      onError: (what, err) => this.log.warn({ what, err: (err as Error).message }, "registry call failed"),
    });
    this.metrics = new GatewayMetrics(config.gatewayId, this.router);
    this.app = this.build();
  }

  /** Answers a route decision for a verified user; the one place every entry point goes through. */
  async decide(userId: string): Promise<RouteDecision> {
    const end = this.metrics.placement.startTimer();
    const d = await this.router.route(userId);
    end();
    this.metrics.routes.inc({ result: d.ok ? (d.placed ? "placed" : d.source === "cache" ? "kept_cached" : "kept") : d.code });
    return d;
  }

  routeBody(pod: PodView, d: Extract<RouteDecision, { ok: true }>) {
    const expiresAt = Date.now() + this.config.ticketTtlMs;
    const ticket = signRouteTicket({ userId: d.assignment.userId, podId: pod.podId, epoch: d.assignment.epoch, expiresAt }, this.config.ticketKey);
    const sep = pod.endpoints.wsUrl.includes("?") ? "&" : "?";
    return {
      podId: pod.podId,
      epoch: d.assignment.epoch,
      glassesWsUrl: `${pod.endpoints.wsUrl}${sep}ticket=${encodeURIComponent(ticket)}`,
      restBaseUrl: pod.endpoints.httpUrl,
      udpHost: pod.endpoints.udpHost,
      udpPort: pod.endpoints.udpPort,
      ticket,
      ticketExpiresAt: expiresAt,
    };
  }

  /** Verified core tokens (they carry no expiry); bounded, oldest evicted first. */
  private readonly verified = new Map<string, string>();

  private userFrom(authorization: string | undefined, query: unknown): { ok: true; userId: string } | { ok: false; status: number; body: object } {
    const token = extractToken(authorization, query);
    const known = token ? this.verified.get(token) : undefined;
    if (known) return { ok: true, userId: known };
    const res = verifyCoreToken(token, this.config.jwtSecret);
    if (res.ok) {
      // Tokens with an exp claim are re-verified every time.
      if (token && res.claims.exp === undefined) {
        this.verified.set(token, res.userId);
        if (this.verified.size > 100_000) this.verified.delete(this.verified.keys().next().value as string);
      }
      return { ok: true, userId: res.userId };
    }
    const error = res.reason === "missing" ? "no_token" : res.reason === "no_user_id" ? "no_user_id" : "invalid_token";
    return { ok: false, status: 401, body: { success: false, error, message: error === "no_token" ? "No core token provided" : "Invalid core token" } };
  }

  private failBody(d: Extract<RouteDecision, { ok: false }>) {
    return {
      success: false,
      error: d.code,
      message: d.code === "no_capacity" ? "No pod can take a new user right now" : "The routing store is unavailable; retry shortly",
      retryAfterS: d.retryAfterS,
    };
  }

  private build(): FastifyInstance {
    const app = Fastify({
      loggerInstance: this.log as unknown as FastifyBaseLogger,
      logController: new LogController({ disableRequestLogging: true }),
      // Local cluster: /p/<podId>/… is forwarded as raw bytes before fastify reads any body.
      serverFactory: (handler) =>
        http.createServer((req, res) => {
          const m = this.config.proxyPods ? POD_PATH.exec(req.url ?? "") : null;
          if (!m) return handler(req, res);
          const pod = this.router.pod(m[1]!);
          if (!pod) {
            res.writeHead(404, { "content-type": "application/json" });
            res.end(JSON.stringify({ success: false, error: "pod_not_found", message: "No such pod in the registry" }));
            return;
          }
          proxyHttp(req, res, new URL(pod.endpoints.internalUrl));
        }),
    });
    app.addHook("onResponse", async (_req, reply) => {
      const c = Math.floor(reply.statusCode / 100);
      if (c >= 2 && c <= 5) this.metrics.http.inc({ status: `${c}xx` });
    });
    app.setErrorHandler((err: { statusCode?: number; code?: string; message: string }, req, reply) => {
      const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 600 ? err.statusCode : 500;
      if (status >= 500) this.log.error({ err: err.message, url: req.url.split("?")[0] }, "request failed");
      void reply.code(status).send({ success: false, error: status >= 500 ? "internal" : (err.code ?? "bad_request").toLowerCase(), message: status >= 500 ? "Internal error" : err.message });
    });
    app.setNotFoundHandler((req, reply) => void reply.code(404).send({ success: false, error: "not_found", message: `No route ${req.method} ${req.url.split("?")[0]}` }));

    // The phone's core token is checked in onRequest, before any body is read: a bad token is a 401
    // whatever the body holds, and an unauthenticated client cannot make us parse anything.
    const users = new WeakMap<FastifyRequest, string>();
    const requireUser = async (req: FastifyRequest, reply: FastifyReply) => {
      const u = this.userFrom(req.headers.authorization, undefined);
      if (!u.ok) return reply.code(u.status).send(u.body);
      users.set(req, u.userId);
    };
    app.post("/v1/route", { onRequest: requireUser }, async (req, reply) => {
      const d = await this.decide(users.get(req)!);
      if (!d.ok) return reply.code(503).header("retry-after", String(d.retryAfterS)).send(this.failBody(d));
      return this.routeBody(d.pod, d);
    });

    // REST paths that need the session: 307 to the same path on the owner (same-origin by default).
    const redirect = async (req: FastifyRequest, reply: FastifyReply) => {
      const d = await this.decide(users.get(req)!);
      if (!d.ok) return reply.code(503).header("retry-after", String(d.retryAfterS)).send(this.failBody(d));
      this.metrics.redirects.inc({ kind: "rest" });
      return reply.code(307).header("location", `${d.pod.endpoints.httpUrl}${req.url}`).send();
    };
    for (const prefix of ["/apps/*", "/api/*"]) app.route({ method: ["GET", "POST", "PUT", "DELETE", "PATCH"], url: prefix, onRequest: requireUser, handler: redirect });

    this.admin(app);
    app.get("/livez", async (_req, reply) => reply.type("text/plain").send("ok"));
    app.get("/readyz", async (_req, reply) => {
      const ready = this.router.snapshotAt > 0;
      return reply.code(ready ? 200 : 503).send({ ready, snapshotAgeMs: ready ? Date.now() - this.router.snapshotAt : null, registryOk: this.router.snapshotOk });
    });
    app.get("/metrics", async (_req, reply) => reply.type(this.metrics.registry.contentType).send(await this.metrics.registry.metrics()));

    return app;
  }

  private admin(app: FastifyInstance): void {
    app.addHook("onRequest", async (req, reply) => {
      // The matched route, not the raw URL: "/%61dmin/…" routes to /admin/… and must not skip auth.
      if (!(req.routeOptions.url ?? "").startsWith("/admin/")) return;
      const token = this.config.adminToken;
      const given = (req.headers.authorization ?? "").replace(/^Bearer\s+/i, "");
      if (!token || !given || !timingSafeEqual(digest(token), digest(given))) {
        this.metrics.admin.inc({ action: "unauthorized" });
        return reply.code(401).send({ success: false, error: "unauthorized", message: token ? "Missing or wrong admin token" : "Admin API disabled: ADMIN_TOKEN is not set" });
      }
    });
    app.get("/admin/pods", async () => {
      await this.router.refresh();
      this.metrics.admin.inc({ action: "list" });
      return { pods: this.router.snapshot(), snapshotAt: this.router.snapshotAt };
    });
    app.get<{ Params: { userId: string } }>("/admin/users/:userId", async (req, reply) => {
      this.metrics.admin.inc({ action: "lookup" });
      const a = await this.deps.assignments.get(req.params.userId.toLowerCase());
      if (!a) return reply.code(404).send({ success: false, error: "no_assignment", message: "The user has no pod" });
      const pod = this.router.pod(a.podId) ?? null;
      return { assignment: a, pod, alive: !!pod };
    });
    const control = (action: "cordon" | "uncordon" | "drain" | "undrain") =>
      async (req: FastifyRequest<{ Params: { podId: string }; Body: { deadlineMs?: number; ratePerS?: number } | undefined }>, reply: FastifyReply) => {
        const raw: unknown = req.body;
        if (raw !== undefined && (raw === null || typeof raw !== "object" || Array.isArray(raw))) {
          return reply.code(400).send({ success: false, error: "invalid_request", message: "The body must be a JSON object (or empty)" });
        }
        await this.router.refresh();
        const pod = this.router.pod(req.params.podId);
        if (!pod) return reply.code(404).send({ success: false, error: "pod_not_found", message: `No live pod ${req.params.podId}` });
        const body = req.body ?? {};
        if (body.deadlineMs !== undefined && !(Number.isFinite(body.deadlineMs) && body.deadlineMs > 0)) return reply.code(400).send({ success: false, error: "invalid_request", message: "deadlineMs must be a positive number" });
        if (body.ratePerS !== undefined && !(Number.isFinite(body.ratePerS) && body.ratePerS > 0)) return reply.code(400).send({ success: false, error: "invalid_request", message: "ratePerS must be a positive number" });
        const patch =
          action === "cordon" ? { cordoned: true } :
          action === "uncordon" ? { cordoned: false } :
          action === "drain" ? { drainRequested: true, drainDeadlineMs: body.deadlineMs, drainRatePerS: body.ratePerS } :
          { drainRequested: false, cordoned: false };
        const ctl = await this.deps.registry.setControl(pod.podId, patch);
        await this.router.refresh();
        this.metrics.admin.inc({ action });
        this.log.info({ podId: pod.podId, action }, "admin action");
        return { success: true, podId: pod.podId, control: ctl };
      };
    app.post("/admin/pods/:podId/cordon", control("cordon"));
    app.post("/admin/pods/:podId/uncordon", control("uncordon"));
    app.post("/admin/pods/:podId/drain", control("drain"));
    app.post("/admin/pods/:podId/undrain", control("undrain"));
  }

  /** Upgrade requests: /glasses-ws gets a 307 to its pod; /p/<podId>/… is proxied in local mode. */
  private async onUpgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const url = new URL(req.url ?? "/", "http://gateway");
    const m = POD_PATH.exec(url.pathname);
    if (m && this.config.proxyPods) {
      const pod = this.router.pod(m[1]!);
      if (!pod) return rawResponse(socket, 404, { "content-type": "application/json" }, JSON.stringify({ error: "pod_not_found" }));
      return proxyUpgrade(req, socket, head, new URL(pod.endpoints.internalUrl));
    }
    if (url.pathname !== "/glasses-ws") return rawResponse(socket, 404, { "content-type": "application/json" }, JSON.stringify({ error: "not_found" }));
    const u = this.userFrom(req.headers.authorization, url.searchParams.get("token"));
    if (!u.ok) return rawResponse(socket, u.status, { "content-type": "application/json" }, JSON.stringify({ type: "connection_error", ...u.body }));
    const d = await this.decide(u.userId);
    if (!d.ok) return rawResponse(socket, 503, { "content-type": "application/json", "retry-after": String(d.retryAfterS) }, JSON.stringify(this.failBody(d)));
    const body = this.routeBody(d.pod, d);
    const target = new URL(body.glassesWsUrl);
    for (const [k, v] of url.searchParams) if (k !== "ticket") target.searchParams.set(k, v);
    this.metrics.redirects.inc({ kind: "glasses_ws" });
    rawResponse(socket, 307, { location: target.toString() });
  }

  async start(): Promise<string> {
    await this.router.start();
    this.app.server.on("upgrade", (req, socket, head) => {
      this.onUpgrade(req, socket, head).catch((err) => {
        this.log.error({ err: (err as Error).message }, "upgrade failed");
        rawResponse(socket, 500, {});
      });
    });
    await this.app.listen({ host: this.config.host, port: this.config.port });
    const a = this.app.server.address();
    this.url = `http://${this.config.host === "0.0.0.0" ? "127.0.0.1" : this.config.host}:${typeof a === "object" && a ? a.port : this.config.port}`;
    this.log.info({ url: this.url, proxyPods: this.config.proxyPods }, "gateway listening");
    return this.url;
  }

  async stop(): Promise<void> {
    this.router.stop();
    await this.app.close();
  }
}
