/**
 * /app-ws: the mini-app channel exactly as @mentra/sdk 2.1.29 speaks it. No auth headers; the
 * first frame is tpa_connection_init with the plain API key, checked against the stored hash.
 */
import type { FastifyInstance } from "fastify";
import type { WebSocket, RawData } from "ws";
import { CloseCode, nowIso, normaliseStream, userIdFromAppSessionId, type AppErrorCode } from "@mentra-cluster/protocol";
import { verifyApiKey } from "@mentra-cluster/directory";
import type { Pod } from "../server.ts";
import type { AppSession } from "../session/AppManager.ts";
import type { UserSession } from "../session/UserSession.ts";
import { jsonDepth, MAX_JSON_DEPTH, safeClose } from "../session/send.ts";

export function registerAppWs(app: FastifyInstance, pod: Pod): void {
  const { ctx } = pod;
  app.get("/app-ws", { websocket: true }, (socket: WebSocket) => {
    let bound: { session: UserSession; app: AppSession } | null = null;
    let initInFlight = false;
    const queued: RawData[] = [];

    const refuse = (code: AppErrorCode, message: string, closeCode: number = CloseCode.POLICY_VIOLATION) => {
      ctx.metrics.droppedMessage("app", `init_${code.toLowerCase()}`);
      if (socket.readyState === 1) socket.send(JSON.stringify({ type: "tpa_connection_error", code, message, timestamp: nowIso(ctx.clock.now()) }));
      safeClose(socket, closeCode, message.slice(0, 120));
    };

    const initTimer = ctx.clock.setTimeout(() => {
      if (!bound && !initInFlight) refuse("MALFORMED_MESSAGE", "No tpa_connection_init received");
    }, ctx.timings.appInitTimeoutMs);

    const handleInit = async (msg: Record<string, unknown>) => {
      const { sessionId, packageName, apiKey } = msg;
      if (typeof sessionId !== "string" || typeof packageName !== "string" || !packageName) {
        return refuse("MALFORMED_MESSAGE", "tpa_connection_init needs sessionId and packageName");
      }
      const userId = userIdFromAppSessionId(sessionId, packageName);
      if (!userId) return refuse("MALFORMED_MESSAGE", "sessionId must be <userId>-<packageName>");
      const session = pod.sessions.get(userId);
      const appSession = session?.apps.get(packageName);
      const record = appSession?.app ?? (await ctx.directory.getApp(packageName));
      if (!record || !verifyApiKey(apiKey, record.hashedApiKey)) return refuse("INVALID_API_KEY", "Invalid API key");
      if (!session || session.disposed) {
        ctx.metrics.wrongPodArrival("app_ws");
        return refuse("SESSION_NOT_FOUND", "No user session for this app session on this pod");
      }
      if (socket.readyState !== 1) return;
      const accepted = session.apps.acceptInit(packageName, socket);
      if (accepted === "APP_NOT_STARTED") return refuse("APP_NOT_STARTED", "App was not started for this user");
      bound = { session, app: accepted };
      const ts = nowIso(ctx.clock.now());
      socket.send(JSON.stringify({
        type: "tpa_connection_ack",
        sessionId,
        settings: [],
        mentraosSettings: {},
        capabilities: session.device.capabilities ?? null,
        timestamp: ts,
      }));
      socket.send(JSON.stringify({
        type: "device_state_update",
        state: { connected: session.device.isGlassesConnected, modelName: session.device.modelName },
        fullSnapshot: true,
        timestamp: ts,
      }));
      ctx.metrics.wsMiniappOut(2);
    };

    const handle = (data: RawData, isBinary: boolean) => {
      if (isBinary) return void ctx.metrics.droppedMessage("app", "binary_unsupported");
      let msg: Record<string, unknown>;
      try {
        const parsed = JSON.parse(data.toString());
        if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) throw new Error("not an object");
        if (jsonDepth(parsed) > MAX_JSON_DEPTH) throw new Error("too deep");
        msg = parsed;
      } catch {
        ctx.metrics.droppedMessage("app", "malformed_json");
        if (!bound) return refuse("MALFORMED_MESSAGE", "Frame is not valid JSON");
        socket.send(JSON.stringify({ type: "tpa_connection_error", code: "MALFORMED_MESSAGE", message: "Frame is not valid JSON", timestamp: nowIso(ctx.clock.now()) }));
        return;
      }
      if (!bound) {
        if (msg.type !== "tpa_connection_init") return refuse("MALFORMED_MESSAGE", "First message must be tpa_connection_init");
        initInFlight = true;
        void handleInit(msg)
          .catch((err) => {
            ctx.log.error({ err: (err as Error).message }, "app init failed");
            refuse("INTERNAL_ERROR", "Internal error", CloseCode.INTERNAL_ERROR);
          })
          .finally(() => {
            initInFlight = false;
            ctx.clock.clearTimeout(initTimer);
            const pending = queued.splice(0);
            if (bound) for (const q of pending) handle(q, false);
          });
        return;
      }
      const { session, app: a } = bound;
      if (session.apps.get(a.packageName) !== a || a.ws !== socket) return void ctx.metrics.droppedMessage("app", "stale_socket");
      a.messagesIn++;
      switch (msg.type) {
        case "subscription_update": {
          if (!Array.isArray(msg.subscriptions)) return void ctx.metrics.droppedMessage("app", "invalid_field");
          const subs = msg.subscriptions.map(normaliseStream).filter((s): s is string => s !== null);
          if (session.apps.onSubscriptionUpdate(a, subs) === "ignored_empty") ctx.metrics.droppedMessage("app", "empty_subscription_during_reconnect");
          return;
        }
        case "display_event": {
          const layout = msg.layout as { layoutType?: unknown } | undefined;
          if (!layout || typeof layout !== "object" || typeof layout.layoutType !== "string") return void ctx.metrics.droppedMessage("app", "invalid_field");
          session.apps.onDisplay(a, msg as never);
          return;
        }
        case "ping":
          // 3.x SDKs ping every 15 s; answered at once. We never ping apps ourselves (C23).
          socket.send(JSON.stringify({ type: "pong", timestamp: ctx.clock.now() }));
          ctx.metrics.wsMiniappOut();
          return;
        case "ownership_release":
          session.apps.onOwnershipRelease(a);
          return;
        case "tpa_connection_init":
          return void ctx.metrics.droppedMessage("app", "duplicate_init");
        default:
          return void ctx.metrics.droppedMessage("app", typeof msg.type === "string" ? "unsupported_type" : "missing_type");
      }
    };

    socket.on("message", (data: RawData, isBinary: boolean) => {
      ctx.metrics.wsMiniappIn();
      if (initInFlight) {
        if (queued.length < 100) queued.push(data);
        else ctx.metrics.droppedMessage("app", "queue_full_during_init");
        return;
      }
      try {
        handle(data, isBinary);
      } catch (err) {
        ctx.metrics.droppedMessage("app", "handler_error");
        ctx.log.error({ err: (err as Error).message }, "app message handler failed");
      }
    });
    socket.on("close", (code: number) => {
      ctx.clock.clearTimeout(initTimer);
      if (bound) bound.session.apps.onSocketClose(bound.app, socket, code);
    });
    socket.on("error", (err) => ctx.log.warn({ err: err.message }, "app socket error"));
  });
}
