/**
 * The one-line live summary (CLI and page) and the trimmed sample the page gets. summaryLine is
 * self-contained so the page can use it as is (see page.ts).
 */
import type { Sample } from "./types.ts";

/** What the live page needs of a sample (the full sample has histograms and counters). */
export function liteSample(s: Sample) {
  return {
    seq: s.seq,
    t: s.t,
    elapsedS: s.elapsedS,
    phase: s.phase,
    step: s.step,
    hostBusy: s.hostBusy,
    hostCores: s.hostCores,
    saturation: s.saturation,
    gen: {
      target: s.gen.target,
      running: s.gen.running,
      connecting: s.gen.connecting,
      attempts: s.gen.attempts,
      failures: s.gen.failures,
      packetsPerS: Math.round(s.gen.packetsPerS),
      workerCpuCores: s.gen.workerCpuCores,
      workerLagP99Ms: s.gen.workerLagP99Ms,
      driverCpuCores: s.gen.driverCpuCores,
      lat: s.gen.lat,
    },
    pods: s.pods.map((p) => ({
      podId: p.podId,
      ok: p.ok,
      sessions: p.sessions,
      lagMs: p.lagMs,
      lagP99Ms: p.lagP99Ms,
      lagP99RecentMs: p.lagP99RecentMs,
      elu: p.elu,
      cpuCores: p.cpuCores,
      rssMB: p.rssMB,
      heapUsedMB: p.heapUsedMB,
      udpIn: p.rates.udpIn,
    })),
  };
}
export type LiteSample = ReturnType<typeof liteSample>;

export function summaryLine(s: any, thresholdMs: number): string {
  if (!s) return "waiting for the first sample…";
  const r = (v: number | null | undefined, d = 0) => (v === null || v === undefined || !Number.isFinite(v) ? "–" : v.toFixed(d));
  const pods = s.pods as any[];
  const busiest = pods.filter((p) => p.ok).sort((a, b) => b.sessions - a.sessions)[0];
  const down = pods.filter((p) => !p.ok).length;
  const lagRecent = busiest ? busiest.lagP99RecentMs : null;
  const over = lagRecent !== null && lagRecent !== undefined && lagRecent > thresholdMs;
  const genCpu = (s.gen.workerCpuCores as number[]).reduce((a, b) => a + b, 0);
  const parts = [
    `users ${s.gen.running}/${s.gen.target}${s.gen.connecting ? ` (+${s.gen.connecting} connecting)` : ""}`,
    busiest ? `pod lag ${r(busiest.lagMs)} ms, p99 (5 s) ${lagRecent == null ? "–" : `${r(lagRecent)} ms`}${over ? " (over threshold)" : ""}` : "pod ?",
    busiest ? `ELU ${r(busiest.elu, 2)}` : "",
    busiest ? `CPU ${r(busiest.cpuCores, 2)} cores` : "",
    busiest ? `RSS ${r(busiest.rssMB)} MB` : "",
    `audio ${r(s.gen.packetsPerS)} pkt/s`,
    `e2e p50 ${r(s.gen.lat.audioToPhoneP50)} ms`,
    `fails ${s.gen.failures}`,
    `generator CPU ${r(genCpu, 2)}`,
    s.hostBusy !== null && s.hostBusy !== undefined ? `machine ${r(s.hostBusy * 100)}% busy` : "",
    down ? `${down} pod(s) not answering` : "",
    s.saturation && s.saturation.length ? `SATURATED: ${s.saturation.map((x: string) => x.split(":")[0]).join(",")}` : "",
  ];
  return parts.filter(Boolean).join(" · ");
}
