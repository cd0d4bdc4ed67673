/** REST that needs the user's session (protocol.md §2.6). A valid token without a session is 503, never 401 (C6). */
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { extractToken, nowIso, verifyCoreToken } from "@mentra-cluster/protocol";
import { errorBody, PodError, type PodErrorCode } from "../errors.ts";
import type { Pod } from "../server.ts";
import type { UserSession } from "../session/UserSession.ts";

function fail(reply: FastifyReply, code: PodErrorCode, message?: string) {
  return reply.code(PodError[code].status).send(errorBody(code, message));
}

export function registerClientRoutes(app: FastifyInstance, pod: Pod): void {
  const auth = (req: FastifyRequest, reply: FastifyReply): string | null => {
    const res = verifyCoreToken(extractToken(req.headers.authorization, undefined), pod.config.jwtSecret);
    if (res.ok) return res.userId;
    void fail(reply, res.reason === "missing" ? "NO_TOKEN" : res.reason === "no_user_id" ? "NO_USER_ID" : "INVALID_TOKEN");
    return null;
  };
  const withSession = async (req: FastifyRequest, reply: FastifyReply): Promise<UserSession | null> => {
    const userId = auth(req, reply);
    if (!userId) return null;
    const s = pod.sessions.get(userId);
    if (!s || s.disposed) {
      pod.ctx.metrics.wrongPodArrival("rest");
      // C6: never 401 for a valid token. The owner is elsewhere: redirect there (same path).
      const owner = pod.ctx.cluster ? await pod.ctx.cluster.ownerElsewhere(userId) : null;
      if (owner) {
        void reply.code(307).header("location", `${owner.endpoints.httpUrl}${req.url.replace(/^\/p\/[^/]+/, "")}`).send();
        return null;
      }
      void reply.code(503).header("retry-after", "1").send({ ...errorBody("NO_ACTIVE_SESSION"), error: "no_active_session", podId: pod.config.podId });
      return null;
    }
    return s;
  };

  const start = async (req: FastifyRequest<{ Params: { pkg: string } }>, reply: FastifyReply) => {
    const s = await withSession(req, reply);
    if (!s) return reply;
    const r = await s.apps.startApp(req.params.pkg);
    if (r.success) return { success: true, data: { status: "started", isRunning: true, packageName: req.params.pkg } };
    return reply.code(PodError[r.code].status).send({ ...errorBody(r.code, r.message), stage: r.code, data: { isRunning: false } });
  };
  const stop = async (req: FastifyRequest<{ Params: { pkg: string } }>, reply: FastifyReply) => {
    const s = await withSession(req, reply);
    if (!s) return reply;
    await s.apps.stopApp(req.params.pkg);
    return { success: true, data: { status: "stopped", isRunning: false, packageName: req.params.pkg } };
  };
  for (const prefix of ["", "/api"]) {
    app.post(`${prefix}/apps/:pkg/start`, start);
    app.post(`${prefix}/apps/:pkg/stop`, stop);
  }

  app.get("/api/client/apps", async (req, reply) => {
    const s = await withSession(req, reply);
    if (!s) return reply;
    const user = await pod.ctx.directory.getOrCreateUser(s.userId);
    const pkgs = new Set([...user.installedApps, ...s.apps.apps.keys()]);
    const data = [];
    for (const pkg of pkgs) {
      const rec = await pod.ctx.directory.getApp(pkg);
      const a = s.apps.get(pkg);
      data.push({
        packageName: pkg,
        name: rec?.name ?? pkg,
        type: rec?.type ?? "standard",
        running: s.apps.isRunning(pkg),
        state: a?.state ?? "STOPPED",
      });
    }
    return { success: true, data };
  });

  app.post("/api/client/audio/configure", async (req, reply) => {
    const s = await withSession(req, reply);
    if (!s) return reply;
    const body = req.body as { format?: unknown; lc3Config?: unknown } | undefined;
    if (!body || typeof body !== "object" || (body.format !== "pcm" && body.format !== "lc3")) {
      return fail(reply, "INVALID_REQUEST", 'format must be "pcm" or "lc3"');
    }
    if (body.format === "lc3") {
      return reply.code(422).send({ success: false, error: "unsupported_format", format: "lc3", supported: ["pcm"], message: PodError.UNSUPPORTED_FORMAT.message, timestamp: nowIso() });
    }
    s.audioFormat = "pcm";
    return { success: true, format: "pcm", lc3Config: null, message: "Audio format set to PCM s16le 16 kHz mono", timestamp: nowIso() };
  });

  app.post("/api/client/device/state", async (req, reply) => {
    const s = await withSession(req, reply);
    if (!s) return reply;
    const body = req.body;
    if (!body || typeof body !== "object" || Array.isArray(body)) return fail(reply, "INVALID_REQUEST", "body must be a JSON object");
    const d = s.applyDeviceState(body as Record<string, unknown>);
    return { success: true, appliedState: { isGlassesConnected: d.isGlassesConnected, isPhoneConnected: d.isPhoneConnected, modelName: d.modelName, capabilities: d.capabilities } };
  });

  app.get("/api/client/user/settings", async (req, reply) => {
    const userId = auth(req, reply);
    if (!userId) return reply;
    const user = await pod.ctx.directory.getOrCreateUser(userId);
    return { success: true, data: { settings: user.settings } };
  });
  app.post("/api/client/user/settings", async (req, reply) => {
    const userId = auth(req, reply);
    if (!userId) return reply;
    const body = req.body as { settings?: unknown } | undefined;
    const patch = body && typeof body === "object" && body.settings && typeof body.settings === "object" ? body.settings : body;
    if (!patch || typeof patch !== "object" || Array.isArray(patch)) return fail(reply, "INVALID_REQUEST", "settings must be a JSON object");
    await pod.ctx.directory.setUserSettings(userId, patch as Record<string, unknown>);
    return { success: true };
  });
}
