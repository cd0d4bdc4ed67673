/**
 * From samples to the answer: per-step figures (exact counter differences over each step's
 * measured window), the knee (first step whose pod lag p99 passes the threshold), the breaking
 * point (first step whose connection attempts fail), least-squares per-user costs, and whether the
 * generator could be trusted at all. Pure functions: the report, the live page and the tests share them.
 */
import { Histogram, LATENCY_BUCKETS_MS, leastSquares, mean, promHistogramQuantile, promHistogramShareAbove, round, type LinearFit } from "./stats.ts";
import type { Fits, LoadtestOptions, PodSample, RunReport, Sample, StepResult, StepWindow, Verdict } from "./types.ts";

export const PACKETS_PER_USER_S = 25;
export const PER_USER_CPU_TARGET_MS = 0.5;
export const USERS_TARGET = 1000;
/** A step is not trusted when a saturation reason shows in more than this share of its samples. */
const SATURATED_SHARE = 0.2;

export interface PodStep {
  podId: string;
  sessions: number;
  cpuCores: number | null;
  cpuMsPerS: number | null;
  elu: number | null;
  lagP99Ms: number | null;
  lagShareAbove: number | null;
  rssMB: number | null;
  heapUsedMB: number | null;
  udpInPerS: number | null;
  udpDroppedPerS: number | null;
  wsClientOutPerS: number | null;
  wsAppInPerS: number | null;
  wsAppOutPerS: number | null;
  droppedMessages: number;
  transcriptionErrors: number;
  lagP99GaugeMs: number | null;
  lagMaxSampleMs: number | null;
}

export type StepResultWithPods = StepResult & { perPod: PodStep[] };

type AnalysisOpts = Pick<LoadtestOptions, "lagThresholdMs" | "failThreshold" | "settleS"> & { latencyThresholdMs?: number };

/** The samples a step's figures come from: the hold after settling, else the whole hold, else everything. */
export function stepSamples(samples: readonly Sample[], w: StepWindow, settleS: number): Sample[] {
  const end = w.endT ?? Infinity;
  if (w.holdStartT !== null) {
    const settled = samples.filter((s) => s.t >= w.holdStartT! + settleS * 1000 && s.t <= end);
    if (settled.length >= 2) return settled;
    const hold = samples.filter((s) => s.t >= w.holdStartT! && s.t <= end);
    if (hold.length >= 2) return hold;
  }
  return samples.filter((s) => s.t >= w.rampStartT && s.t <= end);
}

const delta = (a: number | null | undefined, b: number | null | undefined) => (a == null || b == null ? null : b - a);

function bucketDelta(first: PodSample, last: PodSample): { le: number; count: number }[] {
  const before = new Map(first.lagBuckets.map((b) => [b.le, b.count]));
  return last.lagBuckets.map((b) => ({ le: b.le, count: Math.max(0, b.count - (before.get(b.le) ?? 0)) }));
}

