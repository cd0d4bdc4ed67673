/** Shapes shared by the driver, its workers, the live page and the report (all JSON-safe). */

export type Feature = "transcription" | "audio" | "display";

export interface LoadtestOptions {
  /** Highest user count of the plan. */
  users: number;
  /** User counts to step through (ascending, the last = users). */
  steps: number[];
  /** New users per second while ramping. */
  rampPerS: number;
  /** Seconds each step is held once reached. */
  holdS: number;
  /** Seconds at the start of each hold left out of the step's figures (sessions and apps settling). */
  settleS: number;
  /** After the target is reached, how long to wait for stragglers before the hold starts anyway. */
  holdWaitS: number;
  /** Poll/scrape period for every pod. */
  sampleIntervalMs: number;
  /** The knee: the first step whose pod event-loop lag p99 is above this… */
  lagThresholdMs: number;
  /** …or whose audio → display latency p95 is above this (a loop near 100% queues work without much lag). */
  latencyThresholdMs: number;
  /** The breaking point: the first step whose connection attempts fail more often than this. */
  failThreshold: number;
  /** Stop stepping once the breaking point is reached. */
  stopAtBreak: boolean;
  /** Target cluster; null = start our own (Redis, gateway, pods as processes, STT emulator). */
  gateway: string | null;
  adminToken: string;
  jwtSecret: string;
  /** Own cluster only. */
  pods: number;
  /** Own cluster only: "stream" = the pod's WebSocket STT provider against the emulator; "energy" = in-process. */
  transcription: "stream" | "energy";
  /** Own cluster, stream transcription: coalesce audio into frames of this many ms per STT socket write (0 = per packet). */
  sttFrameMs: number;
  /** Own cluster only: lag sampling period inside the pods. */
  podLagSampleMs: number;
  /** Generator processes (0 = auto). */
  workers: number;
  /** Users whose mini app is the real @mentra/sdk app (the rest use the lean AppSim). */
  sdkUsers: number;
  features: Feature[];
  /** Users are <prefix>-<i>@<domain>. */
  prefix: string;
  domain: string;
  /** Package names: <appPrefix>.lean.w<k> and <appPrefix>.sdk. */
  appPrefix: string;
  appApiKey: string;
  /** Where report.html and samples.json go (a timestamped folder inside). */
  outDir: string;
  /** Live page port (0 = any free port); null = no page. */
  uiPort: number | null;
  uiHost: string;
  /** Wait for the page (or the API) to start a run instead of starting at once. */
  interactive: boolean;
  /** A generator process using more CPU than this (cores) counts as saturated. */
  generatorCpuLimit: number;
  /** … or whose own event-loop lag p99 is above this. */
  generatorLagLimitMs: number;
  /** The machine counts as saturated when its CPUs are busier than this share. */
  hostBusyLimit: number;
  /** Seed users and apps in the directory (own cluster: always; else into MONGODB_URL / REDIS_URL). */
  seed: boolean;
  /** Speech clips looped by every phone. */
  wavs: string[];
  /** Pod log level for the own cluster. */
  logLevel: string;
}

/** Connection failure kinds a phone can hit (counted per attempt). */
export type FailureKind = string;

/** A worker's report to the driver, once per interval. Counters are cumulative since the worker started. */
export interface WorkerStats {
  worker: number;
  t: number;
  intervalMs: number;
  target: number;
  /** Phones with WebSocket up and app started. */
  running: number;
  connected: number;
  connecting: number;
  attempts: number;
  failures: Record<FailureKind, number>;
  udpFallbacks: number;
  disconnects: number;
  reconnects: number;
  packetsSent: number;
  packetsOffline: number;
  packetsLateDropped: number;
  /** p99/max of how late audio packets left, this interval (ms). */
  sendLateP99Ms: number;
  sendLateMaxMs: number;
  lagP99Ms: number;
  lagMaxMs: number;
  /** CPU used by this process during the interval, in cores. */
  cpuCores: number;
  rssMB: number;
  transcriptsAtApp: number;
  displaysSent: number;
  displaysAtPhone: number;
  audioChunkBytesAtApp: number;
  appSessions: number;
  /** Latency histograms for this interval (counts per LATENCY_BUCKETS_MS bucket). */
  latency: {
    audioToApp: { counts: number[]; max: number };
    appToPhone: { counts: number[]; max: number };
    audioToPhone: { counts: number[]; max: number };
  };
  /** Displays seen by phones of real-SDK users this interval (matched against the app's events). */
  sdkDisplays: { userId: string; text: string; t: number }[];
  appPublicUrl: string;
}

