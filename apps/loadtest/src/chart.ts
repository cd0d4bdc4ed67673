/**
 * Hand-written SVG line/dot charts. One self-contained function (no imports, no outer names), so
 * the same code draws the report's static charts in Node and the live page's charts in the browser
 * (the page gets `renderChartSvg.toString()`; see page.ts).
 */

export interface ChartSeries {
  name: string;
  color: string;
  points: [number, number][];
  /** "line" (default), "dots" or "both". */
  mode?: "line" | "dots" | "both";
  dash?: boolean;
}

export interface ChartSpec {
  id: string;
  title: string;
  xLabel: string;
  yLabel: string;
  series: ChartSeries[];
  hlines?: { y: number; label: string; color: string }[];
  width?: number;
  height?: number;
  /** Axis floors (default 0 for both). */
  xMin?: number;
  yMin?: number;
  /** Leave room above the highest value (e.g. a threshold line). */
  yMaxAtLeast?: number;
}

export function renderChartSvg(spec: ChartSpec): string {
  const W = spec.width ?? 560;
  const H = spec.height ?? 310;
  // Legend entries flow into rows above the plot.
  const legend: { name: string; color: string; x: number; row: number }[] = [];
  let lx0 = 66;
  let row = 0;
  for (const s of spec.series) {
    const w = 24 + s.name.length * 5.6;
    if (lx0 + w > W - 16 && lx0 > 66) {
      row++;
      lx0 = 66;
    }
    legend.push({ name: s.name, color: s.color, x: lx0, row });
    lx0 += w;
  }
  const m = { l: 58, r: 16, t: 40 + row * 13, b: 44 };
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;
  const esc = (s: string) => String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
  const finite = (p: [number, number]) => Number.isFinite(p[0]) && Number.isFinite(p[1]);
  const all = spec.series.flatMap((s) => s.points.filter(finite));
  const total = all.length;
  const nice = (lo: number, hi: number) => {
    if (!(hi > lo)) hi = lo + 1;
    const raw = (hi - lo) / 5;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((k) => k * mag).find((s) => raw <= s) ?? 10 * mag;
    const start = Math.floor(lo / step) * step;
    const end = Math.ceil(hi / step) * step;
    const ticks: number[] = [];
    for (let v = start; v <= end + step / 2; v += step) ticks.push(Math.round(v / step) * step);
    return { lo: start, hi: end, ticks };
  };
  const label = (v: number) => {
    const a = Math.abs(v);
    if (a >= 1e6) return (v / 1e6).toFixed(a >= 1e7 ? 0 : 1) + "M";
    if (a >= 1e4) return (v / 1e3).toFixed(0) + "k";
    if (a >= 100 || v === Math.round(v)) return String(Math.round(v));
    if (a >= 1) return v.toFixed(1);
    return v.toFixed(2);
  };
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]).concat((spec.hlines ?? []).map((h) => h.y));
  if (spec.yMaxAtLeast !== undefined) ys.push(spec.yMaxAtLeast);
  const xAxis = nice(Math.min(spec.xMin ?? 0, ...xs), Math.max(1, ...xs));
  const yAxis = nice(Math.min(spec.yMin ?? 0, ...ys), Math.max(...ys, (spec.yMin ?? 0) + 1e-9));
  const X = (v: number) => m.l + ((v - xAxis.lo) / (xAxis.hi - xAxis.lo)) * pw;
  const Y = (v: number) => m.t + ph - ((v - yAxis.lo) / (yAxis.hi - yAxis.lo)) * ph;
  const f = (v: number) => v.toFixed(1);

  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" class="chart" data-chart="${esc(spec.id)}" data-points="${total}" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${esc(spec.title)}">`);
  out.push(`<rect x="0" y="0" width="${W}" height="${H}" fill="#fff"/>`);
  out.push(`<text x="${m.l}" y="18" font-size="13" font-weight="600" fill="#222">${esc(spec.title)}</text>`);
  for (const t of yAxis.ticks) {
    out.push(`<line x1="${m.l}" x2="${W - m.r}" y1="${f(Y(t))}" y2="${f(Y(t))}" stroke="#eee"/>`);
    out.push(`<text x="${m.l - 6}" y="${f(Y(t) + 4)}" font-size="10" text-anchor="end" fill="#666">${label(t)}</text>`);
  }
  for (const t of xAxis.ticks) {
    out.push(`<line x1="${f(X(t))}" x2="${f(X(t))}" y1="${m.t}" y2="${m.t + ph}" stroke="#f3f3f3"/>`);
    out.push(`<text x="${f(X(t))}" y="${m.t + ph + 14}" font-size="10" text-anchor="middle" fill="#666">${label(t)}</text>`);
  }
  out.push(`<line x1="${m.l}" x2="${m.l}" y1="${m.t}" y2="${m.t + ph}" stroke="#999"/>`);
  out.push(`<line x1="${m.l}" x2="${W - m.r}" y1="${m.t + ph}" y2="${m.t + ph}" stroke="#999"/>`);
  out.push(`<text x="${m.l + pw / 2}" y="${H - 6}" font-size="11" text-anchor="middle" fill="#444">${esc(spec.xLabel)}</text>`);
  out.push(`<text transform="translate(13 ${m.t + ph / 2}) rotate(-90)" font-size="11" text-anchor="middle" fill="#444">${esc(spec.yLabel)}</text>`);
  for (const h of spec.hlines ?? []) {
    out.push(`<line class="hline" x1="${m.l}" x2="${W - m.r}" y1="${f(Y(h.y))}" y2="${f(Y(h.y))}" stroke="${esc(h.color)}" stroke-dasharray="6 4"/>`);
    out.push(`<text x="${W - m.r - 4}" y="${f(Y(h.y) - 4)}" font-size="10" text-anchor="end" fill="${esc(h.color)}">${esc(h.label)}</text>`);
  }
  out.push(`<g clip-path="none">`);
  for (const s of spec.series) {
    const pts = s.points.filter(finite);
    const mode = s.mode ?? "line";
    if ((mode === "line" || mode === "both") && pts.length > 0) {
      const d = pts.map((p, i) => `${i === 0 ? "M" : "L"}${f(X(p[0]))},${f(Y(p[1]))}`).join("");
      out.push(`<path class="series" data-series="${esc(s.name)}" data-n="${pts.length}" d="${d}" fill="none" stroke="${esc(s.color)}" stroke-width="${mode === "both" ? 2 : 1.6}"${s.dash ? ' stroke-dasharray="4 3"' : ""}/>`);
    }
    if (mode === "dots" || mode === "both") {
      const dots = pts.map((p) => `<circle cx="${f(X(p[0]))}" cy="${f(Y(p[1]))}" r="${mode === "both" ? 3 : 1.8}"/>`).join("");
      out.push(`<g class="dots" data-series="${esc(s.name)}" data-n="${pts.length}" fill="${esc(s.color)}" fill-opacity="${mode === "both" ? 1 : 0.45}">${dots}</g>`);
    }
  }
  out.push(`</g>`);
  for (const e of legend) {
    const ly = 32 + e.row * 13;
    out.push(`<rect x="${e.x}" y="${ly - 5}" width="10" height="3" fill="${esc(e.color)}"/>`);
    out.push(`<text x="${e.x + 14}" y="${ly}" font-size="10" fill="#333">${esc(e.name)}</text>`);
  }
  if (total === 0) out.push(`<text x="${m.l + pw / 2}" y="${m.t + ph / 2}" font-size="12" text-anchor="middle" fill="#999">no data yet</text>`);
  out.push(`</svg>`);
  return out.join("");
}

/** The minimum of a step the charts need. */
export interface ChartStep {
  users: number;
  podSessionsMax: number;
  lagP99Ms: number | null;
  podCpuCores: number | null;
  rssMB: number | null;
  heapUsedMB: number | null;
  latency: { audioToPhoneP50: number | null; audioToPhoneP95: number | null };
}

/** The page's and the report's charts from samples (see types.ts Sample) and steps. Self-contained like renderChartSvg. */
export function buildChartSpecs(samples: any[], steps: ChartStep[], thresholdMs: number): ChartSpec[] {
  const palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"];
  const podIds: string[] = [];
  for (const s of samples) for (const p of s.pods) if (podIds.indexOf(p.podId) < 0) podIds.push(p.podId);
  const color = (i: number) => palette[i % palette.length];
  const t0 = samples.length ? samples[0].t : 0;
  const okPods = (fn: (p: any) => number | null, podId: string): [number, number][] => {
    const pts: [number, number][] = [];
    for (const s of samples) {
      const p = s.pods.find((q: any) => q.podId === podId && q.ok);
      if (!p) continue;
      const v = fn(p);
      if (v !== null && v !== undefined && Number.isFinite(v)) pts.push([p.sessions, v]);
    }
    return pts;
  };
  const loaded = steps.filter((s) => s.users > 0);
  const stepLine = (name: string, fn: (s: ChartStep) => number | null, c: string) => ({
    name,
    color: c,
    mode: "both" as const,
    points: loaded.filter((s) => fn(s) !== null).map((s) => [s.podSessionsMax, fn(s) as number] as [number, number]),
  });
  const multi = podIds.length > 1;
  const specs: ChartSpec[] = [];
  specs.push({
    id: "lag",
    title: "Event-loop lag against users",
    xLabel: "users on the pod",
    yLabel: "lag (ms)",
    series: [
      ...podIds.map((id, i) => ({ name: multi ? `${id} p99 (5 s)` : "lag p99 (last 5 s)", color: color(i), mode: "dots" as const, points: okPods((p) => p.lagP99RecentMs, id) })),
      ...podIds.map((id, i) => ({ name: multi ? `${id} lag` : "lag (sample)", color: color(i + 4), mode: "dots" as const, points: okPods((p) => p.lagMs, id) })),
      stepLine("step p99", (s) => s.lagP99Ms, "#000"),
    ],
    hlines: [{ y: thresholdMs, label: `threshold ${thresholdMs} ms`, color: "#d62728" }],
  });
  specs.push({
    id: "sessions",
    title: "Users and sessions over time",
    xLabel: "time (s)",
    yLabel: "count",
    series: [
      { name: "target", color: "#999", dash: true, points: samples.map((s) => [(s.t - t0) / 1000, s.gen.target] as [number, number]) },
      { name: "phones running", color: "#1f77b4", points: samples.map((s) => [(s.t - t0) / 1000, s.gen.running] as [number, number]) },
      ...podIds.map((id, i) => ({
        name: `${id} sessions`,
        color: color(i + 2),
        points: samples.flatMap((s) => s.pods.filter((p: any) => p.podId === id && p.ok).map((p: any) => [(s.t - t0) / 1000, p.sessions] as [number, number])),
      })),
      { name: "failed attempts", color: "#d62728", points: samples.map((s) => [(s.t - t0) / 1000, s.gen.failures] as [number, number]) },
    ],
  });
  specs.push({
    id: "cpu",
    title: "CPU against users",
    xLabel: "users on the pod",
    yLabel: "cores",
    series: [
      ...podIds.map((id, i) => ({ name: multi ? `${id} CPU` : "pod CPU", color: color(i), mode: "dots" as const, points: okPods((p) => p.cpuCores, id) })),
      ...podIds.map((id, i) => ({ name: multi ? `${id} ELU` : "pod event-loop use", color: color(i + 5), mode: "dots" as const, points: okPods((p) => p.elu, id) })),
      { name: "generator CPU", color: "#ff7f0e", mode: "dots" as const, points: samples.map((s) => [s.gen.running, s.gen.workerCpuCores.reduce((a: number, b: number) => a + b, 0) + s.gen.driverCpuCores] as [number, number]) },
      { name: "machine busy (cores)", color: "#7f7f7f", mode: "dots" as const, points: samples.filter((s) => s.hostBusy !== null).map((s) => [s.gen.running, s.hostBusy * s.hostCores] as [number, number]) },
      stepLine("step pod CPU", (s) => s.podCpuCores, "#000"),
    ],
    hlines: [{ y: 1, label: "one core", color: "#d62728" }],
  });
  specs.push({
    id: "memory",
    title: "Memory against users",
    xLabel: "users on the pod",
    yLabel: "MB",
    series: [
      ...podIds.map((id, i) => ({ name: multi ? `${id} RSS` : "pod RSS", color: color(i), mode: "dots" as const, points: okPods((p) => p.rssMB, id) })),
      ...podIds.map((id, i) => ({ name: multi ? `${id} heap` : "pod heap used", color: color(i + 2), mode: "dots" as const, points: okPods((p) => p.heapUsedMB, id) })),
      stepLine("step RSS", (s) => s.rssMB, "#000"),
    ],
  });
  specs.push({
    id: "latency",
    title: "End-to-end latency against users",
    xLabel: "phones running",
    yLabel: "ms",
    series: [
      { name: "audio→display p50", color: "#1f77b4", mode: "dots" as const, points: samples.filter((s) => s.gen.lat.audioToPhoneP50 !== null).map((s) => [s.gen.running, s.gen.lat.audioToPhoneP50] as [number, number]) },
      { name: "audio→display p95", color: "#d62728", mode: "dots" as const, points: samples.filter((s) => s.gen.lat.audioToPhoneP95 !== null).map((s) => [s.gen.running, s.gen.lat.audioToPhoneP95] as [number, number]) },
      { name: "audio→app p50", color: "#2ca02c", mode: "dots" as const, points: samples.filter((s) => s.gen.lat.audioToAppP50 !== null).map((s) => [s.gen.running, s.gen.lat.audioToAppP50] as [number, number]) },
      { name: "step p95", color: "#000", mode: "both" as const, points: loaded.filter((s) => s.latency.audioToPhoneP95 !== null).map((s) => [s.users, s.latency.audioToPhoneP95 as number] as [number, number]) },
    ],
  });
  return specs;
}