function podStep(podId: string, win: Sample[], thresholdMs: number): PodStep | null {
  const series = win.map((s) => s.pods.find((p) => p.podId === podId && p.ok)).filter((p): p is PodSample => !!p);
  if (series.length === 0) return null;
  const first = series[0]!;
  const last = series[series.length - 1]!;
  const tFirst = win.find((s) => s.pods.some((p) => p === first))!.t;
  const tLast = win.find((s) => s.pods.some((p) => p === last))!.t;
  const dt = (tLast - tFirst) / 1000;
  const rate = (a: number, b: number) => (dt > 0 ? (b - a) / dt : null);
  const cpu = dt > 0 ? delta(first.counters.cpuSeconds, last.counters.cpuSeconds) : null;
  const cpuCores = cpu === null ? mean(series.map((p) => p.cpuCores).filter((c): c is number => c !== null)) : cpu / dt;
  const buckets = bucketDelta(first, last);
  return {
    podId,
    sessions: mean(series.map((p) => p.sessions)) ?? 0,
    cpuCores,
    cpuMsPerS: cpuCores === null ? null : cpuCores * 1000,
    elu: mean(series.map((p) => p.elu)),
    lagP99Ms: promHistogramQuantile(buckets, 0.99),
    lagShareAbove: promHistogramShareAbove(buckets, thresholdMs),
    rssMB: mean(series.map((p) => p.rssMB)),
    heapUsedMB: mean(series.map((p) => p.heapUsedMB)),
    udpInPerS: rate(first.counters.udpReceived, last.counters.udpReceived),
    udpDroppedPerS: rate(first.counters.udpDropped, last.counters.udpDropped),
    wsClientOutPerS: rate(first.counters.wsClientOut, last.counters.wsClientOut),
    wsAppInPerS: rate(first.counters.wsAppIn, last.counters.wsAppIn),
    wsAppOutPerS: rate(first.counters.wsAppOut, last.counters.wsAppOut),
    droppedMessages: last.counters.droppedMessages - first.counters.droppedMessages,
    transcriptionErrors: last.counters.transcriptionErrors - first.counters.transcriptionErrors,
    lagP99GaugeMs: last.lagP99Ms,
    lagMaxSampleMs: Math.max(...series.map((p) => p.lagMs)),
  };
}

function mergedLatency(win: Sample[], key: keyof Sample["gen"]["latency"]): Histogram {
  const h = new Histogram(LATENCY_BUCKETS_MS);
  for (const s of win) h.merge(s.gen.latency[key].counts, s.gen.latency[key].max);
  return h;
}

/**
 * Failure kinds that no amount of capacity explains: the target refused the user or the app as
 * such (bad token, unknown app, wrong API key…), so the target is not set up for this run.
 */
export function isSetupFailure(kind: string): boolean {
  return /^(reconnect_)?(route|upgrade|app_start)_(400|401|403|404|422)(_|$)/.test(kind);
}

