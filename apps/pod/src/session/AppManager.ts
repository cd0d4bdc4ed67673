/**
 * The mini apps of one user on this pod. States (protocol.md §3):
 * CONNECTING → RUNNING → (socket lost) GRACE 5 s → re-init ⇒ RUNNING, else webhook resurrection
 * while the phone is connected (RESURRECTING), else DORMANT until the phone returns.
 * App session id = `<userId>-<packageName>`, as the SDK expects: a move to another pod reuses the
 * SDK's own "switching clouds" hand-off, and this pod never sends anything that could end an app
 * session it no longer owns (see README, "App session ids").
 */
import type { WebSocket } from "ws";
import {
  appSessionId,
  CloseCode,
  CloseReason,
  nowIso,
  type AppDisplayRequest,
  type DataStream,
  type SessionRequestWebhook,
  type StopRequestWebhook,
} from "@mentra-cluster/protocol";
import type { AppRecord } from "@mentra-cluster/directory";
import type { PodContext } from "../context.ts";
import type { TimerId } from "../util/clock.ts";
import { safeClose, sendJson } from "./send.ts";
import type { UserSession } from "./UserSession.ts";

export type AppState = "CONNECTING" | "RUNNING" | "GRACE" | "RESURRECTING" | "DORMANT" | "STOPPING" | "STOPPED";

export type StartResult =
  | { success: true; status: "started" | "already_running" }
  | { success: false; code: "APP_NOT_FOUND" | "TIMEOUT" | "WEBHOOK_FAILED" | "SESSION_ENDED" | "STOPPED"; message: string };

export class AppSession {
  state: AppState = "CONNECTING";
  ws: WebSocket | null = null;
  readonly sessionId: string;
  startedAt: number;
  connectedAt = 0;
  graceTimer: TimerId | null = null;
  connectTimer: TimerId | null = null;
  /** The SDK announced a hand-off to another cloud; the coming close is final. */
  released = false;
  everRunning = false;
  private waiters: ((r: StartResult) => void)[] = [];
  messagesIn = 0;
  messagesOut = 0;

  constructor(readonly app: AppRecord, readonly userId: string, now: number) {
    this.sessionId = appSessionId(userId, app.packageName);
    this.startedAt = now;
  }
  get packageName(): string {
    return this.app.packageName;
  }
  wait(): Promise<StartResult> {
    return new Promise((r) => this.waiters.push(r));
  }
  settle(r: StartResult): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f(r);
  }
}

export class AppManager {
  readonly apps = new Map<string, AppSession>();
  private disposed = false;

  constructor(private readonly ctx: PodContext, private readonly session: UserSession) {}

  get(pkg: string): AppSession | undefined {
    return this.apps.get(pkg);
  }

  isRunning(pkg: string): boolean {
    const a = this.apps.get(pkg);
    return !!a && a.state !== "STOPPED" && a.state !== "STOPPING";
  }

  connectedCount(): number {
    let n = 0;
    for (const a of this.apps.values()) if (a.ws) n++;
    return n;
  }

  private transition(a: AppSession, to: AppState): void {
    if (a.state === to) return;
    this.ctx.metrics.appStateTransition(a.state, to);
    a.state = to;
  }

  async startApp(pkg: string): Promise<StartResult> {
    if (this.disposed) return { success: false, code: "SESSION_ENDED", message: "User session ended" };
    const existing = this.apps.get(pkg);
    if (existing) {
      if (existing.state === "RUNNING") return { success: true, status: "already_running" };
      if (existing.state === "CONNECTING" || existing.state === "RESURRECTING") return existing.wait();
      if (existing.state === "GRACE" || existing.state === "DORMANT") return this.resurrect(existing);
    }
    const app = await this.ctx.directory.getApp(pkg);
    if (this.disposed) return { success: false, code: "SESSION_ENDED", message: "User session ended" };
    if (!app) return { success: false, code: "APP_NOT_FOUND", message: `App ${pkg} is not registered` };
    const again = this.apps.get(pkg);
    if (again && again.state !== "STOPPED" && again.state !== "STOPPING") return this.startApp(pkg);
    const a = new AppSession(app, this.session.userId, this.ctx.clock.now());
    this.apps.set(pkg, a);
    this.ctx.metrics.appStateTransition("STOPPED", "CONNECTING");
    this.session.display.boot(pkg, app.name);
    return this.connectViaWebhook(a);
  }

