/**
 * Placement: keep a live assignment; otherwise filter admitting pods and pick by power of two
 * choices on a load score. The Router holds the pod snapshot (refreshed about every second) and a
 * bounded cache of assignments, so known users keep routing while Redis is away.
 */
import type { Assignment, AssignmentStore, PodRegistry, PodView } from "./types.ts";

/** A pod that may receive new users. */
export function admits(p: PodView): boolean {
  return (
    p.state === "ready" &&
    !p.control.cordoned &&
    !p.control.drainRequested &&
    p.sessions < p.capacity.maxSessions &&
    p.lagP99Ms < p.capacity.lagP99CapMs &&
    p.elu < p.capacity.eluCap
  );
}

/** A pod that may keep the users it has (cordoned pods keep theirs; draining pods do not). */
export function keeps(p: PodView): boolean {
  return p.state !== "draining" && !p.control.drainRequested;
}

/** 0 = idle, 1 = at a cap. The worst of sessions, lag and utilisation. */
export function loadScore(p: PodView): number {
  return Math.max(p.sessions / Math.max(1, p.capacity.maxSessions), p.lagP99Ms / Math.max(1, p.capacity.lagP99CapMs), p.elu / Math.max(0.01, p.capacity.eluCap));
}

/** Power of two choices among admitting pods. */
export function pickPod(pods: PodView[], random: () => number = Math.random, exclude?: string): PodView | null {
  const c = pods.filter((p) => admits(p) && p.podId !== exclude);
  if (c.length === 0) return null;
  if (c.length === 1) return c[0]!;
  const i = Math.floor(random() * c.length);
  let j = Math.floor(random() * (c.length - 1));
  if (j >= i) j++;
  const a = c[i]!, b = c[j]!;
  return loadScore(a) <= loadScore(b) ? a : b;
}

/**
 * The placements this process made that the pods' own records do not show yet. A pod reports its
 * sessions every heartbeat (2 s) and the snapshot is a second old on top of that, so without this
 * every new user in a burst would go to whichever pods looked least loaded at the last heartbeat
 * (power of two choices on stale figures herds). A placement counts on its pod until that pod
 * writes a record newer than the placement (which then includes it), at most `horizonMs`.
 */
export class PlacementLedger {
  private readonly times = new Map<string, { t: number[]; head: number }>();

  constructor(private readonly now: () => number = Date.now, private readonly horizonMs = 10_000) {}

  note(podId: string): void {
    let e = this.times.get(podId);
    if (!e) this.times.set(podId, (e = { t: [], head: 0 }));
    e.t.push(this.now());
  }

  /** Placements on `p` made after its record was written. */
  pending(p: Pick<PodView, "podId" | "updatedAt">): number {
    const e = this.times.get(p.podId);
    if (!e) return 0;
    const floor = Math.max(p.updatedAt, this.now() - this.horizonMs);
    while (e.head < e.t.length && e.t[e.head]! <= floor) e.head++;
    if (e.head === e.t.length) {
      this.times.delete(p.podId);
      return 0;
    }
    if (e.head > 1024 && e.head * 2 > e.t.length) {
      e.t = e.t.slice(e.head);
      e.head = 0;
    }
    return e.t.length - e.head;
  }

  /** The pods as placement should see them: each one's sessions plus its pending placements. */
  view(pods: PodView[]): PodView[] {
    return pods.map((p) => {
      const n = this.pending(p);
      return n === 0 ? p : { ...p, sessions: p.sessions + n };
    });
  }
}

export type RouteDecision =
  | { ok: true; pod: PodView; assignment: Assignment; placed: boolean; source: "store" | "cache" }
  | { ok: false; code: "no_capacity" | "registry_unavailable"; retryAfterS: number };

export interface RouterOptions {
  registry: PodRegistry;
  assignments: AssignmentStore;
  snapshotIntervalMs?: number;
  /** Time budget for one store call on the routing path. */
  storeTimeoutMs?: number;
  random?: () => number;
  cacheSize?: number;
  onError?: (what: string, err: unknown) => void;
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error("store timeout")), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}

