/**
 * The load test's arithmetic without processes: histogram quantiles, least squares, the knee, the
 * breaking point, the generator-saturation verdict and its one-sentence answer, the pod metrics
 * reader against a real PodMetrics exposition, the charts and the report page, the audio pacer.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { PodMetrics } from "@mentra-cluster/metrics";
import {
  AudioPacer,
  buildChartSpecs,
  computeStep,
  decide,
  isSetupFailure,
  parseCli,
  defaultOptions,
  fitCosts,
  leastSquares,
  planFor,
  promHistogramQuantile,
  promHistogramShareAbove,
  readPodMetrics,
  renderChartSvg,
  renderReportHtml,
  sdkIndices,
  shareOf,
  Histogram,
  type RunReport,
  type Sample,
  type StepWindow,
} from "@mentra-cluster/loadtest";

const LE = [1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, Infinity];

test("quantiles from histograms and least squares", () => {
  // 100 observations: 98 at ≤ 5 ms, 2 in (50, 100].
  const cum = LE.map((le) => ({ le, count: le >= 100 ? 100 : le >= 5 ? 98 : 0 }));
  assert.equal(promHistogramQuantile(cum, 0.5), 2.5 + (2.5 * 50) / 98);
  assert.ok(promHistogramQuantile(cum, 0.99)! > 50 && promHistogramQuantile(cum, 0.99)! <= 100);
  assert.ok(Math.abs(promHistogramShareAbove(cum, 50)! - 0.02) < 1e-12);
  assert.equal(promHistogramQuantile([], 0.99), null);
  const h = new Histogram([10, 20, 30]);
  for (let i = 1; i <= 100; i++) h.add(i * 0.3); // 0.3 … 30
  assert.ok(Math.abs(h.quantile(0.5)! - 15) < 1);
  const fit = leastSquares([[0, 20], [100, 140], [200, 260], [300, 380]])!;
  assert.ok(Math.abs(fit.slope - 1.2) < 1e-9 && Math.abs(fit.intercept - 20) < 1e-9 && fit.r2 > 0.9999);
  assert.equal(leastSquares([[5, 1]]), null);
  assert.equal(leastSquares([[5, 1], [5, 2]]), null);
});

test("plans, shares and the real-SDK sample", () => {
  assert.deepEqual(planFor(200), [10, 50, 100, 200]);
  assert.deepEqual(planFor(2000), [10, 50, 100, 200, 500, 1000, 2000]);
  assert.deepEqual(planFor(300, [100, 500]), [100, 300]);
  assert.deepEqual([0, 1, 2].map((w) => shareOf(10, w, 3)), [4, 3, 3]);
  assert.equal([0, 1, 2].reduce((a, w) => a + shareOf(1000, w, 3), 0), 1000);
  assert.deepEqual(sdkIndices(20, 2), [0, 10]);
  assert.deepEqual(sdkIndices(3, 5), [0, 1, 2]);
  assert.deepEqual(sdkIndices(100, 0), []);
});

// ---------------------------------------------------------------- a synthetic run

interface Phase {
  users: number;
  cpuMsPerS: number;
  /** Lag samples per second and how many of them land above 50 ms. */
  slowShare: number;
  workerCpu?: number;
  hostBusy?: number;
  /** Every sample carries 10 audio → display latencies of this many ms. */
  e2eMs?: number;
  attempts?: number;
  failures?: number;
  /** The failures' kind (default upgrade_503). */
  failureKind?: string;
}

function latencyOf(ms: number) {
  const h = new Histogram();
  for (let i = 0; i < 10; i++) h.add(ms);
  return { counts: [...h.counts], max: h.max };
}

