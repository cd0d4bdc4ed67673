/** Operator endpoints behind the admin bearer token. */
import type { FastifyInstance } from "fastify";
import { timingSafeEqual, createHash } from "node:crypto";
import { errorBody } from "../errors.ts";
import type { Pod } from "../server.ts";

const digest = (s: string) => createHash("sha256").update(s).digest();

export function registerAdminRoutes(app: FastifyInstance, pod: Pod): void {
  app.addHook("onRequest", async (req, reply) => {
    // The matched route, not the raw URL: "/%61dmin/…" routes to /admin/… and must not skip auth.
    if (!(req.routeOptions.url ?? "").startsWith("/admin/")) return;
    const token = pod.config.adminToken;
    const given = (req.headers.authorization ?? "").replace(/^Bearer\s+/i, "");
    if (!token || !given || !timingSafeEqual(digest(token), digest(given))) {
      return reply.code(401).send(errorBody("UNAUTHORIZED", token ? undefined : "Admin API disabled: ADMIN_TOKEN is not set"));
    }
  });
  app.get("/admin/sessions", async () => ({
    podId: pod.config.podId,
    count: pod.sessions.size,
    sessions: [...pod.sessions.values()].map((s) => s.telemetry()),
  }));
  app.get<{ Params: { userId: string } }>("/admin/sessions/:userId", async (req, reply) => {
    const s = pod.sessions.get(req.params.userId.toLowerCase());
    if (!s) return reply.code(404).send({ ...errorBody("NOT_FOUND", "No session for that user on this pod"), error: "session_not_found" });
    return s.telemetry();
  });
}