export class Router {
  private pods = new Map<string, PodView>();
  private timer: NodeJS.Timeout | null = null;
  snapshotAt = 0;
  snapshotOk = false;
  private readonly cache = new Map<string, Assignment>();
  private readonly ledger = new PlacementLedger();
  private readonly o: Required<Omit<RouterOptions, "onError">> & Pick<RouterOptions, "onError">;

  constructor(opts: RouterOptions) {
    // An explicit `undefined` in opts (the gateway passes its deps through) must not replace a default.
    this.o = {
      ...opts,
      snapshotIntervalMs: opts.snapshotIntervalMs ?? 1000,
      storeTimeoutMs: opts.storeTimeoutMs ?? 300,
      random: opts.random ?? Math.random,
      cacheSize: opts.cacheSize ?? 200_000,
    };
  }

  async start(): Promise<void> {
    await this.refresh();
    const loop = () => {
      this.timer = setTimeout(() => void this.refresh().finally(() => this.timer && loop()), this.o.snapshotIntervalMs);
      this.timer.unref();
    };
    loop();
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** Re-reads the registry; on failure the last snapshot stays in force. */
  async refresh(): Promise<void> {
    try {
      const list = await withTimeout(this.o.registry.list(), Math.max(this.o.storeTimeoutMs, 1000));
      this.pods = new Map(list.map((p) => [p.podId, p]));
      this.snapshotAt = Date.now();
      this.snapshotOk = true;
    } catch (err) {
      this.snapshotOk = false;
      this.o.onError?.("registry.list", err);
    }
  }

  snapshot(): PodView[] {
    return [...this.pods.values()];
  }

  pod(podId: string): PodView | undefined {
    return this.pods.get(podId);
  }

  cached(userId: string): Assignment | undefined {
    return this.cache.get(userId);
  }

  private remember(a: Assignment): void {
    this.cache.delete(a.userId);
    this.cache.set(a.userId, a);
    if (this.cache.size > this.o.cacheSize) this.cache.delete(this.cache.keys().next().value as string);
  }

  async route(userId: string): Promise<RouteDecision> {
    let current: Assignment | null;
    try {
      current = await withTimeout(this.o.assignments.get(userId), this.o.storeTimeoutMs);
    } catch (err) {
      // Redis away: known users keep their pod; new users wait (a guess could give a user two owners).
      this.o.onError?.("assignments.get", err);
      const known = this.cache.get(userId);
      const pod = known && this.pods.get(known.podId);
      if (known && pod && keeps(pod)) return { ok: true, pod, assignment: known, placed: false, source: "cache" };
      return { ok: false, code: "registry_unavailable", retryAfterS: 2 };
    }
    for (let attempt = 0; attempt < 4; attempt++) {
      const owner = current && this.pods.get(current.podId);
      if (current && owner && keeps(owner)) {
        this.remember(current);
        return { ok: true, pod: owner, assignment: current, placed: false, source: "store" };
      }
      // No assignment but we routed this user before (Redis restarted empty): prefer the pod that
      // most likely still holds the session, so the user does not get a second owner.
      const known = current === null ? this.cache.get(userId) : undefined;
      const knownPod = known && this.pods.get(known.podId);
      const pick = knownPod && keeps(knownPod) ? knownPod : pickPod(this.ledger.view(this.snapshot()), this.o.random);
      if (!pick) return { ok: false, code: "no_capacity", retryAfterS: 5 };
      let res: { won: boolean; assignment: Assignment | null };
      try {
        res = await withTimeout(this.o.assignments.claim(userId, pick.podId, current), this.o.storeTimeoutMs);
      } catch (err) {
        this.o.onError?.("assignments.claim", err);
        return { ok: false, code: "registry_unavailable", retryAfterS: 2 };
      }
      if (res.won && res.assignment) {
        this.remember(res.assignment);
        if (res.assignment.podId === pick.podId) this.ledger.note(pick.podId);
        return { ok: true, pod: pick, assignment: res.assignment, placed: true, source: "store" };
      }
      current = res.assignment; // someone else changed it first: judge their answer
    }
    return { ok: false, code: "registry_unavailable", retryAfterS: 1 };
  }
}
