/** /glasses-ws: the phone channel. The token is checked before the upgrade; bad tokens get 401 JSON. */
import type { FastifyInstance, FastifyRequest } from "fastify";
import type { WebSocket, RawData } from "ws";
import { CloseCode, extractToken, nowIso, verifyCoreToken } from "@mentra-cluster/protocol";
import type { Pod } from "../server.ts";
import { jsonDepth, MAX_JSON_DEPTH } from "../session/send.ts";

declare module "fastify" {
  interface FastifyRequest {
    mentraUserId?: string;
    /** Set when the cluster refused this phone: the socket is opened only to be closed with 4001. */
    mentraRefusal?: string;
    mentraEpoch?: number | null;
  }
}

export function tokenError(reason: "missing" | "invalid" | "no_user_id") {
  const message = reason === "missing" ? "No core token provided" : reason === "no_user_id" ? "Invalid core token - no user ID" : "Invalid core token";
  return { type: "connection_error", code: reason === "missing" ? "NO_TOKEN" : reason === "no_user_id" ? "NO_USER_ID" : "INVALID_TOKEN", message, timestamp: nowIso() };
}

export function registerGlassesWs(app: FastifyInstance, pod: Pod): void {
  const { ctx } = pod;
  app.get(
    "/glasses-ws",
    {
      websocket: true,
      preValidation: async (req: FastifyRequest, reply) => {
        if (pod.shuttingDown) return reply.code(503).send({ type: "connection_error", code: "SHUTTING_DOWN", message: "Server is shutting down", timestamp: nowIso() });
        const q = req.query as Record<string, unknown>;
        const res = verifyCoreToken(extractToken(req.headers.authorization, q.token), pod.config.jwtSecret);
        if (!res.ok) return reply.code(401).send(tokenError(res.reason));
        req.mentraUserId = res.userId;
        const existing0 = pod.sessions.get(res.userId);
        const isNew = !existing0 || existing0.disposed;
        if (isNew && pod.ctx.cluster && (pod.drainer.active || pod.ctx.cluster.state === "draining")) {
          req.mentraRefusal = "draining";
          return;
        }
        if (isNew && !pod.admitNewSession()) {
          ctx.metrics.newSessionRejected("rate_limit");
          return reply.code(503).header("retry-after", "1").send({ type: "connection_error", code: "TOO_MANY_NEW_SESSIONS", message: "This pod is admitting new sessions slowly; retry shortly", timestamp: nowIso() });
        }
        if (pod.ctx.cluster) {
          const ticket = typeof q.ticket === "string" ? q.ticket : (req.headers["x-route-ticket"] as string | undefined);
          const existing = pod.sessions.get(res.userId);
          const adm = await pod.ctx.cluster.admit(res.userId, ticket, !!existing && !existing.disposed);
          if (adm.ok) req.mentraEpoch = adm.epoch;
          else req.mentraRefusal = adm.reason;
        }
      },
    },
    (socket: WebSocket, req: FastifyRequest) => {
      const userId = req.mentraUserId!;
      if (req.mentraRefusal) {
        // Wrong pod, stale or bad ticket: send the phone back through the gateway.
        ctx.metrics.wrongPodArrival("phone_ws");
        ctx.metrics.droppedMessage("phone", `route_${req.mentraRefusal}`);
        ctx.log.info({ userId, reason: req.mentraRefusal }, "phone refused: reconnect via gateway");
        socket.send(JSON.stringify({ type: "connection_error", code: "RECONNECT_VIA_GATEWAY", reason: req.mentraRefusal, message: "Connect through the gateway to reach your pod", timestamp: nowIso(ctx.clock.now()) }));
        socket.close(CloseCode.RECONNECT_VIA_GATEWAY, `Reconnect via gateway: ${req.mentraRefusal}`);
        return;
      }
      const q = req.query as Record<string, unknown>;
      const udpEncryption = q.udpEncryption === "true" || q.udpEncryption === "1";
      const openedAt = ctx.clock.now();
      const { session, reconnection } = pod.sessions.createOrReconnect(socket, userId, { udpEncryption });
      if (req.mentraEpoch !== undefined && req.mentraEpoch !== null) session.epoch = req.mentraEpoch;

      socket.on("message", (data: RawData, isBinary: boolean) => {
        ctx.metrics.wsClientIn();
        if (session.disposed || session.ws !== socket) return void ctx.metrics.droppedMessage("phone", "stale_socket");
        if (isBinary) {
          const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data as ArrayBuffer);
          session.handleAudio(buf, "ws");
          return;
        }
        let msg: unknown;
        try {
          msg = JSON.parse(data.toString());
        } catch {
          ctx.metrics.droppedMessage("phone", "malformed_json");
          session.sendToPhone({ type: "connection_error", code: "MALFORMED_MESSAGE", message: "Frame is not valid JSON", timestamp: nowIso(ctx.clock.now()) });
          return;
        }
        if (!msg || typeof msg !== "object" || Array.isArray(msg)) return void ctx.metrics.droppedMessage("phone", "not_an_object");
        if (jsonDepth(msg) > MAX_JSON_DEPTH) return void ctx.metrics.droppedMessage("phone", "too_deep");
        try {
          const drop = session.handlePhoneMessage(msg as Record<string, unknown>);
          if (drop) ctx.metrics.droppedMessage("phone", drop);
        } catch (err) {
          // A bug of ours, not the client's: counted and logged, the socket stays up.
          ctx.metrics.droppedMessage("phone", "handler_error");
          ctx.log.error({ userId, err: (err as Error).message }, "phone message handler failed");
        }
      });
      socket.on("close", (code: number) => {
        ctx.metrics.phoneSocketClosed(code);
        const current = session.onPhoneClose(socket);
        ctx.log.info(
          { userId, code, durationMs: ctx.clock.now() - openedAt, current, msSinceLastPhoneMessage: ctx.clock.now() - session.lastPhoneMessageAt },
          "phone socket closed",
        );
      });
      socket.on("error", (err) => ctx.log.warn({ userId, err: err.message }, "phone socket error"));

      session.sendToPhone(session.ackMessage());
      session.display.flush();
      if (reconnection) {
        void session.apps.resurrectDormant();
      } else {
        void ctx.directory
          .getOrCreateUser(userId)
          .then((user) => {
            if (!session.disposed) return session.apps.startPreviouslyRunning(user.runningApps);
          })
          .catch((err) => ctx.log.error({ userId, err: (err as Error).message }, "could not start previously running apps"));
      }
    },
  );
}
