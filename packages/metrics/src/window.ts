/**
 * Nearest-rank percentile: the value at index ceil(p/100 * n) - 1 of the sorted values.
 * `p` is in percent (99 = p99). Returns 0 for an empty input, like the seed's lag stats.
 * Does not modify `values`.
 */
export function percentile(values: readonly number[], p: number): number {
  const n = values.length;
  if (n === 0) return 0;
  if (!(p >= 0 && p <= 100)) throw new RangeError(`percentile p must be within 0..100, got ${p}`);
  const sorted = Float64Array.from(values).sort();
  const index = Math.min(n - 1, Math.max(0, Math.ceil((p / 100) * n) - 1));
  return sorted[index]!;
}

/**
 * Fixed-capacity ring buffer of samples with lazily cached mean and p99.
 * Stats are recomputed at most once per change (O(capacity) then, O(1) on repeat reads),
 * so a /health poll never sorts more than the window, and usually sorts nothing.
 */
export class RollingWindow {
  private readonly buf: Float64Array;
  private next = 0;
  private count = 0;
  private dirty = false;
  private cachedMean = 0;
  private cachedP99 = 0;

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) {
      throw new RangeError(`window capacity must be a positive integer, got ${capacity}`);
    }
    this.buf = new Float64Array(capacity);
  }

  push(value: number): void {
    this.buf[this.next] = value;
    this.next = (this.next + 1) % this.capacity;
    if (this.count < this.capacity) this.count++;
    this.dirty = true;
  }

  get size(): number {
    return this.count;
  }

  get mean(): number {
    this.refresh();
    return this.cachedMean;
  }

  get p99(): number {
    this.refresh();
    return this.cachedP99;
  }

  /** Samples oldest first. */
  values(): number[] {
    const out: number[] = [];
    const start = this.count < this.capacity ? 0 : this.next;
    for (let i = 0; i < this.count; i++) out.push(this.buf[(start + i) % this.capacity]!);
    return out;
  }

  private refresh(): void {
    if (!this.dirty) return;
    this.dirty = false;
    if (this.count === 0) {
      this.cachedMean = 0;
      this.cachedP99 = 0;
      return;
    }
    // Recompute the sum from scratch rather than keeping a running one: no float drift.
    const live = this.buf.subarray(0, this.count);
    let sum = 0;
    for (let i = 0; i < live.length; i++) sum += live[i]!;
    this.cachedMean = sum / this.count;
    const sorted = Float64Array.from(live).sort();
    this.cachedP99 = sorted[Math.min(this.count - 1, Math.ceil(0.99 * this.count) - 1)]!;
  }
}
