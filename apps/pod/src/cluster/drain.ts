/**
 * Drain: move every user off this pod by a deadline, in paced batches, with nothing lost.
 * The sequence (operator drain and SIGTERM alike):
 *   1. mark the pod draining in the registry (and locally: readiness false) before any socket moves;
 *   2. wait one gateway snapshot interval, so no gateway still places users here;
 *   3. per user, in batches at `ratePerS`: claim the user for another pod (power of two choices on
 *      this pod's registry snapshot), then send the phone back through the gateway (close 4001);
 *      the new pod starts the user's apps by webhook from the running-app intent, and the SDK hands
 *      the app session over; this pod sends nothing that could end it;
 *   4. done when no session is left, or at the deadline (everyone left is moved at once).
 * With the registry unreachable the claims fail; phones are still sent back (they retry through
 * the gateway) and the drain still ends by its deadline.
 */
import { pickPod, PlacementLedger, type Assignment } from "@mentra-cluster/registry";
import type { DrainProgress } from "@mentra-cluster/registry";
import type { Pod } from "../server.ts";

export interface DrainOptions {
  deadlineMs: number;
  /** Users moved per second; default: all of them within 40 % of the deadline, at least 20/s. */
  ratePerS?: number;
  /** Wait before the first move so gateways see the draining state. */
  settleMs?: number;
  reason: "operator" | "sigterm";
}

export class Drainer {
  progress: DrainProgress | null = null;
  private cancelled = false;
  private deadlineTimer: NodeJS.Timeout | null = null;
  private wake: (() => void) | null = null;
  moved = 0;
  movedWithoutClaim = 0;
  /** Moves not yet in the receiving pods' records: spreads a batch instead of herding it onto one pod. */
  private readonly ledger = new PlacementLedger();

  constructor(private readonly pod: Pod) {}

  get active(): boolean {
    return this.progress !== null && !this.cancelled;
  }

  /** A second SIGTERM: finish sooner. */
  shorten(ms: number): void {
    if (!this.progress) return;
    const at = Math.min(this.progress.deadline, Date.now() + ms);
    this.progress.deadline = at;
    this.armDeadline();
  }

  cancel(): void {
    this.cancelled = true;
    if (this.deadlineTimer) clearTimeout(this.deadlineTimer);
    this.wake?.();
  }

  private armDeadline(): void {
    if (this.deadlineTimer) clearTimeout(this.deadlineTimer);
    const ms = Math.max(0, this.progress!.deadline - Date.now());
    this.deadlineTimer = setTimeout(() => this.wake?.(), ms);
    this.deadlineTimer.unref();
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((r) => {
      const t = setTimeout(() => {
        this.wake = null;
        r();
      }, ms);
      this.wake = () => {
        clearTimeout(t);
        this.wake = null;
        r();
      };
    });
  }

  private pastDeadline(): boolean {
    return Date.now() >= this.progress!.deadline;
  }

  async run(o: DrainOptions): Promise<"empty" | "deadline" | "cancelled"> {
    const { pod } = this;
    const log = pod.ctx.log;
    const start = Date.now();
    const users = () => [...pod.sessions.values()].filter((s) => !s.disposed);
    this.progress = { startedAt: start, deadline: start + o.deadlineMs, sessionsAtStart: users().length, sessionsLeft: users().length };
    this.armDeadline();
    log.info({ reason: o.reason, deadlineMs: o.deadlineMs, sessions: this.progress.sessionsAtStart }, "drain started");
    // 1. Draining in the registry before any socket is touched.
    pod.ctx.cluster?.setState("draining");
    await Promise.race([pod.ctx.cluster?.beat(), this.sleep(1000)]);
    // 2. Let every gateway's snapshot catch up.
    await this.sleep(o.settleMs ?? (pod.ctx.cluster ? 1200 : 0));
    const rate = o.ratePerS ?? Math.max(20, Math.ceil(this.progress.sessionsAtStart / Math.max(1, (o.deadlineMs * 0.4) / 1000)));
    const tickMs = 100;
    const perTick = Math.max(1, Math.round((rate * tickMs) / 1000));
    // 3. Paced moves.
    while (!this.cancelled) {
      const left = users();
      this.progress.sessionsLeft = left.length;
      if (left.length === 0) break;
      const batch = this.pastDeadline() ? left : left.slice(0, perTick);
      await Promise.all(batch.map((s) => this.moveOne(s.userId)));
      if (this.pastDeadline()) break;
      await this.sleep(tickMs);
    }
    if (this.deadlineTimer) clearTimeout(this.deadlineTimer);
    this.progress.sessionsLeft = users().length;
    const result = this.cancelled ? "cancelled" : this.progress.sessionsLeft === 0 ? "empty" : "deadline";
    log.info({ result, moved: this.moved, movedWithoutClaim: this.movedWithoutClaim, ms: Date.now() - start }, "drain finished");
    return result;
  }

  /** Hands one user to another pod, then lets go. */
  private async moveOne(userId: string): Promise<void> {
    const { pod } = this;
    const s = pod.sessions.get(userId);
    if (!s || s.disposed) return;
    const c = pod.ctx.cluster;
    if (c) {
      const target = pickPod(this.ledger.view(c.snapshot()), Math.random, pod.config.podId);
      const current: Assignment | null = s.epoch !== null ? { userId, podId: pod.config.podId, epoch: s.epoch } : null;
      let claimed = false;
      if (target && current) {
        const r = await c.move(userId, target.podId, current);
        claimed = r === "won" || r === "elsewhere";
        if (r === "won") this.ledger.note(target.podId);
      }
      if (!claimed) this.movedWithoutClaim++;
    }
    this.moved++;
    pod.ctx.metrics.drainMove();
    s.relinquish();
  }
}
