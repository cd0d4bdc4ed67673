/**
 * The live page: start, stop, set the user count, the summary line and live charts of lag,
 * sessions, CPU, memory and latency against users. Plain HTML and script; the chart code is
 * chart.ts itself (sent as source), so the page and the report draw the same charts.
 */
import { buildChartSpecs, renderChartSvg } from "./chart.ts";
import { STYLE } from "./report.ts";
import { summaryLine } from "./summary.ts";

export function renderLivePage(): string {
  // tsx/esbuild wraps named inner functions in __name(); the shim makes the sources standalone.
  const lib = ["var __name = function (f) { return f; };", renderChartSvg.toString(), buildChartSpecs.toString(), summaryLine.toString()].join("\n");
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Load test (live)</title>
<meta name="viewport" content="width=device-width,initial-scale=1">
<style>${STYLE}
.bar{display:flex;flex-wrap:wrap;gap:10px;align-items:center;background:#fff;border:1px solid #e2e2e2;padding:10px 12px;margin:12px 0}
.bar input{width:90px;padding:4px} .bar input#steps{width:220px}
button{padding:5px 12px;cursor:pointer} button:disabled{cursor:default;opacity:.5}
#status{font-weight:600} #summary{font-family:ui-monospace,Menlo,monospace;font-size:12.5px;background:#fff;border:1px solid #e2e2e2;padding:8px 10px;white-space:pre-wrap}
#progress{height:8px;background:#eee;margin:8px 0} #progress div{height:8px;background:#1f77b4;width:0}
</style></head>
<body><main>
<h1>Session pod load test <span class="muted" id="target-info"></span></h1>
<div class="bar">
  <span>status: <span id="status">…</span></span>
  <label>steps <input id="steps" data-testid="steps"></label>
  <button id="start" data-testid="start">Start</button>
  <button id="stop" data-testid="stop">Stop</button>
  <label>users <input id="users" type="number" min="0" step="1" data-testid="users"></label>
  <button id="set-users" data-testid="set-users">Set users</button>
  <a id="report-link" href="/report" style="display:none">report</a>
</div>
<div id="progress"><div></div></div>
<div id="summary" data-testid="summary">waiting for the first sample…</div>
<p class="answer none" id="answer" style="display:none"></p>
<p class="muted" id="error" style="color:#d62728"></p>
<div class="charts" id="charts"></div>
</main>
<script>
${lib}
var samples = [], steps = [], since = 0, runId = null, threshold = 50, state = {};
function $(id) { return document.getElementById(id); }
async function api(method, url, body) {
  var r = await fetch(url, { method: method, headers: body ? { "content-type": "application/json" } : {}, body: body ? JSON.stringify(body) : undefined });
  var j = await r.json().catch(function () { return {}; });
  if (!r.ok) { $("error").textContent = j.message || ("HTTP " + r.status); throw new Error(j.message || r.status); }
  $("error").textContent = "";
  return j;
}
function draw() {
  var specs = buildChartSpecs(samples, steps, threshold);
  $("charts").innerHTML = specs.map(renderChartSvg).join("");
}
async function poll() {
  var s;
  try { s = await api("GET", "/api/state?since=" + since); } catch (e) { return; }
  state = s;
  threshold = s.thresholdMs;
  if (s.runId !== runId) { runId = s.runId; samples = []; since = 0; }
  samples = samples.concat(s.samples);
  if (samples.length > 5000) samples = samples.slice(samples.length - 5000);
  since = s.seq;
  steps = s.steps;
  $("status").textContent = s.state + (s.phase && s.state === "running" ? " (" + s.phase + (s.step !== null ? ", step " + s.step : "") + ")" : "");
  $("target-info").textContent = "· " + s.pods.length + " pod(s) · " + s.workers + " generator process(es) · up to " + s.maxUsers + " users";
  if (!$("steps").value) $("steps").value = s.plan.join(",");
  $("start").disabled = !(s.state === "idle" || s.state === "done");
  $("stop").disabled = s.state !== "running";
  $("set-users").disabled = !(s.state === "idle" || s.state === "done" || s.state === "running");
  var last = samples[samples.length - 1];
  $("summary").textContent = summaryLine(last, threshold);
  var pct = s.maxUsers ? Math.min(100, (last ? last.gen.running : 0) * 100 / s.maxUsers) : 0;
  $("progress").firstElementChild.style.width = pct + "%";
  if (s.answer) { $("answer").style.display = ""; $("answer").textContent = s.answer; $("answer").className = "answer " + s.verdictKind; } else { $("answer").style.display = "none"; }
  $("report-link").style.display = s.report ? "" : "none";
  if (s.error) $("error").textContent = s.error;
  draw();
}
$("start").onclick = function () {
  var list = $("steps").value.split(/[ ,→>]+/).map(Number).filter(function (n) { return n > 0; });
  api("POST", "/api/start", { steps: list }).then(poll);
};
$("stop").onclick = function () { api("POST", "/api/stop").then(poll); };
$("set-users").onclick = function () { api("POST", "/api/users", { users: Number($("users").value) }).then(poll); };
poll();
setInterval(poll, 1000);
</script>
</body></html>`;
}
