/**
 * The load-test driver: sets up the target (its own cluster, or a given gateway), forks the
 * generator workers, starts the real-SDK app for the sample users, seeds users and apps, samples
 * every pod and every generator process each interval, steps the user count through the plan, and
 * turns it all into a report. The live page (web.ts) and the CLI (cli.ts) both drive it.
 */
import { fork, type ChildProcess } from "node:child_process";
import { EventEmitter } from "node:events";
import { mkdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { monitorEventLoopDelay, performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { directoryFromEnv, seedDirectory, type SeedFile } from "@mentra-cluster/directory";
import { computeStep, decide, fitCosts, type StepResultWithPods } from "./analysis.ts";
import { startOwnCluster, type OwnCluster } from "./cluster.ts";
import { PodMonitor } from "./monitor.ts";
import { adoptChild, CpuMeter, HostMeter } from "./proc.ts";
import { renderReportHtml } from "./report.ts";
import { startSdkApp, type SdkAppProcess } from "./sdkApp.ts";
import { Histogram, LATENCY_BUCKETS_MS, round } from "./stats.ts";
import type { GeneratorSample, LoadtestOptions, RunReport, Sample, StepWindow, WorkerStats } from "./types.ts";
import type { WorkerCommand, WorkerEvent, WorkerInit } from "./worker.ts";

const HERE = path.dirname(fileURLToPath(import.meta.url));

export type DriverState = "setup" | "idle" | "running" | "stopping" | "done" | "error";

export interface RunResult {
  report: RunReport;
  htmlPath: string;
  jsonPath: string;
}

interface WorkerHandle {
  index: number;
  proc: ChildProcess;
  appPublicUrl: string;
  last: WorkerStats | null;
  /** Latency histograms and SDK displays received since the last sample. */
  pending: { audioToApp: Histogram; appToPhone: Histogram; audioToPhone: Histogram; sdk: WorkerStats["sdkDisplays"] };
  stopped: Promise<void>;
  exited: boolean;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Every generator's share of users 0…n-1: user i belongs to worker i mod W. */
export function shareOf(n: number, worker: number, workers: number): number {
  return n > worker ? Math.floor((n - worker - 1) / workers) + 1 : 0;
}

/** Indices of the real-SDK users: spread evenly over the plan's users. */
export function sdkIndices(maxUsers: number, sdkUsers: number): number[] {
  const k = Math.min(Math.max(0, sdkUsers), maxUsers);
  if (k === 0) return [];
  const stride = maxUsers / k;
  return Array.from({ length: k }, (_, j) => Math.floor(j * stride));
}

export class Driver extends EventEmitter<{ sample: [Sample]; state: [DriverState]; step: [StepResultWithPods]; log: [string] }> {
  state: DriverState = "setup";
  samples: Sample[] = [];
  windows: StepWindow[] = [];
  steps: StepResultWithPods[] = [];
  cluster: OwnCluster | null = null;
  gatewayUrl = "";
  lastResult: RunResult | null = null;
  lastError: string | null = null;
  manualTarget: number | null = null;
  runStartedAt = 0;
  private workers: WorkerHandle[] = [];
  private sdkApp: SdkAppProcess | null = null;
  private monitor: PodMonitor | null = null;
  private readonly cpu = new CpuMeter();
  private readonly host = new HostMeter();
  private readonly lag = monitorEventLoopDelay({ resolution: 10 });
  private lastCpu = process.cpuUsage();
  private lastCpuAt = performance.now();
  private seq = 0;
  private sampling = false;
  private samplingDone: Promise<void> = Promise.resolve();
  private target = 0;
  private stopRequested = false;
  private planDone: Promise<RunResult | null> | null = null;
  private currentStep: number | null = null;
  private phase: Sample["phase"] = "idle";
  private readonly sdkHist = new Histogram();
  private sdkCpu: number | null = null;
  readonly sdkIdx: number[];

  constructor(readonly o: LoadtestOptions) {
    super();
    this.sdkIdx = sdkIndices(o.users, o.sdkUsers);
  }

  get workerCount(): number {
    return this.workers.length;
  }

  private setState(s: DriverState): void {
    this.state = s;
    this.emit("state", s);
  }

  private log(msg: string): void {
    this.emit("log", msg);
  }

  // ---------------------------------------------------------------- setup

  async setup(): Promise<void> {
    const o = this.o;
    try {
      if (o.gateway) {
        this.gatewayUrl = o.gateway.replace(/\/+$/, "");
        this.log(`target: gateway ${this.gatewayUrl}`);
      } else {
        this.log(`starting our own cluster: Redis, gateway, ${o.pods} pod process(es)${o.transcription === "stream" ? ", STT emulator" : ""}`);
        this.cluster = await startOwnCluster({ pods: o.pods, transcription: o.transcription, jwtSecret: o.jwtSecret, adminToken: o.adminToken, podLagSampleMs: o.podLagSampleMs, logLevel: o.logLevel, sttFrameMs: o.sttFrameMs });
        this.gatewayUrl = this.cluster.gatewayUrl;
        this.log(`cluster up: gateway ${this.gatewayUrl}; ${this.cluster.pods.map((p) => `${p.podId} ${p.httpUrl} (pid ${p.pid})`).join(", ")}`);
      }
      const nWorkers = o.workers > 0 ? o.workers : Math.max(1, Math.min(os.cpus().length, Math.ceil(o.users / 500)));
      const sdkPackage = `${o.appPrefix}.sdk`;
      const [workers, sdk] = await Promise.all([
        Promise.all(Array.from({ length: nWorkers }, (_, k) => this.forkWorker(k, nWorkers, sdkPackage))),
        this.sdkIdx.length > 0 ? startSdkApp({ packageName: sdkPackage, apiKey: o.appApiKey, features: o.features }) : Promise.resolve(null),
      ]);
      this.workers = workers;
      this.sdkApp = sdk;
      this.log(`${nWorkers} generator process(es); ${this.sdkIdx.length} user(s) on the real @mentra/sdk app${sdk ? ` (${sdk.publicUrl})` : ""}`);
      if (o.seed || this.cluster) await this.seed(sdkPackage);
      else this.log("not seeding (--no-seed): the users and apps must already be in the cluster's directory");
      this.monitor = new PodMonitor({
        pods: this.cluster ? this.cluster.pods.map((p) => ({ podId: p.podId, baseUrl: p.httpUrl })) : null,
        gatewayUrl: this.gatewayUrl,
        adminToken: o.adminToken,
        timeoutMs: Math.max(2000, o.sampleIntervalMs * 2),
      });
      await this.monitor.discover(true);
      if (this.monitor.pods.length === 0) throw new Error("no pods to watch (the gateway lists none)");
      this.lag.enable();
      this.startSampling();
      this.setState("idle");
    } catch (err) {
      this.lastError = (err as Error).message;
      this.setState("error");
      await this.teardown();
      throw err;
    }
  }

  private async forkWorker(k: number, n: number, sdkPackage: string): Promise<WorkerHandle> {
    const o = this.o;
    const proc = fork(path.join(HERE, "worker.ts"), [], { execArgv: ["--import", "tsx"], stdio: ["ignore", "inherit", "inherit", "ipc"], serialization: "advanced", detached: true });
    adoptChild(proc);
    const init: WorkerInit = {
      type: "init",
      worker: k,
      workers: n,
      gatewayUrl: this.gatewayUrl,
      jwtSecret: o.jwtSecret,
      features: o.features,
      wavs: o.wavs,
      leanPackage: `${o.appPrefix}.lean.w${k}`,
      sdkPackage,
      apiKey: o.appApiKey,
      prefix: o.prefix,
      domain: o.domain,
      sdkIndices: this.sdkIdx,
      statsIntervalMs: o.sampleIntervalMs,
    };
    const h: WorkerHandle = {
      index: k,
      proc,
      appPublicUrl: "",
      last: null,
      pending: { audioToApp: new Histogram(), appToPhone: new Histogram(), audioToPhone: new Histogram(), sdk: [] },
      stopped: new Promise((r) => proc.once("exit", () => r())),
      exited: false,
    };
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`generator ${k} did not start within 30 s`)), 30_000);
      proc.on("message", (m: WorkerEvent) => {
        if (m.type === "ready") {
          clearTimeout(t);
          h.appPublicUrl = m.appPublicUrl;
          resolve();
        } else if (m.type === "fatal") {
          clearTimeout(t);
          reject(new Error(`generator ${k}: ${m.message}`));
        } else if (m.type === "stats") {
          h.last = m;
          h.pending.audioToApp.merge(m.latency.audioToApp.counts, m.latency.audioToApp.max);
          h.pending.appToPhone.merge(m.latency.appToPhone.counts, m.latency.appToPhone.max);
          h.pending.audioToPhone.merge(m.latency.audioToPhone.counts, m.latency.audioToPhone.max);
          h.pending.sdk.push(...m.sdkDisplays);
        }
      });
      proc.once("exit", (code) => {
        clearTimeout(t);
        reject(new Error(`generator ${k} exited (${code})`));
      });
      this.send(h, init);
    });
    proc.on("exit", (code) => {
      h.exited = true;
      if (this.state !== "done" && this.state !== "stopping" && !this.stopRequested && code !== 0) this.log(`generator ${k} exited unexpectedly (${code})`);
    });
    return h;
  }

  private send(h: WorkerHandle, m: WorkerCommand): void {
    if (h.proc.connected) h.proc.send(m);
  }

  /** Test users and apps into the directory the pods use (Redis for our own cluster; else the env's store). */
  private async seed(sdkPackage: string): Promise<void> {
    const o = this.o;
    const env = this.cluster ? { REDIS_URL: this.cluster.redisUrl, REDIS_PREFIX: "loadtest:" } : process.env;
    if (!this.cluster && !env.MONGODB_URL && !env.REDIS_URL) {
      this.log("not seeding: set MONGODB_URL or REDIS_URL to the target cluster's directory (or seed it with `npm run seed`)");
      return;
    }
    const sdkSet = new Set(this.sdkIdx);
    const seed: SeedFile = {
      apps: [
        ...this.workers.map((w) => ({ packageName: `${o.appPrefix}.lean.w${w.index}`, name: `Load test (lean) ${w.index}`, publicUrl: w.appPublicUrl, apiKey: o.appApiKey })),
        ...(this.sdkApp ? [{ packageName: sdkPackage, name: "Load test (@mentra/sdk)", publicUrl: this.sdkApp.publicUrl, apiKey: o.appApiKey }] : []),
      ],
      users: Array.from({ length: o.users }, (_, i) => ({
        id: `${o.prefix}-${i}@${o.domain}`,
        installedApps: [sdkSet.has(i) ? sdkPackage : `${o.appPrefix}.lean.w${i % this.workers.length}`],
      })),
    };
    const dir = directoryFromEnv(env, { refreshMs: 0 });
    try {
      await dir.ready();
      const t0 = Date.now();
      const summary = await seedDirectory(dir, seed, { concurrency: 64 });
      this.log(`seeded ${summary.users} users and ${summary.apps.length} apps in ${Date.now() - t0} ms`);
    } finally {
      await dir.close();
    }
    // App changes reach the pods' caches over the bus within a second.
    await sleep(1000);
  }

  // ---------------------------------------------------------------- sampling

  private startSampling(): void {
    this.sampling = true;
    this.samplingDone = (async () => {
      let next = performance.now();
      while (this.sampling) {
        try {
          await this.sampleOnce();
        } catch (err) {
          this.log(`sampling failed: ${(err as Error).message}`);
        }
        next += this.o.sampleIntervalMs;
        const wait = next - performance.now();
        if (wait < 0) next = performance.now();
        await sleep(Math.max(0, wait));
      }
    })();
  }

  private async sampleOnce(): Promise<void> {
    const pods = await this.monitor!.poll();
    const now = Date.now();
    const perfNow = performance.now();
    const cpu = process.cpuUsage(this.lastCpu);
    const driverCpuCores = (cpu.user + cpu.system) / 1000 / Math.max(1, perfNow - this.lastCpuAt);
    this.lastCpu = process.cpuUsage();
    this.lastCpuAt = perfNow;
    const driverLagP99Ms = this.lag.count > 0 ? this.lag.percentile(99) / 1e6 : 0;
    this.lag.reset();
    const hostBusy = this.host.busy();

    const ws = this.workers.map((w) => w.last).filter((s): s is WorkerStats => !!s);
    const sumOf = (f: (s: WorkerStats) => number) => ws.reduce((a, s) => a + f(s), 0);
    const failuresByKind: Record<string, number> = {};
    for (const s of ws) for (const [k, v] of Object.entries(s.failures)) failuresByKind[k] = (failuresByKind[k] ?? 0) + v;
    const lat = { audioToApp: new Histogram(), appToPhone: new Histogram(), audioToPhone: new Histogram() };
    for (const w of this.workers) {
      lat.audioToApp.merge(w.pending.audioToApp.counts, w.pending.audioToApp.max);
      lat.appToPhone.merge(w.pending.appToPhone.counts, w.pending.appToPhone.max);
      lat.audioToPhone.merge(w.pending.audioToPhone.counts, w.pending.audioToPhone.max);
      w.pending.audioToApp.reset();
      w.pending.appToPhone.reset();
      w.pending.audioToPhone.reset();
      if (this.sdkApp) {
        for (const d of w.pending.sdk) {
          const at = this.sdkApp.receivedAt(d.userId, d.text, d.t);
          if (at !== null) this.sdkHist.add(d.t - at);
        }
      }
      w.pending.sdk = [];
    }
    const prev = this.samples[this.samples.length - 1];
    const packetsSent = sumOf((s) => s.packetsSent);
    const dt = prev ? (now - prev.t) / 1000 : 0;
    const gen: GeneratorSample = {
      target: this.target,
      running: sumOf((s) => s.running),
      connected: sumOf((s) => s.connected),
      connecting: sumOf((s) => s.connecting),
      attempts: sumOf((s) => s.attempts),
      failures: Object.values(failuresByKind).reduce((a, b) => a + b, 0),
      failuresByKind,
      disconnects: sumOf((s) => s.disconnects),
      reconnects: sumOf((s) => s.reconnects),
      udpFallbacks: sumOf((s) => s.udpFallbacks),
      packetsSent,
      packetsPerS: prev && dt > 0 ? Math.max(0, (packetsSent - prev.gen.packetsSent) / dt) : 0,
      packetsOffline: sumOf((s) => s.packetsOffline),
      packetsLateDropped: sumOf((s) => s.packetsLateDropped),
      sendLateP99Ms: ws.length ? Math.max(...ws.map((s) => s.sendLateP99Ms)) : 0,
      workerCpuCores: this.workers.map((w) => round(w.last?.cpuCores ?? 0, 3) ?? 0),
      workerLagP99Ms: this.workers.map((w) => round(w.last?.lagP99Ms ?? 0, 1) ?? 0),
      driverCpuCores: round(driverCpuCores, 3) ?? 0,
      driverLagP99Ms: round(driverLagP99Ms, 1) ?? 0,
      rssMB: round(sumOf((s) => s.rssMB), 1) ?? 0,
      transcriptsAtApp: sumOf((s) => s.transcriptsAtApp) + (this.sdkApp?.transcripts ?? 0),
      displaysAtPhone: sumOf((s) => s.displaysAtPhone),
      audioChunkBytesAtApp: sumOf((s) => s.audioChunkBytesAtApp),
      latency: {
        audioToApp: { counts: lat.audioToApp.counts, max: lat.audioToApp.max },
        appToPhone: { counts: lat.appToPhone.counts, max: lat.appToPhone.max },
        audioToPhone: { counts: lat.audioToPhone.counts, max: lat.audioToPhone.max },
        sdkAppToPhone: { counts: [...this.sdkHist.counts], max: this.sdkHist.max },
      },
      lat: {
        audioToPhoneP50: round(lat.audioToPhone.quantile(0.5), 1),
        audioToPhoneP95: round(lat.audioToPhone.quantile(0.95), 1),
        audioToAppP50: round(lat.audioToApp.quantile(0.5), 1),
        appToPhoneP50: round(lat.appToPhone.quantile(0.5), 1),
      },
    };
    this.sdkHist.reset();

    const aux: Record<string, number | null> = {};
    for (const p of this.cluster?.processes ?? []) if (!p.role.startsWith("pod-")) aux[p.role] = round(this.cpu.cores(p.pid), 3);
    if (this.sdkApp) aux["sdk-app"] = this.sdkCpu = round(this.cpu.cores(this.sdkApp.pid), 3);

    const o = this.o;
    const saturation: string[] = [];
    this.workers.forEach((w, k) => {
      if (w.exited && this.sampling) saturation.push(`generator-exit: generator process ${k} exited`);
      const s = w.last;
      if (!s) return;
      if (s.cpuCores >= o.generatorCpuLimit) saturation.push(`generator-cpu: generator process ${k} used ${s.cpuCores.toFixed(2)} cores (limit ${o.generatorCpuLimit})`);
      if (s.lagP99Ms > o.generatorLagLimitMs) saturation.push(`generator-lag: generator process ${k} had event-loop lag p99 ${s.lagP99Ms.toFixed(0)} ms (limit ${o.generatorLagLimitMs} ms)`);
    });
    if (driverLagP99Ms > o.generatorLagLimitMs * 2) saturation.push(`driver-lag: the driver's event-loop lag p99 was ${driverLagP99Ms.toFixed(0)} ms`);
    if (hostBusy !== null && hostBusy > o.hostBusyLimit) saturation.push(`host: the machine's ${this.host.cores} CPUs were ${(hostBusy * 100).toFixed(0)}% busy (limit ${(o.hostBusyLimit * 100).toFixed(0)}%)`);
    if (gen.sendLateP99Ms > 100) saturation.push(`audio-late: audio packets left up to ${gen.sendLateP99Ms.toFixed(0)} ms late (p99)`);

    const sample: Sample = {
      seq: ++this.seq,
      t: now,
      elapsedS: this.runStartedAt ? round((now - this.runStartedAt) / 1000, 1)! : 0,
      phase: this.phase,
      step: this.currentStep,
      gen,
      pods,
      hostBusy: round(hostBusy, 3),
      hostCores: this.host.cores,
      aux,
      saturation,
      sdk: { sessions: this.sdkApp?.sessions.size ?? 0, transcripts: this.sdkApp?.transcripts ?? 0, cpuCores: this.sdkCpu },
    };
    this.samples.push(sample);
    this.emit("sample", sample);
  }

  // ---------------------------------------------------------------- control

  /** Sets every generator's share of `n` users (they connect or hang up to match). */
  private setTarget(n: number): void {
    this.target = Math.max(0, Math.round(n));
    const W = this.workers.length;
    for (const w of this.workers) this.send(w, { type: "target", count: shareOf(this.target, w.index, W) });
  }

  get currentTarget(): number {
    return this.target;
  }

  get latest(): Sample | null {
    return this.samples[this.samples.length - 1] ?? null;
  }

  /** Starts a run through `steps` (default: the options' plan). Resolves when the run's report is written. */
  start(steps: number[] = this.o.steps): Promise<RunResult | null> {
    if (this.state !== "idle" && this.state !== "done") throw new Error(`cannot start while ${this.state}`);
    const maxUsers = this.o.users;
    const plan = steps.map((n) => Math.max(0, Math.min(maxUsers, Math.round(n)))).filter((n, i, a) => n > 0 && a.indexOf(n) === i);
    if (plan.length === 0) throw new Error(`no step within 1…${maxUsers} users (the users seeded for this run)`);
    this.resetRun();
    this.setState("running");
    this.planDone = this.runPlan(plan);
    return this.planDone;
  }

  /** Holds a given number of users until changed or stopped (the page's "set users"). */
  setManual(n: number): void {
    const users = Math.max(0, Math.min(this.o.users, Math.round(n)));
    if (this.state === "idle" || this.state === "done") {
      this.resetRun();
      this.setState("running");
      this.manualTarget = users;
      this.planDone = this.runManual();
      return;
    }
    if (this.state !== "running") throw new Error(`cannot set users while ${this.state}`);
    this.manualTarget = users;
  }

  private resetRun(): void {
    this.samples = this.latest ? [this.latest] : [];
    this.windows = [];
    this.steps = [];
    this.stopRequested = false;
    this.manualTarget = null;
    this.runStartedAt = Date.now();
    this.lastResult = null;
  }

  /** Ends the current run (ramps to zero) and writes its report. */
  async stop(): Promise<RunResult | null> {
    if (this.state !== "running") return this.lastResult;
    this.stopRequested = true;
    return this.planDone;
  }

  private stopping(): boolean {
    return this.stopRequested || !this.sampling;
  }

  private async waitS(s: number): Promise<boolean> {
    const end = Date.now() + s * 1000;
    while (Date.now() < end) {
      if (this.stopping() || this.manualTarget !== null) return false;
      await sleep(Math.min(200, end - Date.now()));
    }
    return true;
  }

  /** Ramp to `users` at the ramp rate; false when interrupted. */
  private async ramp(users: number): Promise<boolean> {
    let cur = this.target;
    if (users <= cur) {
      this.setTarget(users);
      return true;
    }
    let last = performance.now();
    while (cur < users) {
      if (this.stopping() || this.manualTarget !== null) return false;
      await sleep(100);
      const now = performance.now();
      cur = Math.min(users, cur + (this.o.rampPerS * (now - last)) / 1000);
      last = now;
      this.setTarget(Math.floor(cur));
    }
    this.setTarget(users);
    return true;
  }

  private async measureWindow(index: number, users: number, holdS: number, rampFirst: boolean): Promise<StepWindow | null> {
    const w: StepWindow = { index, users, rampStartT: Date.now(), holdStartT: null, endT: null };
    this.windows.push(w);
    this.currentStep = index;
    const manual = this.phase === "manual" || holdS >= 3600;
    this.phase = manual ? "manual" : "ramp";
    if (rampFirst && !(await this.ramp(users))) return this.closeWindow(w);
    // Stragglers: wait until (almost) everyone runs, or give up waiting and measure what there is.
    const waitEnd = Date.now() + this.o.holdWaitS * 1000;
    while (Date.now() < waitEnd && users > 0) {
      const running = this.latestRunning();
      if (running >= users * 0.99) break;
      if (this.stopping() || this.manualTarget !== null) return this.closeWindow(w);
      await sleep(200);
    }
    w.holdStartT = Date.now();
    this.phase = manual ? "manual" : "hold";
    await this.waitS(holdS);
    return this.closeWindow(w);
  }

  private latestRunning(): number {
    return this.workers.reduce((a, w) => a + (w.last?.running ?? 0), 0);
  }

  private closeWindow(w: StepWindow): StepWindow {
    w.endT = Date.now();
    if (w.holdStartT !== null) {
      const r = computeStep(this.samples, w, this.o);
      this.steps.push(r);
      this.emit("step", r);
    }
    return w;
  }

  private async runPlan(plan: number[]): Promise<RunResult | null> {
    try {
      // Let freshly started processes settle (JIT, connections), then an idle baseline: the pod's own cost with nobody on it.
      await this.waitS(Math.min(5, 2 * this.o.settleS));
      if (!this.stopping() && this.manualTarget === null) await this.measureWindow(0, 0, this.o.settleS + Math.max(2, this.o.holdS / 3), false);
      for (let i = 0; i < plan.length && !this.stopping(); i++) {
        if (this.manualTarget !== null) break;
        await this.measureWindow(i + 1, plan[i]!, this.o.holdS, true);
        const r = this.steps[this.steps.length - 1];
        if (r && r.index === i + 1 && r.broken && this.o.stopAtBreak) {
          this.log(`breaking point reached at ${plan[i]} users: not stepping further`);
          break;
        }
      }
      if (this.manualTarget !== null && !this.stopping()) return await this.runManual();
      return await this.finish();
    } catch (err) {
      this.lastError = (err as Error).message;
      this.log(`run failed: ${this.lastError}`);
      return await this.finish();
    }
  }

  /** Holds the page's user count as one step each, until stopped; a new count starts a new step. */
  private async runManual(): Promise<RunResult | null> {
    let index = this.windows.length;
    while (!this.stopping()) {
      const users = this.manualTarget ?? this.target;
      this.manualTarget = null;
      await this.measureWindow(index++, users, 3600 * 24, true);
    }
    return this.finish();
  }

  private async finish(): Promise<RunResult | null> {
    this.setState("stopping");
    this.phase = "stopping";
    this.currentStep = null;
    // One more sample so the last window has its end figures, then hang up every phone.
    await sleep(Math.min(1500, this.o.sampleIntervalMs));
    const result = this.writeReport();
    this.setTarget(0);
    this.lastResult = result;
    this.phase = "idle";
    this.setState("done");
    return result;
  }

  /** Builds the report from what was measured so far and writes report.html + samples.json. */
  buildReport(): RunReport {
    const o = this.o;
    const steps = this.steps;
    const fits = fitCosts(steps);
    const verdict = decide(steps, fits, o);
    const { jwtSecret: _j, adminToken: _a, appApiKey: _k, ...options } = o;
    const notes = [
      `Pod figures come from each pod's own /metrics (process_cpu_seconds_total, mentra_event_loop_delay_seconds, mentra_rss_bytes, …) scraped every ${o.sampleIntervalMs} ms; a step's figures are differences of the counters over its measured window (the hold, minus the first ${o.settleS} s).`,
      `Lag p99 per step is taken from the pod's lag histogram over the window (its samples, not the gauge's ${this.cluster ? `${o.podLagSampleMs} ms × 150` : "150-sample"} rolling window).`,
      `End-to-end latency: an interim transcript's audio end time (the pod's stream clock) → the mini app receiving it → the display (whose text carries a marker) at the phone; the pod throttles displays to one per 300 ms, so waiting behind that is part of the figure.`,
      `Per-user costs are least-squares fits, one point per pod and step (x = that pod's sessions, the idle baseline included), over the trusted steps and those where only the machine was busy while the pod's event loop still had room (ELU < 0.9); lag is only ever taken from trusted steps.`,
      `The generator is trusted in a step only if no generator process used ≥ ${o.generatorCpuLimit} cores or had lag p99 > ${o.generatorLagLimitMs} ms, the machine's CPUs were ≤ ${Math.round(o.hostBusyLimit * 100)}% busy, and ≥ 95% of the audio due was sent, in at least 80% of the step's samples.`,
    ];
    if (this.cluster) notes.push(`Own cluster: pods ran as separate processes (${this.cluster.pods.length}), with the gateway, Redis${this.cluster.sttUrl ? " and the STT emulator" : ""} as processes of their own on the same machine; the pods' admission caps were lifted so the run could pass the knee.`);
    if (this.lastError) notes.push(`The run ended early: ${this.lastError}`);
    return {
      version: 1,
      startedAt: new Date(this.runStartedAt).toISOString(),
      endedAt: new Date().toISOString(),
      options,
      environment: {
        host: os.hostname(),
        cpus: os.cpus().length,
        cpuModel: os.cpus()[0]?.model ?? "unknown",
        memGB: Math.round(os.totalmem() / 1024 ** 3),
        node: process.version,
        platform: `${os.platform()} ${os.release()}`,
        cluster: this.cluster ? "own" : "external",
        ...(this.cluster ? { podEnv: this.cluster.podEnv } : {}),
      },
      steps: steps.map(({ perPod: _p, ...s }) => s),
      windows: this.windows,
      fits,
      verdict,
      samples: this.samples.filter((s) => s.t >= this.runStartedAt - this.o.sampleIntervalMs),
      notes,
    };
  }

  private writeReport(): RunResult {
    const report = this.buildReport();
    const stamp = new Date(this.runStartedAt).toISOString().replace(/[:.]/g, "-").replace(/Z$/, "");
    const dir = path.resolve(this.o.outDir, stamp);
    mkdirSync(dir, { recursive: true });
    const jsonPath = path.join(dir, "samples.json");
    const htmlPath = path.join(dir, "report.html");
    // The lag histogram's open bucket is le: Infinity, which JSON cannot hold: written as "+Inf" like Prometheus.
    writeFileSync(jsonPath, samplesJson(report));
    writeFileSync(htmlPath, renderReportHtml(report, "samples.json"));
    this.log(`report: ${htmlPath}`);
    return { report, htmlPath, jsonPath };
  }

  // ---------------------------------------------------------------- teardown

  async teardown(): Promise<void> {
    this.sampling = false;
    await this.samplingDone.catch(() => undefined);
    this.lag.disable();
    await Promise.all(
      this.workers.map(async (w) => {
        this.send(w, { type: "stop" });
        const t = setTimeout(() => w.proc.kill("SIGKILL"), 10_000);
        await w.stopped;
        clearTimeout(t);
      }),
    );
    this.workers = [];
    await this.sdkApp?.stop().catch(() => undefined);
    this.sdkApp = null;
    await this.cluster?.stop().catch(() => undefined);
  }
}

/** A run as samples.json. The lag histogram's open bucket is le: Infinity, which JSON cannot hold: written as "+Inf" like Prometheus. */
export function samplesJson(report: RunReport): string {
  return JSON.stringify(report, (_k, v) => (v === Infinity ? "+Inf" : v), 1);
}