  /** Sends session_request and waits (≤ appConnectTimeoutMs) for the app's init on /app-ws. */
  private connectViaWebhook(a: AppSession): Promise<StartResult> {
    const result = a.wait();
    this.ctx.clock.clearTimeout(a.connectTimer);
    a.connectTimer = this.ctx.clock.setTimeout(() => {
      a.connectTimer = null;
      if (a.state === "CONNECTING" || a.state === "RESURRECTING") {
        this.fail(a, "TIMEOUT", `App did not connect within ${this.ctx.timings.appConnectTimeoutMs} ms`);
      }
    }, this.ctx.timings.appConnectTimeoutMs);
    const body: SessionRequestWebhook = {
      type: "session_request",
      sessionId: a.sessionId,
      userId: this.session.userId,
      timestamp: nowIso(this.ctx.clock.now()),
      mentraOSWebsocketUrl: this.ctx.appWsUrl(),
      augmentOSWebsocketUrl: this.ctx.appWsUrl(),
    };
    void this.postWebhook(a.app, body).then((ok) => {
      this.ctx.metrics.webhook("session_request", ok);
      if (ok !== "ok" && (a.state === "CONNECTING" || a.state === "RESURRECTING") && !a.ws && this.apps.get(a.packageName) === a) {
        this.fail(a, "WEBHOOK_FAILED", `Webhook to ${a.app.publicUrl}/webhook failed: ${ok}`);
      }
    });
    return result;
  }

