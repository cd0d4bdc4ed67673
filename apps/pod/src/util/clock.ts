/**
 * Injected time. Every pod timer (pings, grace periods, debounces, throttles) goes through a Clock,
 * so tests advance a ManualClock instead of sleeping.
 */
export type TimerId = { readonly id: number } | ReturnType<typeof setTimeout>;

export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): TimerId;
  clearTimeout(id: TimerId | null | undefined): void;
  setInterval(fn: () => void, ms: number): TimerId;
  clearInterval(id: TimerId | null | undefined): void;
}

export const realClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (id) => id && clearTimeout(id as ReturnType<typeof setTimeout>),
  setInterval: (fn, ms) => setInterval(fn, ms),
  clearInterval: (id) => id && clearInterval(id as ReturnType<typeof setInterval>),
};

interface Pending { id: number; at: number; fn: () => void; every: number | null; seq: number }

/** A clock that only moves when told. Due timers run in time order during advance(). */
export class ManualClock implements Clock {
  private t: number;
  private nextId = 1;
  private seq = 0;
  private timers = new Map<number, Pending>();

  constructor(start = 1_700_000_000_000) {
    this.t = start;
  }
  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): TimerId {
    const id = this.nextId++;
    this.timers.set(id, { id, at: this.t + Math.max(0, ms), fn, every: null, seq: this.seq++ });
    return { id };
  }
  setInterval(fn: () => void, ms: number): TimerId {
    const id = this.nextId++;
    const every = Math.max(1, ms);
    this.timers.set(id, { id, at: this.t + every, fn, every, seq: this.seq++ });
    return { id };
  }
  clearTimeout(id: TimerId | null | undefined): void {
    if (id && typeof id === "object" && "id" in id) this.timers.delete((id as { id: number }).id);
  }
  clearInterval(id: TimerId | null | undefined): void {
    this.clearTimeout(id);
  }
  /** Number of live timers; tests use it to prove dispose leaves nothing behind. */
  get pendingTimers(): number {
    return this.timers.size;
  }
  /** Moves time forward by ms, running every timer that falls due, in order. */
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      let next: Pending | null = null;
      for (const p of this.timers.values()) {
        if (p.at <= end && (!next || p.at < next.at || (p.at === next.at && p.seq < next.seq))) next = p;
      }
      if (!next) break;
      this.t = Math.max(this.t, next.at);
      if (next.every !== null) {
        next.at += next.every;
        next.seq = this.seq++;
      } else {
        this.timers.delete(next.id);
      }
      next.fn();
    }
    this.t = end;
  }
}