export interface PodSample {
  podId: string;
  ok: boolean;
  error?: string;
  sessions: number;
  miniapps: number;
  udpSessions: number;
  lagMs: number;
  /** The pod's own rolling p99 (its window, see LAG_SAMPLE_INTERVAL_MS × 150). */
  lagP99Ms: number;
  /** p99 of the pod's lag samples over about the last 5 s (from its histogram), null without samples. */
  lagP99RecentMs: number | null;
  elu: number;
  /** CPU over the last interval, cores (process_cpu_seconds_total rate). */
  cpuCores: number | null;
  rssMB: number;
  heapUsedMB: number;
  heapTotalMB: number;
  externalMB: number;
  /** Per-second rates over the last interval. */
  rates: {
    udpIn: number;
    udpDropped: number;
    wsClientIn: number;
    wsClientOut: number;
    wsAppIn: number;
    wsAppOut: number;
  };
  /** Cumulative counters as scraped (the step figures are differences of these). */
  counters: {
    cpuSeconds: number | null;
    udpReceived: number;
    udpDropped: number;
    wsClientIn: number;
    wsClientOut: number;
    wsAppIn: number;
    wsAppOut: number;
    droppedMessages: number;
    transcriptionErrors: number;
    newSessionRejections: number;
    sessionCreations: number;
    unhandledRejections: number;
    uncaughtExceptions: number;
    lagSamples: number;
  };
  /** Cumulative mentra_event_loop_delay_seconds buckets (le in ms; the open bucket is Infinity, "+Inf" in samples.json). */
  lagBuckets: { le: number; count: number }[];
}

export interface GeneratorSample {
  target: number;
  running: number;
  connected: number;
  connecting: number;
  attempts: number;
  failures: number;
  failuresByKind: Record<string, number>;
  disconnects: number;
  reconnects: number;
  udpFallbacks: number;
  packetsSent: number;
  packetsPerS: number;
  packetsOffline: number;
  packetsLateDropped: number;
  sendLateP99Ms: number;
  workerCpuCores: number[];
  workerLagP99Ms: number[];
  driverCpuCores: number;
  driverLagP99Ms: number;
  rssMB: number;
  transcriptsAtApp: number;
  displaysAtPhone: number;
  audioChunkBytesAtApp: number;
  latency: {
    audioToApp: { counts: number[]; max: number };
    appToPhone: { counts: number[]; max: number };
    audioToPhone: { counts: number[]; max: number };
    sdkAppToPhone: { counts: number[]; max: number };
  };
  /** This interval's latency quantiles (ms), for charts and the summary line. */
  lat: { audioToPhoneP50: number | null; audioToPhoneP95: number | null; audioToAppP50: number | null; appToPhoneP50: number | null };
}

export interface Sample {
  seq: number;
  t: number;
  elapsedS: number;
  phase: "idle" | "ramp" | "hold" | "manual" | "stopping";
  step: number | null;
  gen: GeneratorSample;
  pods: PodSample[];
  /** Whole machine, 0..1 of all its CPUs (null off Linux). */
  hostBusy: number | null;
  hostCores: number;
  /** Other processes of our own cluster, cores. */
  aux: Record<string, number | null>;
  /** Why this sample's generator side cannot be trusted (empty = fine). */
  saturation: string[];
  sdk: { sessions: number; transcripts: number; cpuCores: number | null };
}

export interface StepWindow {
  index: number;
  users: number;
  rampStartT: number;
  holdStartT: number | null;
  endT: number | null;
}