/** 10 samples per phase, 1 s apart; counters accumulate like a pod's. */
function syntheticRun(phases: Phase[]): { samples: Sample[]; windows: StepWindow[] } {
  const samples: Sample[] = [];
  const windows: StepWindow[] = [];
  let t = 1_000_000;
  let cpuS = 0, fast = 0, slow = 0, attempts = 0, failures = 0, packets = 0, seq = 0;
  phases.forEach((ph, index) => {
    const w: StepWindow = { index, users: ph.users, rampStartT: t, holdStartT: t + 1000, endT: t + 9000 };
    windows.push(w);
    attempts += ph.attempts ?? ph.users;
    failures += ph.failures ?? 0;
    for (let i = 0; i < 10; i++) {
      cpuS += ph.cpuMsPerS / 1000;
      slow += 4 * ph.slowShare;
      fast += 4 * (1 - ph.slowShare);
      packets += ph.users * 25;
      const lagBuckets = LE.map((le) => ({ le, count: le >= 100 ? fast + slow : le >= 5 ? fast : 0 }));
      const workerCpu = ph.workerCpu ?? 0.2;
      samples.push({
        seq: ++seq,
        t,
        elapsedS: 0,
        phase: "hold",
        step: index,
        gen: {
          target: ph.users, running: ph.users, connected: ph.users, connecting: 0, attempts, failures, failuresByKind: failures ? { [ph.failureKind ?? "upgrade_503"]: failures } : {},
          disconnects: 0, reconnects: 0, udpFallbacks: 0, packetsSent: packets, packetsPerS: ph.users * 25, packetsOffline: 0, packetsLateDropped: 0, sendLateP99Ms: 2,
          workerCpuCores: [workerCpu], workerLagP99Ms: [3], driverCpuCores: 0.02, driverLagP99Ms: 2, rssMB: 100, transcriptsAtApp: 0, displaysAtPhone: 0, audioChunkBytesAtApp: 0,
          latency: { audioToApp: { counts: [], max: 0 }, appToPhone: { counts: [], max: 0 }, audioToPhone: latencyOf(ph.e2eMs ?? 20), sdkAppToPhone: { counts: [], max: 0 } },
          lat: { audioToPhoneP50: null, audioToPhoneP95: null, audioToAppP50: null, appToPhoneP50: null },
        },
        pods: [{
          podId: "pod-0", ok: true, sessions: ph.users, miniapps: ph.users, udpSessions: ph.users, lagMs: 1, lagP99Ms: 1, lagP99RecentMs: 1, elu: ph.cpuMsPerS / 1000,
          cpuCores: ph.cpuMsPerS / 1000, rssMB: 100 + ph.users * 0.1, heapUsedMB: 50 + ph.users * 0.05, heapTotalMB: 80, externalMB: 5,
          rates: { udpIn: ph.users * 25, udpDropped: 0, wsClientIn: 0, wsClientOut: 0, wsAppIn: 0, wsAppOut: 0 },
          counters: { cpuSeconds: cpuS, udpReceived: packets, udpDropped: 0, wsClientIn: 0, wsClientOut: 0, wsAppIn: 0, wsAppOut: 0, droppedMessages: 0, transcriptionErrors: 0, newSessionRejections: 0, sessionCreations: 0, unhandledRejections: 0, uncaughtExceptions: 0, lagSamples: fast + slow },
          lagBuckets,
        }],
        hostBusy: ph.hostBusy ?? 0.5,
        hostCores: 2,
        aux: {},
        saturation: [
          ...(workerCpu >= 0.85 ? [`generator-cpu: generator process 0 used ${workerCpu} cores (limit 0.85)`] : []),
          ...((ph.hostBusy ?? 0) > 0.9 ? [`host: the machine's 2 CPUs were ${Math.round(ph.hostBusy! * 100)}% busy (limit 90%)`] : []),
        ],
        sdk: { sessions: 0, transcripts: 0, cpuCores: null },
      });
      t += 1000;
    }
  });
  return { samples, windows };
}

const o = defaultOptions({ users: 500, settleS: 2 });
const stepsOf = (run: ReturnType<typeof syntheticRun>) => run.windows.map((w) => computeStep(run.samples, w, o));

