/**
 * `npm run loadtest -- --users 200`: the capacity answer for one session pod.
 * Starts (or targets) a cluster, steps the user count up, shows a progress bar and a live summary
 * line, serves the live page, and writes report.html + samples.json. See USAGE in options.ts.
 */
import { Driver, samplesJson } from "./driver.ts";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { reanalyze } from "./analysis.ts";
import { parseCli, REANALYZE, USAGE } from "./options.ts";
import { renderReportHtml } from "./report.ts";
import type { RunReport } from "./types.ts";
import { summaryLine } from "./summary.ts";
import type { StepResult } from "./types.ts";
import { startWebServer, type WebServer } from "./web.ts";

function fmtStep(s: StepResult): string {
  const r = (v: number | null, d = 0) => (v === null ? "–" : v.toFixed(d));
  const name = s.users === 0 ? "idle baseline" : `step ${s.index}: ${s.users} users`;
  return (
    `${name} · on pod ${r(s.podSessionsMax)} · lag p99 ${r(s.lagP99Ms, 1)} ms · ELU ${r(s.elu, 2)} · CPU ${r(s.podCpuCores, 3)} cores` +
    (s.podCpuMsPerUserS !== null && s.users > 0 ? ` (${r(s.podCpuMsPerUserS, 2)} ms/user-s)` : "") +
    ` · RSS ${r(s.rssMB)} MB · e2e p50/p95 ${r(s.latency.audioToPhoneP50)}/${r(s.latency.audioToPhoneP95)} ms · failed ${s.failures}/${s.attempts}` +
    (s.trusted ? "" : ` · GENERATOR NOT TRUSTED: ${s.saturation.join("; ")}`)
  );
}

