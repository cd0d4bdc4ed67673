/**
 * The end-of-run HTML report: the answer in one sentence, the verdict, the per-step table, the
 * per-user cost fits, the targets, and the charts (static SVG drawn by chart.ts, so the file reads
 * without JavaScript and without the network). Every sample is in the JSON file beside it.
 */
import { buildChartSpecs, renderChartSvg } from "./chart.ts";
import { PER_USER_CPU_TARGET_MS, USERS_TARGET } from "./analysis.ts";
import type { RunReport, StepResult } from "./types.ts";

export const esc = (s: unknown) => String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
const n = (v: number | null | undefined, d = 1) => (v === null || v === undefined || !Number.isFinite(v) ? "–" : v.toFixed(d));

export const STYLE = `
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1b1b1b;background:#fafafa}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px}
.answer{font-size:18px;background:#fff;border-left:5px solid #1f77b4;padding:14px 18px;margin:16px 0}
.answer.saturated{border-color:#ff7f0e} .answer.capacity{border-color:#2ca02c} .answer.none{border-color:#999} .answer.setup{border-color:#d62728}
table{border-collapse:collapse;background:#fff;font-size:12.5px} th,td{border:1px solid #e2e2e2;padding:4px 7px;text-align:right;white-space:nowrap}
th{background:#f0f0f0;font-weight:600} td.l,th.l{text-align:left}
tr.knee td{background:#fff1f0} tr.untrusted td{color:#a05a00} tr.idle td{color:#777}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:14px}
.charts svg{border:1px solid #e2e2e2;max-width:100%;height:auto}
.muted{color:#666} code{background:#f0f0f0;padding:1px 4px;border-radius:3px}
.ok{color:#2ca02c;font-weight:600} .bad{color:#d62728;font-weight:600} .unk{color:#a05a00;font-weight:600}
ul.notes li{margin:4px 0} .scroll{overflow-x:auto}
`;

function stepRow(s: StepResult, kneeIndex: number | null): string {
  const cls = s.users === 0 ? "idle" : s.index === kneeIndex ? "knee" : !s.trusted ? "untrusted" : "";
  const fails = s.failures > 0 ? `${s.failures}/${s.attempts} (${(s.failureRate * 100).toFixed(1)}%)` : `0/${s.attempts}`;
  return `<tr class="${cls}" data-step="${s.index}">
<td class="l">${s.users === 0 ? "idle" : s.index}</td><td>${s.users}</td><td>${n(s.podSessionsMax, 0)}</td><td>${n(s.podCpuCores, 3)}</td><td>${n(s.podCpuMsPerUserS, 3)}</td><td>${n(s.elu, 2)}</td>
<td>${n(s.lagP99Ms, 1)}</td><td>${n(s.lagMaxSampleMs, 1)}</td><td>${n(s.rssMB, 0)}</td><td>${n(s.heapUsedMB, 0)}</td>
<td>${n(s.udpInPerS, 0)}</td><td>${n(s.udpDroppedPerS, 1)}</td><td>${n(s.wsAppOutPerS, 0)}</td><td>${n(s.transcriptsPerS, 0)}</td>
<td>${n(s.latency.audioToPhoneP50, 0)} / ${n(s.latency.audioToPhoneP95, 0)}</td><td>${n(s.latency.appToPhoneP50, 0)}</td><td>${fails}</td>
<td>${n(s.generatorCpuMax, 2)}</td><td>${s.hostBusy === null ? "–" : Math.round(s.hostBusy * 100) + "%"}</td><td class="l">${s.trusted ? "yes" : `${s.loadDelivered ? "load delivered, lag not trusted: " : "no: "}${esc(s.saturation.join("; "))}`}</td></tr>`;
}

