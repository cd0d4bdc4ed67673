/** Small numeric helpers: fixed-bucket histograms, percentiles, least squares. No dependencies. */

/** Upper bounds (ms) of the latency histogram buckets; the last bucket is open-ended. */
export const LATENCY_BUCKETS_MS = [1, 2, 5, 10, 20, 30, 40, 50, 75, 100, 150, 200, 300, 400, 500, 750, 1000, 1500, 2000, 3000, 5000, 10_000, 30_000];

/** Counts per bucket: counts[i] = values ≤ bounds[i] and > bounds[i-1]; counts[bounds.length] = above the last bound. */
export class Histogram {
  readonly counts: number[];
  max = 0;
  constructor(readonly bounds: readonly number[] = LATENCY_BUCKETS_MS) {
    this.counts = new Array(bounds.length + 1).fill(0);
  }
  add(v: number): void {
    if (!Number.isFinite(v)) return;
    const x = Math.max(0, v);
    let i = 0;
    while (i < this.bounds.length && x > this.bounds[i]!) i++;
    this.counts[i]!++;
    if (x > this.max) this.max = x;
  }
  merge(counts: readonly number[], max = 0): void {
    for (let i = 0; i < this.counts.length; i++) this.counts[i]! += counts[i] ?? 0;
    if (max > this.max) this.max = max;
  }
  get n(): number {
    return this.counts.reduce((a, b) => a + b, 0);
  }
  quantile(q: number): number | null {
    return bucketQuantile(this.bounds, this.counts, q, this.max);
  }
  reset(): void {
    this.counts.fill(0);
    this.max = 0;
  }
}

/**
 * Quantile from bucket counts, interpolating linearly inside the bucket (the first bucket starts at
 * 0; the open last bucket ends at `max` when known, else at its lower bound).
 */
export function bucketQuantile(bounds: readonly number[], counts: readonly number[], q: number, max = 0): number | null {
  const n = counts.reduce((a, b) => a + b, 0);
  if (n === 0) return null;
  const rank = q * n;
  let seen = 0;
  for (let i = 0; i < counts.length; i++) {
    const c = counts[i]!;
    if (c === 0) continue;
    if (seen + c >= rank) {
      const lo = i === 0 ? 0 : bounds[i - 1]!;
      const hi = i < bounds.length ? bounds[i]! : Math.max(lo, max);
      const frac = c === 0 ? 0 : Math.min(1, Math.max(0, (rank - seen) / c));
      const v = lo + (hi - lo) * frac;
      return max > 0 ? Math.min(v, max) : v;
    }
    seen += c;
  }
  return max || bounds[bounds.length - 1]!;
}

/**
 * Quantile of a Prometheus histogram from cumulative `le` buckets (deltas over a window), same
 * interpolation as histogram_quantile(). Returns null without observations.
 */
export function promHistogramQuantile(buckets: { le: number; count: number }[], q: number): number | null {
  const sorted = [...buckets].sort((a, b) => a.le - b.le);
  const total = sorted.length ? sorted[sorted.length - 1]!.count : 0;
  if (!(total > 0)) return null;
  const rank = q * total;
  let prevLe = 0;
  let prevCount = 0;
  for (const b of sorted) {
    if (b.count >= rank) {
      if (!Number.isFinite(b.le)) return prevLe; // in the +Inf bucket: the highest finite bound, like Prometheus
      const inBucket = b.count - prevCount;
      return inBucket > 0 ? prevLe + ((b.le - prevLe) * (rank - prevCount)) / inBucket : b.le;
    }
    prevLe = Number.isFinite(b.le) ? b.le : prevLe;
    prevCount = b.count;
  }
  return prevLe;
}

/** Share of observations above `threshold` from cumulative `le` buckets (exact when it is a bucket bound). */
export function promHistogramShareAbove(buckets: { le: number; count: number }[], threshold: number): number | null {
  const sorted = [...buckets].sort((a, b) => a.le - b.le);
  const total = sorted.length ? sorted[sorted.length - 1]!.count : 0;
  if (!(total > 0)) return null;
  let below = 0;
  let prevLe = 0;
  let prevCount = 0;
  for (const b of sorted) {
    if (b.le >= threshold) {
      const span = b.le - prevLe;
      below = Number.isFinite(span) && span > 0 ? prevCount + ((b.count - prevCount) * (threshold - prevLe)) / span : prevCount;
      break;
    }
    prevLe = b.le;
    prevCount = b.count;
    below = b.count;
  }
  return Math.max(0, Math.min(1, 1 - below / total));
}

export function percentile(values: readonly number[], q: number): number | null {
  if (values.length === 0) return null;
  const s = [...values].sort((a, b) => a - b);
  const idx = Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1));
  return s[idx]!;
}

export function mean(values: readonly number[]): number | null {
  return values.length ? values.reduce((a, b) => a + b, 0) / values.length : null;
}

export interface LinearFit {
  /** y at x = 0. */
  intercept: number;
  /** dy/dx. */
  slope: number;
  r2: number;
  n: number;
  xMin: number;
  xMax: number;
}

/** Ordinary least squares y = intercept + slope·x; null with fewer than two distinct x. */
export function leastSquares(points: readonly [number, number][]): LinearFit | null {
  const pts = points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  const n = pts.length;
  if (n < 2) return null;
  let sx = 0, sy = 0;
  for (const [x, y] of pts) {
    sx += x;
    sy += y;
  }
  const mx = sx / n;
  const my = sy / n;
  let sxx = 0, sxy = 0, syy = 0;
  for (const [x, y] of pts) {
    sxx += (x - mx) ** 2;
    sxy += (x - mx) * (y - my);
    syy += (y - my) ** 2;
  }
  if (sxx === 0) return null;
  const slope = sxy / sxx;
  const intercept = my - slope * mx;
  let ssRes = 0;
  for (const [x, y] of pts) ssRes += (y - (intercept + slope * x)) ** 2;
  const r2 = syy === 0 ? 1 : 1 - ssRes / syy;
  return { intercept, slope, r2, n, xMin: Math.min(...pts.map((p) => p[0])), xMax: Math.max(...pts.map((p) => p[0])) };
}

export const round = (v: number | null | undefined, digits = 2): number | null => {
  if (v === null || v === undefined || !Number.isFinite(v)) return null;
  const f = 10 ** digits;
  return Math.round(v * f) / f;
};