test("the knee, the capacity before it, per-user costs, and the breaking point", () => {
  const run = syntheticRun([
    { users: 0, cpuMsPerS: 20, slowShare: 0 },
    { users: 100, cpuMsPerS: 140, slowShare: 0 },
    { users: 200, cpuMsPerS: 260, slowShare: 0.005 },
    { users: 300, cpuMsPerS: 380, slowShare: 0 },
    { users: 400, cpuMsPerS: 500, slowShare: 0.05, attempts: 100, failures: 10 },
  ]);
  const steps = stepsOf(run);
  assert.equal(steps[1]!.podCpuCores, 0.14);
  assert.equal(steps[1]!.podCpuMsPerUserS, 1.4);
  assert.equal(steps[1]!.udpInPerS, 2500);
  assert.ok(steps[2]!.lagP99Ms! <= 50, `0.5 % slow samples keep p99 at ${steps[2]!.lagP99Ms}`);
  assert.ok(steps[4]!.lagP99Ms! > 50 && steps[4]!.overThreshold);
  assert.equal(steps[4]!.failureRate, 0.1);
  const fits = fitCosts(steps);
  assert.ok(Math.abs(fits.cpuMsPerS!.slope - 1.2) < 1e-6 && Math.abs(fits.cpuMsPerS!.intercept - 20) < 1e-6);
  assert.ok(Math.abs(fits.rssMB!.slope * 1024 - 102.4) < 1e-6);
  const v = decide(steps, fits, o);
  assert.equal(v.kind, "capacity");
  assert.equal(v.capacityUsers, 300);
  assert.equal(v.kneeUsers, 400);
  assert.equal(v.breakingUsers, 400);
  assert.equal(v.perUserCpuMs, 1.2);
  assert.equal(v.predictedUsersAt80PctCore, 650);
  assert.equal(v.targets.perUserCpuMet, false);
  assert.equal(v.targets.usersMet, false);
  assert.match(v.answer, /^One pod handles 300 concurrent users .* before degradation: event-loop lag p99 stayed ≤ 50 ms up to 300 users and reached \d+ ms at 400; each user costs 1\.20 ms of pod CPU per second/);
  assert.match(v.answer, /Connections started failing at 400 users \(10\.0% of attempts: upgrade_503 ×10\)/);
});