export function renderReportHtml(r: RunReport, jsonHref: string): string {
  const v = r.verdict;
  const f = r.fits;
  const specs = buildChartSpecs(r.samples, r.steps, r.options.lagThresholdMs);
  const charts = specs.map((s) => renderChartSvg(s)).join("\n");
  const target = (met: boolean | null) => (met === null ? `<span class="unk">not shown by this run</span>` : met ? `<span class="ok">met</span>` : `<span class="bad">not met</span>`);
  const fitRow = (name: string, fit: RunReport["fits"]["cpuMsPerS"], unit: string, perUnit: string, scale = 1, d = 3) =>
    fit
      ? `<tr><td class="l">${name}</td><td>${n(fit.intercept, 1)} ${unit}</td><td>${n(fit.slope * scale, d)} ${perUnit}</td><td>${n(fit.r2, 3)}</td><td>${fit.n}</td><td>${n(fit.xMin, 0)}–${n(fit.xMax, 0)}</td></tr>`
      : `<tr><td class="l">${name}</td><td colspan="5" class="l muted">not enough steps with the load delivered</td></tr>`;
  const auxKeys = [...new Set(r.steps.flatMap((s) => Object.keys(s.auxCpu)))];
  const last = r.samples[r.samples.length - 1];
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Load test report: ${esc(v.answer.slice(0, 80))}</title>
<meta name="viewport" content="width=device-width,initial-scale=1"><style>${STYLE}</style></head>
<body><main>
<h1>Session pod load test</h1>
<div class="muted">${esc(r.startedAt)} → ${esc(r.endedAt)} · ${r.environment.cpus} × ${esc(r.environment.cpuModel)}, ${r.environment.memGB} GB · Node ${esc(r.environment.node)} · ${r.environment.cluster === "own" ? "own local cluster" : `gateway ${esc(r.options.gateway)}`}</div>
<p class="answer ${v.kind}" id="answer" data-kind="${v.kind}">${esc(v.answer)}</p>

<h2>Verdict</h2>
<table id="verdict">
<tr><th class="l">capacity (users per pod before degradation)</th><td>${v.kind === "capacity" ? v.capacityUsers : v.kind === "above" ? `&gt; ${v.capacityUsers}` : "not determined"}</td></tr>
<tr><th class="l">knee (first step with lag p99 &gt; ${r.options.lagThresholdMs} ms or audio→display p95 &gt; ${r.options.latencyThresholdMs ?? "–"} ms)</th><td>${v.kneeUsers === null ? "not reached" : `${v.kneeUsers} users, lag p99 ${n(v.kneeLagP99Ms, 0)} ms`}</td></tr>
<tr><th class="l">breaking point (connections failing &gt; ${(r.options.failThreshold * 100).toFixed(1)}%)</th><td>${v.breakingUsers === null ? "not reached" : `${v.breakingUsers} users`}</td></tr>
<tr><th class="l">generator</th><td class="l">${v.saturatedAtUsers === null ? "held up in every step" : `saturated at ${v.saturatedAtUsers} users: ${esc(v.saturationReasons.join("; "))}`}</td></tr>
<tr><th class="l">per-user pod CPU</th><td>${n(v.perUserCpuMs, 3)} ms per user-second (baseline ${n(v.baselineCpuMsPerS, 0)} ms/s)</td></tr>
<tr><th class="l">per-user memory (RSS)</th><td>${v.perUserMemKB !== null ? `${n(v.perUserMemKB, 0)} KB (baseline ${n(v.baselineMemMB, 0)} MB)` : r.fits.rssMB ? `not given: the fit explains too little (R² ${n(r.fits.rssMB.r2, 2)} &lt; 0.5; RSS moves with the garbage collector)` : "not measured"}</td></tr>
<tr><th class="l">predicted users per pod (from the fit)</th><td>${v.predictedUsersAt80PctCore ?? "–"} at 80% of a core, ${v.predictedUsersAtFullCore ?? "–"} at a full core</td></tr>
<tr><th class="l">marginal CPU per user at the top (last two steps)</th><td>${n(v.marginalCpuMs, 3)} ms per user-second → ~${v.marginalPredictedUsersAt80PctCore ?? "–"} users at 80% of a core</td></tr>
<tr><th class="l">target: ≤ ${PER_USER_CPU_TARGET_MS} ms CPU per user-second</th><td>${target(v.targets.perUserCpuMet)}</td></tr>
<tr><th class="l">target: ≥ ${USERS_TARGET.toLocaleString("en")} users per pod at lag p99 ≤ 50 ms</th><td>${target(v.targets.usersMet)}${v.targets.usersMet === null && v.predictedUsersAt80PctCore !== null ? ` (cost predicts ~${v.predictedUsersAt80PctCore})` : ""}</td></tr>
</table>

<h2>Charts</h2>
<div class="charts" id="charts">${charts}</div>

<h2>Steps</h2>
<div class="scroll"><table id="steps">
<tr><th class="l">step</th><th>target</th><th>users on pod</th><th>pod CPU (cores)</th><th>ms CPU / user-s</th><th>ELU</th><th>lag p99 ms</th><th title="the highest of the once-a-second lag readings (the p99 comes from every sample of the pod's histogram)">lag max of 1 s readings, ms</th><th>RSS MB</th><th>heap MB</th><th>UDP in/s</th><th>UDP drops/s</th><th>app msgs out/s</th><th>transcripts/s</th><th>audio→display p50/p95 ms</th><th>app→phone p50 ms</th><th>failed connects</th><th>generator CPU max</th><th>machine busy</th><th class="l">trusted</th></tr>
${r.steps.map((s) => stepRow(s, v.kneeStep)).join("\n")}
</table></div>
${auxKeys.length ? `<p class="muted">Other processes on this machine, mean cores per step: ${r.steps.filter((s) => s.users > 0).map((s) => `${s.users} users: ${auxKeys.map((k) => `${esc(k)} ${n(s.auxCpu[k], 2)}`).join(", ")}`).join(" · ")}</p>` : ""}

<h2>Per-user cost (least squares)</h2>
<table id="fits"><tr><th class="l">quantity</th><th>baseline</th><th>per user</th><th>R²</th><th>points</th><th>users</th></tr>
${fitRow("pod CPU", f.cpuMsPerS, "ms/s", "ms per user-second")}
${fitRow("pod RSS", f.rssMB, "MB", "KB per user", 1024, 1)}
${fitRow("pod heap used", f.heapMB, "MB", "KB per user", 1024, 1)}
${fitRow("event-loop utilisation", f.elu, "", "per user", 1, 5)}
</table>

<h2>How this was measured</h2>
<ul class="notes">${r.notes.map((x) => `<li>${esc(x)}</li>`).join("")}
<li>Plan: steps ${esc(r.options.steps.join(" → "))} users, ramp ${r.options.rampPerS} users/s, hold ${r.options.holdS} s per step; features: ${esc(r.options.features.join(", "))}; transcription ${esc(r.options.transcription)}${r.options.transcription === "stream" && r.environment.cluster === "own" ? ` (STT frames: ${r.options.sttFrameMs ? `${r.options.sttFrameMs} ms` : "every 40 ms packet"})` : ""}; ${r.options.sdkUsers} user(s) on the real @mentra/sdk app, the rest on the lean protocol-level app.</li>
${last ? `<li>At the end: ${last.gen.running} phones running, ${last.gen.attempts} connection attempts, ${last.gen.failures} failed (${esc(Object.entries(last.gen.failuresByKind).map(([k, c]) => `${k} ×${c}`).join(", ") || "none")}), ${last.gen.disconnects} unexpected disconnects, ${last.gen.udpFallbacks} UDP fallbacks to WebSocket audio.</li>` : ""}
</ul>
<p class="muted">Every sample: <a href="${esc(jsonHref)}">${esc(jsonHref)}</a> (${r.samples.length} samples).</p>
</main></body></html>
`;
}