  /** POSTs a webhook with the cloud's retry policy. Resolves "ok" or a failure reason; never rejects. */
  private async postWebhook(app: AppRecord, body: SessionRequestWebhook | StopRequestWebhook, attempts = this.ctx.timings.webhookAttempts): Promise<string> {
    let last = "error";
    for (let i = 0; i < attempts; i++) {
      if (i > 0) await new Promise((r) => setTimeout(r, this.ctx.timings.webhookBackoffMs));
      if (this.disposed && body.type === "session_request") return "session_ended";
      try {
        const res = await this.ctx.fetch(`${app.publicUrl}/webhook`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(body),
          signal: AbortSignal.timeout(this.ctx.timings.webhookTimeoutMs),
        });
        await res.arrayBuffer().catch(() => undefined);
        if (res.ok) return "ok";
        last = `http_${res.status}`;
        // The SDK answers 500 after its own 5 s ack timeout; a retry would look like a take-over.
        if (body.type === "session_request" && res.status >= 400) return last;
      } catch (err) {
        last = (err as Error).name === "TimeoutError" ? "timeout" : "network_error";
      }
    }
    return last;
  }

  private fail(a: AppSession, code: "TIMEOUT" | "WEBHOOK_FAILED", message: string): void {
    this.ctx.clock.clearTimeout(a.connectTimer);
    a.connectTimer = null;
    const wasResurrecting = a.state === "RESURRECTING";
    this.transition(a, "STOPPED");
    if (this.apps.get(a.packageName) === a) this.apps.delete(a.packageName);
    this.session.display.forget(a.packageName);
    this.session.subscriptions.remove(a.packageName);
    this.session.onSubscriptionsChanged();
    this.ctx.log.warn({ userId: this.session.userId, packageName: a.packageName, code, wasResurrecting }, "app failed to start");
    this.session.sendToPhone({ type: "app_stopped", packageName: a.packageName, timestamp: nowIso(this.ctx.clock.now()) });
    this.session.sendAppStateChange();
    a.settle({ success: false, code, message });
  }

  private resurrect(a: AppSession): Promise<StartResult> {
    this.ctx.clock.clearTimeout(a.graceTimer);
    a.graceTimer = null;
    this.transition(a, "RESURRECTING");
    return this.connectViaWebhook(a);
  }

  /**
   * An app presented a valid tpa_connection_init. Returns the app session it now drives, or an
   * error code for the init to be refused with.
   */
  acceptInit(pkg: string, ws: WebSocket): AppSession | "APP_NOT_STARTED" {
    const a = this.apps.get(pkg);
    if (!a || a.state === "STOPPING" || a.state === "STOPPED") return "APP_NOT_STARTED";
    // A previous socket (an SDK reconnect or hand-off) is no longer this app's; its close is ignored.
    if (a.ws && a.ws !== ws) this.ctx.metrics.miniappSessionsDec();
    if (a.ws !== ws) this.ctx.metrics.miniappSessionsInc();
    a.ws = ws;
    a.released = false;
    a.connectedAt = this.ctx.clock.now();
    this.ctx.clock.clearTimeout(a.graceTimer);
    this.ctx.clock.clearTimeout(a.connectTimer);
    a.graceTimer = a.connectTimer = null;
    this.transition(a, "RUNNING");
    const first = !a.everRunning;
    a.everRunning = true;
    a.settle({ success: true, status: "started" });
    if (first) {
      void this.ctx.directory.addRunningApp(this.session.userId, pkg).catch((err) =>
        this.ctx.log.error({ err, userId: this.session.userId, packageName: pkg }, "could not record running-app intent"),
      );
    }
    this.session.sendAppStateChange();
    return a;
  }

  /** Sends to an app if it is running with an open socket; sends to apps in other states are dropped. */
  sendToApp(a: AppSession, msg: object): boolean {
    if (a.state !== "RUNNING" || !sendJson(a.ws, msg)) return false;
    a.messagesOut++;
    this.ctx.metrics.wsMiniappOut();
    return true;
  }

  sendDataStream(pkg: string, streamType: string, data: unknown): void {
    const a = this.apps.get(pkg);
    if (!a) return;
    const msg: DataStream = { type: "data_stream", sessionId: a.sessionId, streamType, data, timestamp: nowIso(this.ctx.clock.now()) };
    this.sendToApp(a, msg);
  }

  sendBinary(pkg: string, pcm: Buffer): void {
    const a = this.apps.get(pkg);
    if (!a || a.state !== "RUNNING" || !a.ws || a.ws.readyState !== 1) return;
    a.ws.send(pcm);
    a.messagesOut++;
    this.ctx.metrics.wsMiniappOut();
  }

  onSubscriptionUpdate(a: AppSession, subs: string[]): "accepted" | "ignored_empty" {
    if (subs.length === 0 && this.ctx.clock.now() - a.connectedAt < this.ctx.timings.emptySubscriptionIgnoreMs) {
      return "ignored_empty";
    }
    this.session.subscriptions.update(a.packageName, subs);
    this.session.onSubscriptionsChanged();
    return "accepted";
  }

  onDisplay(a: AppSession, req: AppDisplayRequest): void {
    this.session.display.request({
      type: "display_event",
      packageName: a.packageName,
      view: req.view === "dashboard" ? "dashboard" : "main",
      layout: req.layout,
      ...(req.durationMs !== undefined ? { durationMs: req.durationMs } : {}),
      ...(req.forceDisplay !== undefined ? { forceDisplay: req.forceDisplay } : {}),
      sessionId: req.sessionId ?? "",
      timestamp: req.timestamp ?? nowIso(this.ctx.clock.now()),
    });
  }

  onOwnershipRelease(a: AppSession): void {
    a.released = true;
  }

  /** The app's socket closed. Stale sockets (already replaced) change nothing. */
  onSocketClose(a: AppSession, ws: WebSocket, code: number): void {
    if (a.ws !== ws) return;
    a.ws = null;
    this.ctx.metrics.miniappSessionsDec();
    if (this.disposed || a.state === "STOPPING" || a.state === "STOPPED") return;
    if (a.released) {
      // The SDK handed this session to another cloud: final, no grace, no resurrection, no stop webhook.
      this.transition(a, "STOPPED");
      this.apps.delete(a.packageName);
      this.session.subscriptions.remove(a.packageName);
      this.session.display.forget(a.packageName);
      this.session.onSubscriptionsChanged();
      this.session.sendAppStateChange();
      this.ctx.log.info({ userId: this.session.userId, packageName: a.packageName }, "app handed off to another cloud");
      return;
    }
    this.transition(a, "GRACE");
    this.ctx.log.info({ userId: this.session.userId, packageName: a.packageName, code }, "app socket lost, grace period");
    this.ctx.clock.clearTimeout(a.graceTimer);
    a.graceTimer = this.ctx.clock.setTimeout(() => {
      a.graceTimer = null;
      if (a.state !== "GRACE" || this.disposed) return;
      if (this.session.phoneConnected) void this.resurrect(a);
      else this.transition(a, "DORMANT");
    }, this.ctx.timings.appGraceMs);
  }

  /** The phone came back: bring DORMANT apps back, one after another (as the cloud does). */
  async resurrectDormant(): Promise<void> {
    for (const a of [...this.apps.values()]) {
      if (this.disposed) return;
      if (a.state === "DORMANT") await this.resurrect(a);
    }
  }

  /** A new session starts what the user had running (intent from the directory), concurrently. */
  async startPreviouslyRunning(pkgs: string[]): Promise<void> {
    await Promise.all(pkgs.map((p) => this.startApp(p)));
  }

  async stopApp(pkg: string, opts: { removeIntent?: boolean } = {}): Promise<{ success: boolean; wasRunning: boolean }> {
    const a = this.apps.get(pkg);
    if (opts.removeIntent !== false) {
      await this.ctx.directory.removeRunningApp(this.session.userId, pkg).catch((err) =>
        this.ctx.log.error({ err, userId: this.session.userId, packageName: pkg }, "could not clear running-app intent"),
      );
    }
    if (!a || a.state === "STOPPED" || a.state === "STOPPING") return { success: true, wasRunning: false };
    const wasConnecting = a.state === "CONNECTING" || a.state === "RESURRECTING";
    this.transition(a, "STOPPING");
    this.ctx.clock.clearTimeout(a.graceTimer);
    this.ctx.clock.clearTimeout(a.connectTimer);
    a.graceTimer = a.connectTimer = null;
    this.session.subscriptions.remove(pkg);
    this.session.display.forget(pkg);
    this.session.onSubscriptionsChanged();
    const body: StopRequestWebhook = {
      type: "stop_request",
      sessionId: a.sessionId,
      userId: this.session.userId,
      reason: "user_disabled",
      timestamp: nowIso(this.ctx.clock.now()),
    };
    const r = await this.postWebhook(a.app, body, 1);
    this.ctx.metrics.webhook("stop_request", r);
    if (a.ws) {
      sendJson(a.ws, { type: "app_stopped", reason: "user_disabled", timestamp: nowIso(this.ctx.clock.now()) });
      safeClose(a.ws, CloseCode.NORMAL, CloseReason.APP_STOPPED);
    }
    this.transition(a, "STOPPED");
    if (this.apps.get(pkg) === a) this.apps.delete(pkg);
    if (wasConnecting) a.settle({ success: false, code: "STOPPED", message: "App was stopped while starting" });
    this.session.sendAppStateChange();
    return { success: true, wasRunning: true };
  }

  /**
   * The user session ended on this pod: each connected app gets app_stopped and close 1000
   * "User session ended" (the SDK's terminal stop). Running-app intent is kept, so the apps start
   * again when the user comes back. Apps that handed off to another cloud were already removed.
   */
  disposeAll(opts: { handoff?: boolean } = {}): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const a of this.apps.values()) {
      this.ctx.clock.clearTimeout(a.graceTimer);
      this.ctx.clock.clearTimeout(a.connectTimer);
      a.graceTimer = a.connectTimer = null;
      if (a.ws && opts.handoff) {
        // The user now belongs to another pod, whose webhook makes the SDK release this socket
        // ("switching clouds"). Send nothing that could end the app session; if the SDK has not
        // released it in time, close with 1008, which stops SDK retries without calling onStop.
        const ws = a.ws;
        this.ctx.handoffSockets.add(ws);
        ws.once("close", () => this.ctx.handoffSockets.delete(ws));
        this.ctx.clock.setTimeout(() => safeClose(ws, CloseCode.POLICY_VIOLATION, "Session moved to another pod"), this.ctx.timings.handoffWaitMs);
      } else if (a.ws) {
        sendJson(a.ws, { type: "app_stopped", reason: "system_stop", message: CloseReason.USER_SESSION_ENDED, timestamp: nowIso(this.ctx.clock.now()) });
        safeClose(a.ws, CloseCode.NORMAL, CloseReason.USER_SESSION_ENDED);
      }
      this.transition(a, "STOPPED");
      a.settle({ success: false, code: "SESSION_ENDED", message: "User session ended" });
    }
    this.apps.clear();
  }
}