async function main(): Promise<number> {
  let o;
  try {
    o = parseCli(process.argv.slice(2));
  } catch (err) {
    console.error(`loadtest: ${oneLine(err)}\n\n${USAGE}`);
    return 2;
  }
  if (!o) {
    console.log(USAGE);
    return 0;
  }
  // Output piped into `head` and closed early: keep running (the report is what matters).
  for (const stream of [process.stdout, process.stderr]) {
    stream.on("error", (err: NodeJS.ErrnoException) => {
      if (err.code !== "EPIPE") throw err;
    });
  }
  if (REANALYZE.path) {
    let stored: RunReport;
    try {
      stored = JSON.parse(readFileSync(REANALYZE.path, "utf8")) as RunReport;
      if (!stored || !Array.isArray(stored.samples) || !Array.isArray(stored.windows) || !stored.options) throw new Error("not a samples.json written by a load-test run (samples, windows, options missing)");
    } catch (err) {
      console.error(`loadtest: --from ${REANALYZE.path}: ${oneLine(err)}`);
      return 1;
    }
    const argv = process.argv.slice(2).join(" ");
    const over = {
      ...(/--lag-threshold/.test(argv) ? { lagThresholdMs: o.lagThresholdMs } : {}),
      ...(/--latency-threshold/.test(argv) ? { latencyThresholdMs: o.latencyThresholdMs } : {}),
      ...(/--fail-threshold/.test(argv) ? { failThreshold: o.failThreshold } : {}),
      ...(/--settle/.test(argv) ? { settleS: o.settleS } : {}),
    };
    const r = reanalyze(stored, over);
    const html = path.join(path.dirname(REANALYZE.path), "report.html");
    writeFileSync(html, renderReportHtml(r, path.basename(REANALYZE.path)));
    // The samples stay as measured; the analysis in the file follows the report.
    writeFileSync(REANALYZE.path, samplesJson(r));
    for (const s of r.steps) console.log(fmtStep(s));
    console.log(`\n${r.verdict.answer}\n\nreport: ${html}`);
    return 0;
  }
  const tty = process.stdout.isTTY === true;
  let barShown = false;
  const clearBar = () => {
    if (tty && barShown) process.stdout.write("\r\x1b[2K");
    barShown = false;
  };
  const say = (line: string) => {
    clearBar();
    console.log(line);
  };
  const driver = new Driver(o);
  driver.on("log", (m) => say(`[loadtest] ${m}`));
  driver.on("step", (s) => say(`[loadtest] ${fmtStep(s)}`));
  let lastPrint = 0;
  driver.on("sample", (s) => {
    if (driver.state !== "running") return;
    const line = summaryLine(s, o.lagThresholdMs);
    if (tty) {
      const width = 24;
      const frac = o.users ? Math.min(1, s.gen.running / o.users) : 0;
      const bar = "█".repeat(Math.round(frac * width)) + "░".repeat(width - Math.round(frac * width));
      const step = s.step === null ? "" : s.step === 0 ? " idle" : ` step ${s.step}/${o.steps.length} ${s.phase}`;
      const cols = process.stdout.columns || 160;
      process.stdout.write(`\r\x1b[2K[${bar}]${step} · ${line}`.slice(0, cols - 1));
      barShown = true;
    } else if (Date.now() - lastPrint >= 5000) {
      lastPrint = Date.now();
      console.log(`[loadtest] ${s.elapsedS.toFixed(0)} s · ${line}`);
    }
  });

  let web: WebServer | null = null;
  let quitting = false;
  const quit = async (code: number) => {
    if (quitting) return;
    quitting = true;
    clearBar();
    await web?.close().catch(() => undefined);
    await driver.teardown();
    process.exit(code);
  };
  // Ctrl-C or SIGTERM: write the report with what was measured, then take everything down. Run
  // through npm and tsx, one Ctrl-C arrives more than once (the terminal's and the wrapper's
  // relay): a repeat within 3 s is that same signal. A later one quits at once; the processes we
  // started are then killed on exit (proc.ts).
  let signalledAt = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    if (signalledAt) {
      if (Date.now() - signalledAt < 3000) return;
      return process.exit(130);
    }
    signalledAt = Date.now();
    if (driver.state === "running") {
      say(`[loadtest] ${sig}: stopping, writing the report with what was measured (again to quit at once)`);
      void driver.stop().then(() => quit(130));
    } else void quit(130);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  try {
    await driver.setup();
  } catch (err) {
    console.error(`loadtest: setup failed: ${(err as Error).message}`);
    return 1;
  }
  if (o.uiPort !== null) {
    try {
      web = await startWebServer(driver, { port: o.uiPort, host: o.uiHost });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EADDRINUSE") throw err;
      web = await startWebServer(driver, { port: 0, host: o.uiHost });
    }
    say(`[loadtest] live page: ${web.url}`);
  }
  if (o.interactive) {
    say("[loadtest] interactive: start, stop and set users from the live page; Ctrl-C to quit");
    driver.on("state", (st) => {
      if (st === "done" && driver.lastResult) say(`[loadtest] ${driver.lastResult.report.verdict.answer}\n[loadtest] report: ${driver.lastResult.htmlPath}`);
    });
    return new Promise<number>(() => undefined); // until Ctrl-C
  }
  say(`[loadtest] plan: ${o.steps.join(" → ")} users, ramp ${o.rampPerS}/s, hold ${o.holdS} s`);
  const result = await driver.start();
  clearBar();
  if (result) {
    const v = result.report.verdict;
    console.log(`\n${v.answer}\n`);
    console.log(`report:  ${result.htmlPath}\nsamples: ${result.jsonPath}`);
    console.log(`targets: ≤ ${v.targets.perUserCpuMsTarget} ms CPU per user-second: ${v.targets.perUserCpuMet === null ? "unknown" : v.targets.perUserCpuMet ? "met" : "not met"} (${v.perUserCpuMs ?? "?"}); ≥ ${v.targets.usersTarget} users per pod: ${v.targets.usersMet === null ? `not shown (predicted ~${v.predictedUsersAt80PctCore ?? "?"})` : v.targets.usersMet ? "met" : "not met"}`);
  }
  await quit(result ? 0 : 1);
  return 0;
}

main().then(
  (code) => {
    if (code !== 0) process.exit(code);
  },
  (err) => {
    console.error(`loadtest: ${(err as Error).stack ?? err}`);
    process.exit(1);
  },
);

/** An error as one line (parseArgs hints and JSON.parse messages quoting the file span lines). */
function oneLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).replace(/\s*\n\s*/g, " ");
}