/** Figures for one step from the samples (all samples of the run; the window picks its own). */
export function computeStep(all: readonly Sample[], w: StepWindow, o: AnalysisOpts): StepResultWithPods {
  const win = stepSamples(all, w, o.settleS);
  const podIds = [...new Set(win.flatMap((s) => s.pods.map((p) => p.podId)))].sort();
  const perPod = podIds.map((id) => podStep(id, win, o.lagThresholdMs)).filter((p): p is PodStep => !!p);
  // The busiest pod speaks for "one pod".
  const busiest = [...perPod].sort((a, b) => b.sessions - a.sessions || (b.cpuCores ?? 0) - (a.cpuCores ?? 0))[0];
  const first = win[0];
  const last = win[win.length - 1];
  const dt = first && last ? (last.t - first.t) / 1000 : 0;
  // Connection attempts and failures count over the whole step (ramp included): that is when users connect.
  const stepAll = all.filter((s) => s.t >= w.rampStartT && s.t <= (w.endT ?? Infinity));
  const before = [...all].reverse().find((s) => s.t < w.rampStartT) ?? stepAll[0];
  const after = stepAll[stepAll.length - 1];
  const attempts = before && after ? after.gen.attempts - before.gen.attempts : 0;
  const failures = before && after ? after.gen.failures - before.gen.failures : 0;
  const failuresByKind: Record<string, number> = {};
  if (before && after) {
    for (const [k, v] of Object.entries(after.gen.failuresByKind)) {
      const d = v - (before.gen.failuresByKind[k] ?? 0);
      if (d > 0) failuresByKind[k] = d;
    }
  }
  const running = mean(win.map((s) => s.gen.running)) ?? 0;
  const lat = {
    audioToApp: mergedLatency(win, "audioToApp"),
    audioToPhone: mergedLatency(win, "audioToPhone"),
    appToPhone: mergedLatency(win, "appToPhone"),
    sdk: mergedLatency(win, "sdkAppToPhone"),
  };
  const packetsSent = first && last && dt > 0 ? (last.gen.packetsSent - first.gen.packetsSent) / dt : null;
  const expected = running * PACKETS_PER_USER_S;

  // Saturation: a reason present in more than SATURATED_SHARE of the samples, plus audio not sent.
  const reasonCount = new Map<string, { n: number; text: string }>();
  for (const s of win) {
    for (const r of s.saturation) {
      const key = r.split(":")[0]!;
      const e = reasonCount.get(key) ?? { n: 0, text: r };
      e.n++;
      e.text = r;
      reasonCount.set(key, e);
    }
  }
  const saturation = [...reasonCount.values()].filter((e) => e.n / Math.max(1, win.length) > SATURATED_SHARE).map((e) => e.text);
  if (packetsSent !== null && expected > 0 && packetsSent < expected * 0.95) {
    saturation.push(`audio: the generator sent ${Math.round((100 * packetsSent) / expected)}% of the audio due`);
  }
  // Nothing ran and nothing failed: the generator did not drive this step at all.
  if (w.users > 0 && running < 1 && failures === 0) saturation.push("no-load: no phone was running in this step");

  const auxKeys = [...new Set(win.flatMap((s) => Object.keys(s.aux)))];
  const auxCpu: Record<string, number | null> = {};
  for (const k of auxKeys) auxCpu[k] = round(mean(win.map((s) => s.aux[k]).filter((v): v is number => typeof v === "number")), 3);

  const lagP99 = perPod.length ? Math.max(...perPod.map((p) => p.lagP99Ms ?? 0)) : null;
  const failureRate = attempts > 0 ? failures / attempts : 0;
  const transcripts = first && last && dt > 0 ? (last.gen.transcriptsAtApp - first.gen.transcriptsAtApp) / dt : null;
  const displays = first && last && dt > 0 ? (last.gen.displaysAtPhone - first.gen.displaysAtPhone) / dt : null;
  const podsDown = win.some((s) => s.pods.some((p) => !p.ok));
  const overLag = w.users > 0 && lagP99 !== null && lagP99 > o.lagThresholdMs;
  const e2eP95 = lat.audioToPhone.quantile(0.95);
  const overLatency = w.users > 0 && o.latencyThresholdMs !== undefined && e2eP95 !== null && lat.audioToPhone.n >= 20 && e2eP95 > o.latencyThresholdMs;
  return {
    index: w.index,
    users: w.users,
    usersRunning: round(running, 1) ?? 0,
    podSessionsMax: round(busiest?.sessions ?? 0, 1) ?? 0,
    podSessionsTotal: round(perPod.reduce((a, p) => a + p.sessions, 0), 1) ?? 0,
    windowS: round(dt, 1) ?? 0,
    samples: win.length,
    podCpuCores: round(busiest?.cpuCores, 3),
    podCpuMsPerUserS: busiest && busiest.cpuMsPerS !== null && busiest.sessions > 0 ? round(busiest.cpuMsPerS / busiest.sessions, 3) : null,
    elu: round(busiest?.elu, 3),
    lagP99Ms: round(lagP99, 1),
    lagShareAboveThreshold: round(perPod.length ? Math.max(...perPod.map((p) => p.lagShareAbove ?? 0)) : null, 4),
    lagMaxSampleMs: round(perPod.length ? Math.max(...perPod.map((p) => p.lagMaxSampleMs ?? 0)) : null, 1),
    lagP99GaugeMs: round(busiest?.lagP99GaugeMs, 1),
    rssMB: round(busiest?.rssMB, 1),
    heapUsedMB: round(busiest?.heapUsedMB, 1),
    udpInPerS: round(sum(perPod.map((p) => p.udpInPerS)), 1),
    udpDroppedPerS: round(sum(perPod.map((p) => p.udpDroppedPerS)), 2),
    wsClientOutPerS: round(sum(perPod.map((p) => p.wsClientOutPerS)), 1),
    wsAppInPerS: round(sum(perPod.map((p) => p.wsAppInPerS)), 1),
    wsAppOutPerS: round(sum(perPod.map((p) => p.wsAppOutPerS)), 1),
    droppedMessages: perPod.reduce((a, p) => a + p.droppedMessages, 0),
    transcriptionErrors: perPod.reduce((a, p) => a + p.transcriptionErrors, 0),
    attempts,
    failures,
    failureRate: round(failureRate, 4) ?? 0,
    failuresByKind,
    setupFailures: Object.entries(failuresByKind).reduce((a, [k, v]) => a + (isSetupFailure(k) ? v : 0), 0),
    disconnects: before && after ? after.gen.disconnects - before.gen.disconnects : 0,
    latency: {
      audioToAppP50: round(lat.audioToApp.quantile(0.5), 1),
      audioToAppP95: round(lat.audioToApp.quantile(0.95), 1),
      audioToPhoneP50: round(lat.audioToPhone.quantile(0.5), 1),
      audioToPhoneP95: round(lat.audioToPhone.quantile(0.95), 1),
      audioToPhoneP99: round(lat.audioToPhone.quantile(0.99), 1),
      appToPhoneP50: round(lat.appToPhone.quantile(0.5), 1),
      appToPhoneP95: round(lat.appToPhone.quantile(0.95), 1),
      sdkAppToPhoneP50: round(lat.sdk.quantile(0.5), 1),
      n: lat.audioToPhone.n,
    },
    transcriptsPerS: round(transcripts, 1),
    displaysPerS: round(displays, 1),
    packetsPerSExpected: Math.round(expected),
    packetsPerSSent: round(packetsSent, 0),
    generatorCpuMax: round(maxOf(win.map((s) => maxOf(s.gen.workerCpuCores))), 3),
    generatorLagP99Max: round(maxOf(win.map((s) => maxOf(s.gen.workerLagP99Ms))), 1),
    sendLateP99Max: round(maxOf(win.map((s) => s.gen.sendLateP99Ms)), 1),
    hostBusy: round(mean(win.map((s) => s.hostBusy).filter((v): v is number => v !== null)), 3),
    auxCpu,
    saturation,
    trusted: saturation.length === 0,
    loadDelivered: saturation.every((r) => /^(host|driver-lag):/.test(r)),
    overThreshold: overLag || overLatency,
    overLag,
    overLatency,
    broken: w.users > 0 && ((attempts > 0 && failureRate > o.failThreshold) || podsDown),
    perPod,
  };
}