test("a generator that saturates itself says so instead of reporting a capacity", () => {
  const run = syntheticRun([
    { users: 0, cpuMsPerS: 20, slowShare: 0 },
    { users: 100, cpuMsPerS: 140, slowShare: 0 },
    { users: 200, cpuMsPerS: 260, slowShare: 0, workerCpu: 0.97 },
    { users: 300, cpuMsPerS: 380, slowShare: 0.2, workerCpu: 0.99 },
  ]);
  const steps = stepsOf(run);
  assert.equal(steps[2]!.trusted, false);
  const fits = fitCosts(steps);
  assert.equal(fits.cpuMsPerS!.n, 2, "only trusted steps are fitted");
  const v = decide(steps, fits, o);
  assert.equal(v.kind, "saturated");
  assert.equal(v.capacityUsers, null);
  assert.equal(v.saturatedAtUsers, 200);
  assert.equal(v.targets.usersMet, null);
  assert.match(v.answer, /^No capacity is reported: the load generator could not drive 200 users \(generator-cpu: generator process 0 used 0\.97 cores/);
  assert.match(v.answer, /up to 100 users the pod's lag p99 stayed ≤ 50 ms and each user costs 1\.20 ms of pod CPU per second/);
});

test("a machine out of CPU: no capacity either, but the delivered load still prices each user", () => {
  const run = syntheticRun([
    { users: 0, cpuMsPerS: 20, slowShare: 0 },
    { users: 100, cpuMsPerS: 140, slowShare: 0 },
    { users: 200, cpuMsPerS: 260, slowShare: 0.05, hostBusy: 0.99 },
  ]);
  const steps = stepsOf(run);
  assert.equal(steps[2]!.trusted, false);
  assert.equal(steps[2]!.loadDelivered, true);
  const fits = fitCosts(steps);
  assert.equal(fits.cpuMsPerS!.n, 3, "CPU seconds of the busy step still count");
  const v = decide(steps, fits, o);
  assert.equal(v.kind, "saturated");
  assert.equal(v.kneeUsers, 200, "the knee is reported as seen…");
  assert.equal(v.capacityUsers, null, "…but not turned into a capacity");
  assert.match(v.answer, /^No capacity is reported: this machine ran out of CPU at 200 users \(host: the machine's 2 CPUs were 99% busy/);
  assert.match(v.answer, /each user costs 1\.20 ms of pod CPU per second.*which predicts about 650 users per pod at 80% of one core/);
});

test("a step where the machine was busy for a moment is set aside when a later, trusted step carried more users", () => {
  const run = syntheticRun([
    { users: 0, cpuMsPerS: 20, slowShare: 0 },
    { users: 100, cpuMsPerS: 140, slowShare: 0.05, hostBusy: 0.99 },
    { users: 200, cpuMsPerS: 260, slowShare: 0 },
    { users: 300, cpuMsPerS: 380, slowShare: 0 },
  ]);
  const steps = stepsOf(run);
  assert.equal(steps[1]!.trusted, false);
  assert.ok(steps[1]!.overThreshold, "its lag was over the threshold");
  const v = decide(steps, fitCosts(steps), o);
  assert.equal(v.kind, "above");
  assert.equal(v.capacityUsers, 300);
  assert.equal(v.kneeUsers, null);
  assert.equal(v.saturatedAtUsers, null);
  assert.match(v.answer, /^One pod held all 300 users tested/);
  assert.match(v.answer, /Set aside \(the generator or machine was saturated there, a later step was not\): 100 users \(host: the machine's 2 CPUs were 99% busy/);
});

test("refusals that are not load (an unknown app) say the target is not set up, not that the pod degrades", () => {
  const run = syntheticRun([
    { users: 0, cpuMsPerS: 20, slowShare: 0 },
    { users: 20, cpuMsPerS: 40, slowShare: 0, attempts: 110, failures: 110, failureKind: "app_start_404_app_not_found" },
  ]);
  const steps = stepsOf(run);
  assert.equal(steps[1]!.setupFailures, 110);
  assert.equal(isSetupFailure("reconnect_upgrade_401"), true);
  assert.equal(isSetupFailure("route_503"), false);
  assert.equal(isSetupFailure("app_start_504_timeout"), false);
  const v = decide(steps, fitCosts(steps), o);
  assert.equal(v.kind, "setup");
  assert.equal(v.capacityUsers, null);
  assert.match(v.answer, /^No capacity is reported: at 20 users 110 of 110 connection attempts were refused for reasons that are not load \(app_start_404_app_not_found ×110\), so the target is not set up for this run/);
  assert.doesNotMatch(v.answer, /degrades/);
});

test("a step stopped before it was measured is left out of the answer and named", () => {
  const run = syntheticRun([
    { users: 0, cpuMsPerS: 20, slowShare: 0 },
    { users: 100, cpuMsPerS: 140, slowShare: 0 },
    { users: 200, cpuMsPerS: 260, slowShare: 0 },
  ]);
  // Stopped 1.5 s into the second step's hold.
  run.windows[2]!.endT = run.windows[2]!.holdStartT! + 1500;
  const steps = stepsOf(run);
  assert.ok(steps[2]!.samples < 3);
  const v = decide(steps, fitCosts(steps), o);
  assert.equal(v.kind, "above");
  assert.equal(v.capacityUsers, 100);
  assert.match(v.answer, /Not measured \(stopped before 3 samples\): 200 users\./);
});

test("CLI options: counts are whole numbers in range, steps within --users, --stt-frame-ms 0 allowed", () => {
  const bad: [string[], RegExp][] = [
    [["--users", "1.5"], /--users must be a whole number/],
    [["--workers", "1.5"], /--workers must be a whole number/],
    [["--pods", "2.5"], /--pods must be a whole number/],
    [["--fail-threshold", "2"], /--fail-threshold must be a number from 0 to 1/],
    [["--ui-port", "99999"], /--ui-port must be a number from 0 to 65535/],
    [["--stt-frame-ms=-1"], /--stt-frame-ms must be a number from 0 to 1000/],
    [["--users", "100", "--steps", "50,200"], /--steps 200 above --users 100/],
    [["--users", ""], /--users must be a number/],
    [["--users", "-5"], /--users must be a number from 1 to 100000, got "-5"/],
    [["--hold", "-1"], /--hold must be a number ≥ 1, got "-1"/],
    [["--users", "1e12"], /--users must be a number from 1 to 100000/],
    [["--steps", ""], /--steps must be user counts separated by commas/],
    [["--steps", "10,,20"], /--steps must be user counts separated by commas/],
    [["--steps", "10,x"], /--steps must be a number/],
    [["--workers", "0"], /--workers must be a number from 1 to 64/],
    [["--gateway", "not-a-url"], /--gateway must be an http:\/\/ or https:\/\/ URL/],
    [["--wav", "/nonexistent.wav"], /--wav: .*nonexistent\.wav/],
  ];
  for (const [argv, re] of bad) assert.throws(() => parseCli(argv), re, argv.join(" "));
  assert.equal(parseCli(["--stt-frame-ms", "0"])!.sttFrameMs, 0);
  assert.equal(parseCli(["--stt-frame-ms", "80"])!.sttFrameMs, 80);
  assert.equal(parseCli([])!.sttFrameMs, 100);
  assert.deepEqual(parseCli(["--steps", "10,20"])!.steps, [10, 20]);
  assert.deepEqual(parseCli(["--steps", "10 20, 30"])!.steps, [10, 20, 30], "spaces separate counts too");
  assert.equal(parseCli(["--gateway", "http://127.0.0.1:7000/"])!.gateway, "http://127.0.0.1:7000");
  assert.equal(parseCli(["--lag-threshold", "20", "--users", "30"])!.users, 30, "a negative-looking value is only joined to the option before it");
});

test("a loop near 100% with low lag but seconds of audio → display latency is degradation too", () => {
  const run = syntheticRun([
    { users: 0, cpuMsPerS: 20, slowShare: 0 },
    { users: 400, cpuMsPerS: 700, slowShare: 0, e2eMs: 40 },
    { users: 500, cpuMsPerS: 800, slowShare: 0, e2eMs: 1800 },
  ]);
  const steps = stepsOf(run);
  assert.equal(steps[2]!.overLag, false);
  assert.equal(steps[2]!.overLatency, true);
  const v = decide(steps, fitCosts(steps), o);
  assert.equal(v.kind, "capacity");
  assert.equal(v.capacityUsers, 400);
  assert.match(v.answer, /up to 400 users, but at 500 users audio → display latency p95 reached \d+ ms \(> 1000 ms; lag p99/);
});

test("no knee within the plan: the capacity is above the last step; too little audio sent is saturation too", () => {
  const run = syntheticRun([
    { users: 0, cpuMsPerS: 20, slowShare: 0 },
    { users: 100, cpuMsPerS: 70, slowShare: 0 },
    { users: 200, cpuMsPerS: 120, slowShare: 0 },
  ]);
  const steps = stepsOf(run);
  const v = decide(steps, fitCosts(steps), o);
  assert.equal(v.kind, "above");
  assert.equal(v.capacityUsers, 200);
  assert.equal(v.perUserCpuMs, 0.5);
  assert.equal(v.targets.perUserCpuMet, true);
  assert.match(v.answer, /^One pod held all 200 users tested .* so its capacity is above 200; each user costs 0\.50 ms/);
  // The generator sending only half the audio due is not a trusted step.
  for (const s of run.samples) if (s.step === 2) s.gen.packetsSent -= Math.round((s.t - run.windows[2]!.rampStartT) / 1000) * 2500;
  const again = computeStep(run.samples, run.windows[2]!, o);
  assert.equal(again.trusted, false);
  assert.match(again.saturation.join(), /audio: the generator sent 50% of the audio due/);
});

test("the pod metrics reader reads a real PodMetrics exposition", async () => {
  const m = new PodMetrics({ podId: "pod-x", lagSampleIntervalMs: 1000 });
  m.userSessionsInc();
  m.userSessionsInc();
  m.miniappSessionsInc();
  for (let i = 0; i < 99; i++) m.recordLagSample(2);
  m.recordLagSample(80);
  m.udpReceived();
  m.wsMiniappOut(7);
  const s = readPodMetrics("pod-x", await m.metricsText(), m.health() as unknown as Record<string, unknown>);
  assert.equal(s.sessions, 2);
  assert.equal(s.miniapps, 1);
  assert.equal(s.counters.udpReceived, 1);
  assert.equal(s.counters.wsAppOut, 7);
  assert.equal(s.counters.lagSamples, 100);
  assert.ok(s.counters.cpuSeconds !== null && s.counters.cpuSeconds > 0, "process_cpu_seconds_total");
  assert.ok(s.rssMB > 10);
  assert.equal(s.lagMs, 80);
  const top = s.lagBuckets.find((b) => b.le === Infinity)!;
  assert.equal(top.count, 100);
  assert.ok(Math.abs(promHistogramShareAbove(s.lagBuckets, 50)! - 0.01) < 1e-12);
  m.stop();
});

test("charts and the report render from samples: one SVG per chart, points from the data", () => {
  const run = syntheticRun([
    { users: 0, cpuMsPerS: 20, slowShare: 0 },
    { users: 100, cpuMsPerS: 140, slowShare: 0 },
  ]);
  const steps = stepsOf(run);
  const specs = buildChartSpecs(run.samples, steps, 50);
  assert.deepEqual(specs.map((s) => s.id), ["lag", "sessions", "cpu", "memory", "latency"]);
  const svg = renderChartSvg(specs[0]!);
  assert.match(svg, /^<svg [^>]*data-chart="lag" data-points="\d+"/);
  const sessions = renderChartSvg(specs[1]!);
  assert.match(sessions, new RegExp(`data-series="phones running" data-n="${run.samples.length}"`));
  const fits = fitCosts(steps);
  const report: RunReport = {
    version: 1, startedAt: "s", endedAt: "e", options: (({ jwtSecret: _a, adminToken: _b, appApiKey: _c, ...x }) => x)(o),
    environment: { host: "h", cpus: 2, cpuModel: "cpu", memGB: 1, node: "v20", platform: "linux", cluster: "own" },
    steps: steps.map(({ perPod: _p, ...s }) => s), windows: run.windows, fits, verdict: decide(steps, fits, o), samples: run.samples, notes: ["<n>"],
  };
  const html = renderReportHtml(report, "samples.json");
  assert.equal((html.match(/<svg /g) ?? []).length, 5);
  assert.ok(html.includes(report.verdict.answer.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")));
  assert.ok(html.includes("&lt;n&gt;"), "notes are escaped");
  assert.match(html, /<tr class="idle" data-step="0">/);
});

test("the audio pacer sends 25 packets/s per phone on a drift-free schedule, phases spread", async () => {
  const packets = Array.from({ length: 50 }, (_, i) => Buffer.alloc(1280, i));
  const pacer = new AudioPacer(packets);
  const sinks = Array.from({ length: 16 }, () => ({ n: 0, sendAudio() { this.n++; return true; } }));
  for (const s of sinks) pacer.add(s, () => 0);
  await new Promise((r) => setTimeout(r, 1000));
  pacer.stop();
  for (const s of sinks) assert.ok(s.n >= 22 && s.n <= 27, `${s.n} packets in 1 s`);
  assert.equal(pacer.sent, sinks.reduce((a, s) => a + s.n, 0));
  assert.ok((pacer.lateness.quantile(0.5) ?? 0) < 20);
});
