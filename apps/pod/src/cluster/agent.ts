/**
 * The pod's side of the cluster: it writes its own registry record every ~2 s (with jitter, TTL of
 * three heartbeats), reads the operator's control flags, admits phones only for users it owns
 * (route ticket + assignment epoch), learns when it lost a user, and releases assignments of
 * users whose sessions ended here. Registry trouble never blocks a probe or a phone already here.
 */
import { verifyRouteTicket } from "@mentra-cluster/protocol";
import type { Assignment, AssignmentStore, PodControl, PodRecord, PodRegistry, PodState, PodView, PodEndpoints } from "@mentra-cluster/registry";
import { defaultControl } from "@mentra-cluster/registry";
import type { Logger } from "pino";

export interface ClusterDeps {
  registry: PodRegistry;
  assignments: AssignmentStore;
}

export interface AgentOptions extends ClusterDeps {
  podId: string;
  ticketKey: string;
  log: Logger;
  heartbeatMs?: number;
  /** Record the pod publishes each heartbeat (sessions, lag, endpoints…) minus state/control. */
  describe(): Omit<PodRecord, "state" | "updatedAt">;
  /** A user this pod holds now belongs to another pod. */
  onLost(a: Assignment): void;
  onControl?(c: PodControl): void;
  /** The registry answered again after failing (e.g. Redis came back): re-assert what we hold. */
  onRecovered?(): void;
  storeTimeoutMs?: number;
  random?: () => number;
}

export type Admission =
  | { ok: true; epoch: number | null; via: "ticket" | "assignment" | "local" }
  | { ok: false; reason: "malformed" | "bad_signature" | "expired" | "wrong_user" | "wrong_pod" | "not_owner" | "no_route" | "registry_unavailable" };

function timeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error("registry timeout")), ms);
    p.then((v) => (clearTimeout(t), resolve(v)), (e) => (clearTimeout(t), reject(e)));
  });
}

export class ClusterAgent {
  state: PodState = "starting";
  control: PodControl = defaultControl();
  private pods = new Map<string, PodView>();
  private timer: NodeJS.Timeout | null = null;
  private unsubscribe: (() => void) | null = null;
  private stopped = false;
  lastHeartbeatOk = 0;
  private failing = false;
  readonly heartbeatMs: number;
  readonly ttlMs: number;

  constructor(private readonly o: AgentOptions) {
    this.heartbeatMs = o.heartbeatMs ?? 2000;
    this.ttlMs = this.heartbeatMs * 3;
  }

  get podId(): string {
    return this.o.podId;
  }

  async start(): Promise<void> {
    this.unsubscribe = this.o.assignments.onOwnerChange((a) => {
      if (a.podId !== this.o.podId) this.o.onLost(a);
    });
    await this.beat();
    this.schedule();
  }

  private schedule(): void {
    if (this.stopped) return;
    const r = this.o.random ?? Math.random;
    const delay = this.heartbeatMs * (0.8 + 0.4 * r());
    this.timer = setTimeout(() => void this.beat().finally(() => this.schedule()), delay);
    this.timer.unref();
  }

  /** Writes this pod's record and reads the control flags and the pod list. Never throws. */
  async beat(): Promise<void> {
    const t = this.o.storeTimeoutMs ?? 1000;
    try {
      const rec: PodRecord = { ...this.o.describe(), state: this.state, updatedAt: Date.now() };
      await timeout(this.o.registry.heartbeat(rec, this.ttlMs), t);
      const [control, pods] = await Promise.all([timeout(this.o.registry.getControl(this.o.podId), t), timeout(this.o.registry.list(), t)]);
      this.pods = new Map(pods.map((p) => [p.podId, p]));
      const recovered = this.failing;
      this.failing = false;
      this.lastHeartbeatOk = Date.now();
      if (recovered) this.o.onRecovered?.();
      const changed = JSON.stringify(control) !== JSON.stringify(this.control);
      this.control = control;
      if (changed) this.o.onControl?.(control);
    } catch (err) {
      if (!this.failing) this.o.log.warn({ err: (err as Error).message }, "registry heartbeat failed");
      this.failing = true;
    }
  }

  setState(s: PodState): void {
    this.state = s;
  }

  pod(podId: string): PodView | undefined {
    return this.pods.get(podId);
  }

