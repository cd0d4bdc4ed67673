/** The pod's map of UserSessions. Exactly one session per user; a stale dispose never removes a newer one (C5). */
import type { WebSocket } from "ws";
import type { PodContext } from "../context.ts";
import { UserSession } from "./UserSession.ts";

export class SessionStore {
  private readonly sessions = new Map<string, UserSession>();

  constructor(private readonly ctx: PodContext) {}

  get size(): number {
    return this.sessions.size;
  }
  get(userId: string): UserSession | undefined {
    return this.sessions.get(userId);
  }
  values(): IterableIterator<UserSession> {
    return this.sessions.values();
  }

  createOrReconnect(ws: WebSocket, userId: string, opts: { udpEncryption: boolean }): { session: UserSession; reconnection: boolean } {
    const existing = this.sessions.get(userId);
    if (existing && !existing.disposed) {
      existing.attach(ws, opts);
      return { session: existing, reconnection: true };
    }
    const session = new UserSession(this.ctx, userId, (s, reason) => this.onDisposed(s, reason));
    this.sessions.set(userId, session);
    this.ctx.metrics.userSessionsInc();
    this.ctx.metrics.sessionCreated();
    session.attach(ws, opts);
    return { session, reconnection: false };
  }

  private onDisposed(s: UserSession, reason: string): void {
    if (this.sessions.get(s.userId) !== s) return;
    this.sessions.delete(s.userId);
    this.ctx.metrics.userSessionsDec();
    this.ctx.metrics.sessionDisposed(reason);
    if (reason !== "lost_ownership") this.ctx.cluster?.release(s.userId, s.epoch);
    this.ctx.log.info({ userId: s.userId, reason }, "user session disposed");
  }

  disposeAll(reason: string): void {
    for (const s of [...this.sessions.values()]) s.dispose(reason);
  }
}