function sum(vs: (number | null)[]): number | null {
  const xs = vs.filter((v): v is number => v !== null);
  return xs.length ? xs.reduce((a, b) => a + b, 0) : null;
}
function maxOf(vs: readonly (number | null)[]): number | null {
  const xs = vs.filter((v): v is number => v !== null && Number.isFinite(v));
  return xs.length ? Math.max(...xs) : null;
}

/**
 * Whether a step prices each user: trusted, or the generator delivered the load and only the machine
 * was busy while the pod's loop still had room (a starved pod does less work than its load needs,
 * so its CPU seconds would understate the cost; lag is never taken from such a step).
 */
export function pricesUsers(s: StepResult): boolean {
  return s.trusted || (s.loadDelivered && s.elu !== null && s.elu < 0.9);
}

/** Per-user costs: one point per (step, pod), x = that pod's sessions, over the steps that price users. */
export function fitCosts(steps: readonly StepResultWithPods[]): Fits {
  const trusted = steps.filter(pricesUsers);
  const pts = (f: (p: PodStep) => number | null): [number, number][] =>
    trusted.flatMap((s) => s.perPod.map((p): [number, number] | null => (f(p) === null ? null : [p.sessions, f(p)!])).filter((x): x is [number, number] => x !== null));
  return {
    cpuMsPerS: leastSquares(pts((p) => p.cpuMsPerS)),
    rssMB: leastSquares(pts((p) => p.rssMB)),
    heapMB: leastSquares(pts((p) => p.heapUsedMB)),
    elu: leastSquares(pts((p) => p.elu)),
  };
}