  /**
   * May this pod hold `userId`'s phone? A valid ticket for this pod, and an assignment that names
   * this pod (a ticket whose assignment has since moved elsewhere is stale). With the store away,
   * a valid ticket or a session already here is trusted.
   */
  async admit(userId: string, ticket: string | undefined, hasLocalSession: boolean): Promise<Admission> {
    let ticketEpoch: number | null = null;
    if (ticket) {
      const v = verifyRouteTicket(ticket, this.o.ticketKey, { userId, podId: this.o.podId, now: Date.now() });
      if (!v.ok) return { ok: false, reason: v.reason };
      ticketEpoch = v.ticket.epoch;
    }
    let a: Assignment | null;
    try {
      a = await timeout(this.o.assignments.get(userId), this.o.storeTimeoutMs ?? 500);
    } catch {
      if (ticketEpoch !== null) return { ok: true, epoch: ticketEpoch, via: "ticket" };
      if (hasLocalSession) return { ok: true, epoch: null, via: "local" };
      return { ok: false, reason: "registry_unavailable" };
    }
    if (a && a.podId === this.o.podId) return { ok: true, epoch: a.epoch, via: ticketEpoch !== null ? "ticket" : "assignment" };
    if (a) return { ok: false, reason: "not_owner" };
    if (ticketEpoch === null) return { ok: false, reason: "no_route" };
    // The assignment was released between route and connect: claim it back for this pod.
    try {
      const res = await timeout(this.o.assignments.claim(userId, this.o.podId, null), this.o.storeTimeoutMs ?? 500);
      if (res.won && res.assignment) return { ok: true, epoch: res.assignment.epoch, via: "ticket" };
      return { ok: false, reason: "not_owner" };
    } catch {
      return { ok: true, epoch: ticketEpoch, via: "ticket" };
    }
  }

  /** Pods in this agent's last registry snapshot. */
  snapshot(): PodView[] {
    return [...this.pods.values()];
  }

  /** Drain: hand a user to `target` if the assignment is still `current`. */
  async move(userId: string, target: string, current: Assignment): Promise<"won" | "elsewhere" | "error"> {
    try {
      const r = await timeout(this.o.assignments.claim(userId, target, current), this.o.storeTimeoutMs ?? 1000);
      if (r.won) return "won";
      return r.assignment && r.assignment.podId !== this.o.podId ? "elsewhere" : "error";
    } catch {
      return "error";
    }
  }

  /** The live owner of a user, when it is another pod (for REST redirects). */
  async ownerElsewhere(userId: string): Promise<PodView | null> {
    try {
      const a = await timeout(this.o.assignments.get(userId), this.o.storeTimeoutMs ?? 500);
      if (!a || a.podId === this.o.podId) return null;
      return this.pods.get(a.podId) ?? null;
    } catch {
      return null;
    }
  }

  /** Is this pod still the owner? (periodic check for users whose owner-change message was missed) */
  async owners(userIds: string[]): Promise<(Assignment | null)[] | null> {
    try {
      return await timeout(this.o.assignments.getMany(userIds), this.o.storeTimeoutMs ?? 1000);
    } catch {
      return null;
    }
  }

  /** Claims a user that has no assignment at all (store restarted empty) for this pod. */
  async reclaim(userId: string): Promise<{ won: true; epoch: number } | { won: false; owner: string | null } | null> {
    try {
      const r = await timeout(this.o.assignments.claim(userId, this.o.podId, null), this.o.storeTimeoutMs ?? 1000);
      if (r.won && r.assignment) return { won: true, epoch: r.assignment.epoch };
      return { won: false, owner: r.assignment?.podId ?? null };
    } catch {
      return null; // store away: try again next round
    }
  }

  /** The session ended here: free the assignment if it is still ours at that epoch. */
  release(userId: string, epoch: number | null): void {
    if (epoch === null || this.halted) return;
    void this.o.assignments.release(userId, this.o.podId, epoch).catch(() => undefined);
  }

  private halted = false;

  /** Stops every timer and write without removing the record (it expires): a crash, for tests. */
  halt(): void {
    this.halted = true;
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.unsubscribe?.();
  }

  async stop(): Promise<void> {
    if (this.halted) return;
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.unsubscribe?.();
    await timeout(this.o.registry.remove(this.o.podId), 1000).catch(() => undefined);
  }
}

export function endpointsFor(base: string, udpHost: string, udpPort: number, internalUrl: string): PodEndpoints {
  return { httpUrl: base, wsUrl: `${base.replace(/^http/, "ws")}/glasses-ws`, udpHost, udpPort, internalUrl };
}