export interface StepResult {
  index: number;
  users: number;
  /** Mean phones with app running during the measured window. */
  usersRunning: number;
  podSessionsMax: number;
  podSessionsTotal: number;
  windowS: number;
  samples: number;
  /** Busiest pod's figures. */
  podCpuCores: number | null;
  podCpuMsPerUserS: number | null;
  elu: number | null;
  lagP99Ms: number | null;
  lagShareAboveThreshold: number | null;
  lagMaxSampleMs: number | null;
  /** The pod's own rolling-window p99 gauge at the end of the step. */
  lagP99GaugeMs: number | null;
  rssMB: number | null;
  heapUsedMB: number | null;
  udpInPerS: number | null;
  udpDroppedPerS: number | null;
  wsClientOutPerS: number | null;
  wsAppInPerS: number | null;
  wsAppOutPerS: number | null;
  droppedMessages: number;
  transcriptionErrors: number;
  attempts: number;
  failures: number;
  failureRate: number;
  failuresByKind: Record<string, number>;
  /** Failures that are not load (the target refused the user or app as such); optional in older runs. */
  setupFailures?: number;
  disconnects: number;
  latency: {
    audioToAppP50: number | null;
    audioToAppP95: number | null;
    audioToPhoneP50: number | null;
    audioToPhoneP95: number | null;
    audioToPhoneP99: number | null;
    appToPhoneP50: number | null;
    appToPhoneP95: number | null;
    sdkAppToPhoneP50: number | null;
    n: number;
  };
  transcriptsPerS: number | null;
  displaysPerS: number | null;
  packetsPerSExpected: number;
  packetsPerSSent: number | null;
  generatorCpuMax: number | null;
  generatorLagP99Max: number | null;
  sendLateP99Max: number | null;
  hostBusy: number | null;
  auxCpu: Record<string, number | null>;
  /** Reasons the generator side of this step cannot be trusted (empty = trusted). */
  saturation: string[];
  /** No saturation at all: the step's lag speaks for the pod (knee, capacity). */
  trusted: boolean;
  /** The generator delivered the load (only the machine or the driver were busy): the step's CPU and memory per user still count. */
  loadDelivered: boolean;
  /** Lag p99 or e2e latency p95 over its threshold. */
  overThreshold: boolean;
  overLag: boolean;
  overLatency: boolean;
  broken: boolean;
}

export interface Fits {
  cpuMsPerS: import("./stats.ts").LinearFit | null;
  rssMB: import("./stats.ts").LinearFit | null;
  heapMB: import("./stats.ts").LinearFit | null;
  elu: import("./stats.ts").LinearFit | null;
}

export interface Verdict {
  /** "capacity": a knee was found on trusted steps; "above": no knee on trusted steps; "saturated": the generator/host ran out first; "setup": the target refused users or apps as such (not load); "none": no usable step. */
  kind: "capacity" | "above" | "saturated" | "setup" | "none";
  capacityUsers: number | null;
  kneeStep: number | null;
  kneeUsers: number | null;
  kneeLagP99Ms: number | null;
  breakingStep: number | null;
  breakingUsers: number | null;
  saturatedAtUsers: number | null;
  saturationReasons: string[];
  lastTrustedUsers: number | null;
  perUserCpuMs: number | null;
  baselineCpuMsPerS: number | null;
  perUserMemKB: number | null;
  baselineMemMB: number | null;
  predictedUsersAt80PctCore: number | null;
  /** CPU per added user between the two highest steps with the load delivered (the cost at the top of the range). */
  marginalCpuMs: number | null;
  /** Users at 80% of one core extrapolating that marginal cost from the highest step. */
  marginalPredictedUsersAt80PctCore: number | null;
  predictedUsersAtFullCore: number | null;
  answer: string;
  targets: { perUserCpuMsTarget: number; perUserCpuMet: boolean | null; usersTarget: number; usersMet: boolean | null };
}

export interface RunReport {
  version: 1;
  startedAt: string;
  endedAt: string;
  options: Omit<LoadtestOptions, "jwtSecret" | "adminToken" | "appApiKey">;
  environment: { host: string; cpus: number; cpuModel: string; memGB: number; node: string; platform: string; cluster: "own" | "external"; podEnv?: Record<string, string> };
  steps: StepResult[];
  windows: StepWindow[];
  fits: Fits;
  verdict: Verdict;
  samples: Sample[];
  notes: string[];
}