const fmt = (v: number | null | undefined, d = 1) => (v === null || v === undefined || !Number.isFinite(v) ? "?" : v.toFixed(d));

function predict(fit: LinearFit | null, y: number): number | null {
  if (!fit || !(fit.slope > 0)) return null;
  const x = (y - fit.intercept) / fit.slope;
  return x > 0 ? Math.floor(x) : null;
}

/** The knee, the breaking point, whether the generator held up, and the answer in one sentence. */
export function decide(steps: readonly StepResultWithPods[], fits: Fits, o: Pick<LoadtestOptions, "lagThresholdMs" | "features" | "failThreshold"> & { latencyThresholdMs?: number }): Verdict {
  // A step stopped before it had 3 measured samples says nothing; it is left out and named.
  const MIN_SAMPLES = 3;
  const unmeasured = steps.filter((s) => s.users > 0 && s.samples < MIN_SAMPLES);
  const loaded = steps.filter((s) => s.users > 0 && s.samples >= MIN_SAMPLES);
  // Refusals that are not load (unknown app, bad token) say the target is not set up for this run.
  const misSetup = loaded.find((s) => (s.setupFailures ?? 0) > 0 && (s.setupFailures ?? 0) / Math.max(1, s.attempts) > o.failThreshold) ?? null;
  // Only trusted steps speak about the pod. An untrusted step followed by a trusted one (the machine
  // was busy for a moment: another job, a compile) is set aside, since the later step carried more
  // users under fair conditions; untrusted steps after the last trusted one end what can be said.
  const lastTrustedAny = [...loaded].reverse().find((s) => s.trusted) ?? null;
  const saturatedStep = loaded.find((s) => !s.trusted && (!lastTrustedAny || s.index > lastTrustedAny.index)) ?? null;
  const setAside = loaded.filter((s) => !s.trusted && s !== saturatedStep && (!saturatedStep || s.index < saturatedStep.index));
  const judged = loaded.filter((s) => s.trusted);
  const knee = loaded.find((s) => s.overThreshold && !setAside.includes(s)) ?? null; // as seen, trusted or not
  const broken = judged.find((s) => s.broken) ?? null;
  const lastTrusted = lastTrustedAny;

  const cpu = fits.cpuMsPerS;
  const mem = fits.rssMB;
  const perUserCpuMs = cpu ? round(cpu.slope, 3) : null;
  const baselineCpu = cpu ? round(cpu.intercept, 1) : null;
  // RSS moves with the garbage collector: a per-user figure only when the fit explains the data.
  const memOk = !!mem && mem.slope > 0 && mem.r2 >= 0.5;
  const perUserMemKB = memOk ? round(mem!.slope * 1024, 1) : null;
  const baselineMem = memOk ? round(mem!.intercept, 1) : null;
  const at80 = predict(cpu, 800);
  const delivered = steps.filter((s) => pricesUsers(s) && s.podCpuCores !== null).sort((a, b) => a.podSessionsMax - b.podSessionsMax);
  const top = delivered[delivered.length - 1];
  const below = delivered[delivered.length - 2];
  const marginal = top && below && top.podSessionsMax > below.podSessionsMax ? ((top.podCpuCores! - below.podCpuCores!) * 1000) / (top.podSessionsMax - below.podSessionsMax) : null;
  const marginalAt80 = top && marginal && marginal > 0 ? Math.floor(top.podSessionsMax + (800 - top.podCpuCores! * 1000) / marginal) : null;
  const at100 = predict(cpu, 1000);
  const what = describeLoad(o.features);
  const costs =
    perUserCpuMs !== null
      ? `each user costs ${fmt(perUserCpuMs, 2)} ms of pod CPU per second${perUserMemKB !== null ? ` and ${fmt(perUserMemKB, 0)} KB of memory` : ""} over a baseline of ${fmt(baselineCpu, 0)} ms/s${baselineMem !== null ? ` and ${fmt(baselineMem, 0)} MB` : ""}`
      : null;
  const prediction = at80 !== null ? `, which predicts about ${at80} users per pod at 80% of one core (${at100} at a full core)` : "";

  let kind: Verdict["kind"];
  let capacityUsers: number | null = null;
  let answer: string;
  const th = o.lagThresholdMs;
  // Where the pod stopped coping: lag over the threshold, or connections failing, whichever came first.
  const limit = judged.find((s) => s.overThreshold || s.broken) ?? null;
  const failed = (s: StepResultWithPods) => `connections failed at ${Math.round(s.users)} users (${(s.failureRate * 100).toFixed(1)}% of attempts)`;
  if (misSetup) {
    kind = "setup";
    const kinds = Object.entries(misSetup.failuresByKind).filter(([k]) => isSetupFailure(k)).map(([k, v]) => `${k} ×${v}`).join(", ");
    answer =
      `No capacity is reported: at ${Math.round(misSetup.users)} users ${misSetup.setupFailures} of ${misSetup.attempts} connection attempts were refused for reasons that are not load (${kinds}), ` +
      `so the target is not set up for this run: its directory must hold the load-test users and apps (run against the load test's own cluster, or point MONGODB_URL / REDIS_URL at the target's store so the driver seeds it, or seed it with \`npm run seed\`), and --jwt-secret must be the cluster's.`;
  } else if (limit && (!saturatedStep || limit.index < saturatedStep.index)) {
    kind = "capacity";
    const prev = [...judged].reverse().find((s) => s.index < limit.index) ?? null;
    capacityUsers = prev ? Math.round(prev.podSessionsMax) : 0;
    const at = Math.round(limit.podSessionsMax || limit.users);
    answer = prev
      ? `One pod handles ${capacityUsers} concurrent users (${what}) before degradation: event-loop lag p99 stayed ≤ ${th} ms up to ${capacityUsers} users` +
        (limit.overLag
          ? ` and reached ${fmt(limit.lagP99Ms, 0)} ms at ${at}`
          : limit.overLatency
            ? `, but at ${at} users audio → display latency p95 reached ${fmt(limit.latency.audioToPhoneP95, 0)} ms (> ${o.latencyThresholdMs} ms; lag p99 ${fmt(limit.lagP99Ms, 0)} ms, event-loop utilisation ${fmt(limit.elu, 2)})`
            : `, and then ${failed(limit)}`) +
        (costs ? `; ${costs}${prediction}.` : ".")
      : `One pod degrades below ${Math.round(limit.users)} users (${what}): at the first step ` +
        (limit.overLag
          ? `event-loop lag p99 was already ${fmt(limit.lagP99Ms, 0)} ms (> ${th} ms)`
          : limit.overLatency
            ? `audio → display latency p95 was already ${fmt(limit.latency.audioToPhoneP95, 0)} ms (> ${o.latencyThresholdMs} ms)`
            : failed(limit)) +
        (costs ? `; ${costs}.` : ".");
  } else if (saturatedStep) {
    kind = "saturated";
    const n = Math.round(saturatedStep.usersRunning || saturatedStep.users);
    answer =
      (saturatedStep.loadDelivered
        ? `No capacity is reported: this machine ran out of CPU at ${n} users (${saturatedStep.saturation.join("; ")}), so the pod's lag there says nothing about the pod`
        : `No capacity is reported: the load generator could not drive ${n} users (${saturatedStep.saturation.join("; ")}), so the pod was not what ran out`) +
      (lastTrusted ? `; up to ${Math.round(lastTrusted.podSessionsMax)} users the pod's lag p99 stayed ≤ ${th} ms` : "") +
      (costs ? ` and ${costs}${prediction}.` : ".");
  } else if (lastTrusted) {
    kind = "above";
    capacityUsers = Math.round(lastTrusted.podSessionsMax);
    const worst = Math.max(...judged.map((s) => s.lagP99Ms ?? 0));
    answer = `One pod held all ${capacityUsers} users tested (${what}) with event-loop lag p99 ≤ ${th} ms (worst ${fmt(worst, 0)} ms), so its capacity is above ${capacityUsers}` + (costs ? `; ${costs}${prediction}.` : ".");
  } else {
    kind = "none";
    answer = "No step was measured, so there is no answer.";
  }
  if (unmeasured.length) answer += ` Not measured (stopped before ${MIN_SAMPLES} samples): ${unmeasured.map((s) => `${Math.round(s.users)} users`).join(", ")}.`;
  if (setAside.length && kind !== "none" && kind !== "setup") {
    answer += ` Set aside (the generator or machine was saturated there, a later step was not): ${setAside.map((s) => `${Math.round(s.users)} users (${s.saturation.join("; ")})`).join(", ")}.`;
  }
  if (broken && kind !== "setup") answer += ` Connections started failing at ${Math.round(broken.users)} users (${(broken.failureRate * 100).toFixed(1)}% of attempts${Object.keys(broken.failuresByKind).length ? `: ${Object.entries(broken.failuresByKind).map(([k, v]) => `${k} ×${v}`).join(", ")}` : ""}).`;

  return {
    kind,
    capacityUsers,
    kneeStep: knee?.index ?? null,
    kneeUsers: knee ? Math.round(knee.podSessionsMax) : null,
    kneeLagP99Ms: knee?.lagP99Ms ?? null,
    breakingStep: broken?.index ?? null,
    breakingUsers: broken ? broken.users : null,
    saturatedAtUsers: saturatedStep ? saturatedStep.users : null,
    saturationReasons: saturatedStep?.saturation ?? [],
    lastTrustedUsers: lastTrusted ? Math.round(lastTrusted.podSessionsMax) : null,
    perUserCpuMs,
    baselineCpuMsPerS: baselineCpu,
    perUserMemKB,
    baselineMemMB: baselineMem,
    predictedUsersAt80PctCore: at80,
    marginalCpuMs: round(marginal, 3),
    marginalPredictedUsersAt80PctCore: marginalAt80 !== null && marginalAt80 > 0 ? marginalAt80 : null,
    predictedUsersAtFullCore: at100,
    answer,
    targets: {
      perUserCpuMsTarget: PER_USER_CPU_TARGET_MS,
      perUserCpuMet: perUserCpuMs === null || kind === "setup" ? null : perUserCpuMs <= PER_USER_CPU_TARGET_MS,
      usersTarget: USERS_TARGET,
      usersMet: kind === "capacity" ? (capacityUsers ?? 0) >= USERS_TARGET : kind === "above" && (capacityUsers ?? 0) >= USERS_TARGET ? true : null,
    },
  };
}

