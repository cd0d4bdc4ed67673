/**
 * Per-user reorder buffer for UDP audio (protocol.md §2.5): first packet sets `expected`;
 * |gap| > 50 resets; the expected packet is emitted with any consecutive buffered ones; packets
 * ahead are buffered (at most 10; when full, skip to the oldest buffered); packets behind are late
 * and dropped; buffered packets older than 20 ms are released in sequence order.
 */
const MAX_GAP = 50;
const MAX_BUFFERED = 10;
const MAX_HOLD_MS = 20;

/** Signed distance a-b in uint16 sequence space. */
export function seqDiff(a: number, b: number): number {
  return (((a - b + 32768) & 0xffff) - 32768) | 0;
}

export class ReorderBuffer {
  private expected: number | null = null;
  private buffered = new Map<number, { data: Buffer; at: number }>();
  late = 0;
  resets = 0;

  get size(): number {
    return this.buffered.size;
  }
  get bufferedBytes(): number {
    let n = 0;
    for (const b of this.buffered.values()) n += b.data.length;
    return n;
  }

  /** Returns the payloads to deliver now, in order. */
  push(seq: number, data: Buffer, now: number, out: Buffer[] = []): Buffer[] {
    if (this.expected === null) this.expected = seq;
    const d = seqDiff(seq, this.expected);
    if (Math.abs(d) > MAX_GAP) {
      this.flushInto(out);
      this.resets++;
      this.expected = seq;
      this.emitRun(data, out);
    } else if (d === 0) {
      this.emitRun(data, out);
    } else if (d < 0) {
      this.late++;
    } else if (!this.buffered.has(seq)) {
      this.buffered.set(seq, { data, at: now });
      if (this.buffered.size > MAX_BUFFERED) this.skipToOldest(out);
    }
    this.releaseStale(now, out);
    return out;
  }

  /** Emits everything buffered in sequence order and forgets the position (unregister/dispose). */
  flush(): Buffer[] {
    const out: Buffer[] = [];
    this.flushInto(out);
    this.expected = null;
    return out;
  }

  private emitRun(first: Buffer, out: Buffer[]): void {
    out.push(first);
    this.expected = (this.expected! + 1) & 0xffff;
    this.drainConsecutive(out);
  }

  private drainConsecutive(out: Buffer[]): void {
    if (this.buffered.size === 0) return; // the in-order path: nothing held back
    for (;;) {
      const next = this.buffered.get(this.expected!);
      if (!next) return;
      this.buffered.delete(this.expected!);
      out.push(next.data);
      this.expected = (this.expected! + 1) & 0xffff;
    }
  }

  private oldestSeq(): number | null {
    let best: number | null = null;
    for (const s of this.buffered.keys()) {
      if (best === null || seqDiff(s, this.expected!) < seqDiff(best, this.expected!)) best = s;
    }
    return best;
  }

  private skipToOldest(out: Buffer[]): void {
    const s = this.oldestSeq();
    if (s === null) return;
    this.expected = s;
    this.drainConsecutive(out);
  }

  private releaseStale(now: number, out: Buffer[]): void {
    while (this.buffered.size > 0) {
      const s = this.oldestSeq()!;
      if (now - this.buffered.get(s)!.at < MAX_HOLD_MS) return;
      this.expected = s;
      this.drainConsecutive(out);
    }
  }

  private flushInto(out: Buffer[]): void {
    const seqs = [...this.buffered.keys()].sort((a, b) => seqDiff(a, this.expected ?? a) - seqDiff(b, this.expected ?? b));
    for (const s of seqs) out.push(this.buffered.get(s)!.data);
    this.buffered.clear();
  }
}