export function describeLoad(features: readonly string[]): string {
  const parts = ["25 audio packets/s each"];
  if (features.includes("transcription")) parts.push("transcription");
  parts.push("one mini app");
  if (features.includes("display")) parts.push("a display per transcript");
  if (features.includes("audio")) parts.push("audio chunks to the app");
  return parts.join(", ");
}

/**
 * A stored run analysed again (new thresholds, or a newer analysis): steps, fits and verdict are
 * recomputed from its samples and step windows; everything measured stays as it was.
 */
export function reanalyze(r: RunReport, over: Partial<Pick<LoadtestOptions, "lagThresholdMs" | "latencyThresholdMs" | "failThreshold" | "settleS">> = {}): RunReport {
  const options = { ...r.options, ...over };
  // samples.json writes the open bucket's le as "+Inf" (older files: null).
  for (const s of r.samples) for (const p of s.pods) for (const b of p.lagBuckets) if (typeof b.le !== "number" || b.le === null) b.le = Infinity;
  const steps = r.windows.filter((w) => w.holdStartT !== null && w.endT !== null).map((w) => computeStep(r.samples, w, options));
  const fits = fitCosts(steps);
  return { ...r, options, steps: steps.map(({ perPod: _p, ...s }) => s), fits, verdict: decide(steps, fits, options) };
}
