/** Load-test options: defaults and the command line. */
import { existsSync, readdirSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { DEFAULT_STT_FRAME_MS } from "@mentra-cluster/pod";
import { loadPackets } from "./audio.ts";
import { REPO_ROOT } from "./cluster.ts";
import type { Feature, LoadtestOptions } from "./types.ts";

export const DEFAULT_STEPS = [10, 50, 100, 200, 500, 1000, 2000];
/** More users than one driver machine could ever seed and drive: a typo, refused before anything starts. */
export const MAX_USERS = 100_000;
/** Set by --from: analyse a stored samples.json again instead of running. */
export const REANALYZE: { path: string | null } = { path: null };
export const AUDIO_DIR = path.resolve(REPO_ROOT, "../shared/data/audio");

/** The default plan up to `users`: the standard steps below it, then `users` itself. */
export function planFor(users: number, steps?: number[]): number[] {
  const base = steps && steps.length ? steps : DEFAULT_STEPS;
  const plan = base.filter((n) => n > 0 && n < users);
  if (!plan.includes(users)) plan.push(users);
  return [...new Set(plan)].sort((a, b) => a - b);
}

export function defaultWavs(dir = AUDIO_DIR): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => f.endsWith(".wav"))
    .sort()
    .map((f) => path.join(dir, f));
}

export function defaultOptions(over: Partial<LoadtestOptions> = {}): LoadtestOptions {
  const users = over.users ?? 200;
  const external = !!over.gateway;
  const o: LoadtestOptions = {
    users,
    steps: planFor(users, over.steps),
    rampPerS: 10,
    holdS: 30,
    settleS: 5,
    holdWaitS: 20,
    sampleIntervalMs: 1000,
    lagThresholdMs: 50,
    latencyThresholdMs: 1000,
    failThreshold: 0.01,
    stopAtBreak: true,
    gateway: null,
    adminToken: process.env.ADMIN_TOKEN ?? (external ? "dev-admin-token" : "loadtest-admin-token"),
    jwtSecret: process.env.JWT_SECRET ?? (external ? "dev-only-secret" : "loadtest-jwt-secret"),
    pods: 1,
    transcription: "stream",
    podLagSampleMs: 250,
    sttFrameMs: DEFAULT_STT_FRAME_MS,
    workers: 0,
    sdkUsers: Math.min(5, users),
    features: ["transcription", "display"],
    prefix: "loadtest",
    domain: "example.com",
    appPrefix: "com.mentra.loadtest",
    appApiKey: process.env.LOADTEST_APP_API_KEY ?? "loadtest-app-key",
    outDir: path.join(REPO_ROOT, "apps/loadtest/out"),
    uiPort: 7070,
    uiHost: "127.0.0.1",
    interactive: false,
    generatorCpuLimit: 0.85,
    generatorLagLimitMs: 50,
    hostBusyLimit: 0.9,
    seed: true,
    wavs: defaultWavs(),
    logLevel: "warn",
    ...over,
  };
  o.steps = planFor(o.users, over.steps);
  o.sdkUsers = Math.min(o.sdkUsers, o.users);
  return o;
}

export const USAGE = `usage: npm run loadtest -- [options]

  --users N              highest user count (default 200); the plan steps up to it
  --steps 10,50,100      user counts to step through (default 10,50,100,200,500,1000,2000 below --users, then --users)
  --ramp N               new users per second while ramping (default 10)
  --hold S               seconds to hold each step (default 30)
  --settle S             seconds at the start of each hold left out of its figures (default 5)
  --lag-threshold MS     the knee: pod event-loop lag p99 above this (default 50)
  --latency-threshold MS …or audio → display latency p95 above this (default 1000)
  --fail-threshold F     the breaking point: share of connection attempts failing (default 0.01)
  --no-stop-at-break     keep stepping after the breaking point
  --gateway URL          an existing cluster's gateway (default: start our own: Redis, gateway, pods, STT emulator)
  --admin-token T        the gateway's admin token (ADMIN_TOKEN), to list its pods
  --jwt-secret S         the cluster's JWT secret (JWT_SECRET), to mint phone tokens
  --pods N               own cluster: pod processes (default 1)
  --transcription K      own cluster: stream (the pod's WebSocket STT provider + emulator, default) or energy (in-process)
  --stt-frame-ms MS      own cluster, stream transcription: audio per STT socket write (default 100, the pod's; 0 = every 40 ms packet)
  --workers N            generator processes (default: one per 500 users, at most one per CPU)
  --sdk-users N          users on the real @mentra/sdk app (default 5); the rest use the lean app
  --features LIST        mini app features: transcription,display[,audio] (default transcription,display)
  --sample MS            poll/scrape interval for every pod (default 1000)
  --out DIR              where the report folder goes (default apps/loadtest/out)
  --ui-port N            live page port (default 7070; 0 = any free port)
  --no-ui                no live page
  --interactive          wait for the live page (or its API) to start a run; Ctrl-C to quit
  --generator-cpu-limit C   a generator process above C cores counts as saturated (default 0.85)
  --host-busy-limit F    the machine counts as saturated above this share of CPU busy (default 0.9)
  --no-seed              with --gateway: do not create the users and apps (seeding writes to MONGODB_URL or REDIS_URL)
  --prefix P --domain D  users are P-<i>@D (default loadtest-<i>@example.com)
  --from samples.json    no run: analyse a stored run again (with the thresholds given) and rewrite its report.html
  --wav FILE             a speech clip to loop (repeatable; default every WAV in ../shared/data/audio)
  -h, --help`;

const CLI_OPTIONS = {
  users: { type: "string" },
  steps: { type: "string" },
  ramp: { type: "string" },
  hold: { type: "string" },
  settle: { type: "string" },
  "hold-wait": { type: "string" },
  "lag-threshold": { type: "string" },
  "latency-threshold": { type: "string" },
  "fail-threshold": { type: "string" },
  "no-stop-at-break": { type: "boolean" },
  gateway: { type: "string" },
  "admin-token": { type: "string" },
  "jwt-secret": { type: "string" },
  pods: { type: "string" },
  transcription: { type: "string" },
  workers: { type: "string" },
  "stt-frame-ms": { type: "string" },
  "sdk-users": { type: "string" },
  features: { type: "string" },
  sample: { type: "string" },
  out: { type: "string" },
  "ui-port": { type: "string" },
  "no-ui": { type: "boolean" },
  interactive: { type: "boolean" },
  "generator-cpu-limit": { type: "string" },
  "host-busy-limit": { type: "string" },
  prefix: { type: "string" },
  domain: { type: "string" },
  wav: { type: "string", multiple: true },
  "log-level": { type: "string" },
  "no-seed": { type: "boolean" },
  from: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

/**
 * `--users -5` as `--users=-5`: parseArgs takes a value that starts with "-" for an option and
 * refuses it with a three-line hint, so a negative number would never reach the range checks'
 * one-line error.
 */
function joinNegativeValues(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const name = a.startsWith("--") && !a.includes("=") ? a.slice(2) : null;
    const next = argv[i + 1];
    if (name && (CLI_OPTIONS as Record<string, { type: string }>)[name]?.type === "string" && next !== undefined && /^-\.?\d/.test(next)) {
      out.push(`${a}=${next}`);
      i++;
    } else out.push(a);
  }
  return out;
}

export function parseCli(argv: string[]): LoadtestOptions | null {
  const { values } = parseArgs({ args: joinNegativeValues(argv), options: CLI_OPTIONS, strict: true });
  if (values.help) return null;
  if (values.from) REANALYZE.path = path.resolve(values.from);
  const num = (name: string, v: string | undefined, min = 0, max = Infinity): number | undefined => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (v.trim() === "" || !Number.isFinite(n) || n < min || n > max) throw new Error(`--${name} must be a number ${max === Infinity ? `≥ ${min}` : `from ${min} to ${max}`}, got ${JSON.stringify(v)}`);
    return n;
  };
  /** Counts (users, pods, workers, ports) are whole numbers. */
  const int = (name: string, v: string | undefined, min = 0, max = Infinity): number | undefined => {
    const n = num(name, v, min, max);
    if (n !== undefined && !Number.isInteger(n)) throw new Error(`--${name} must be a whole number, got ${JSON.stringify(v)}`);
    return n;
  };
  const over: Partial<LoadtestOptions> = {};
  const set = <K extends keyof LoadtestOptions>(k: K, v: LoadtestOptions[K] | undefined) => {
    if (v !== undefined) over[k] = v;
  };
  set("users", int("users", values.users, 1, MAX_USERS));
  if (values.steps !== undefined) {
    // Commas or spaces between counts, as before; an empty item (",," or nothing at all) is a typo.
    const items = values.steps.trim().split(/\s*,\s*|\s+/);
    if (items.some((s) => s === "")) throw new Error(`--steps must be user counts separated by commas, got ${JSON.stringify(values.steps)}`);
    over.steps = items.map((s) => int("steps", s, 1, MAX_USERS)!);
  }
  if (values.steps !== undefined && values.users === undefined) over.users = Math.max(...over.steps!);
  if (over.steps && over.users !== undefined) {
    const above = over.steps.filter((s) => s > over.users!);
    if (above.length) throw new Error(`--steps ${above.join(",")} above --users ${over.users} (the users seeded for this run)`);
  }
  set("rampPerS", num("ramp", values.ramp, 0.1));
  set("holdS", num("hold", values.hold, 1));
  set("settleS", num("settle", values.settle, 0));
  set("holdWaitS", num("hold-wait", values["hold-wait"], 0));
  set("lagThresholdMs", num("lag-threshold", values["lag-threshold"], 1));
  set("latencyThresholdMs", num("latency-threshold", values["latency-threshold"], 1));
  set("failThreshold", num("fail-threshold", values["fail-threshold"], 0, 1));
  if (values["no-stop-at-break"]) over.stopAtBreak = false;
  if (values.gateway !== undefined) over.gateway = gatewayUrl(values.gateway);
  set("adminToken", values["admin-token"]);
  set("jwtSecret", values["jwt-secret"]);
  set("pods", int("pods", values.pods, 1, 64));
  if (values.transcription) {
    if (values.transcription !== "stream" && values.transcription !== "energy") throw new Error("--transcription must be stream or energy");
    over.transcription = values.transcription;
  }
  set("workers", int("workers", values.workers, 1, 64));
  set("sttFrameMs", int("stt-frame-ms", values["stt-frame-ms"], 0, 1000));
  set("sdkUsers", int("sdk-users", values["sdk-users"], 0));
  if (values.features !== undefined) {
    const fs = values.features.split(",").map((s) => s.trim()).filter(Boolean);
    for (const f of fs) if (!["transcription", "audio", "display"].includes(f)) throw new Error(`unknown feature ${f} (transcription, display, audio)`);
    over.features = fs as Feature[];
  }
  set("sampleIntervalMs", num("sample", values.sample, 200));
  if (values.out) over.outDir = path.resolve(values.out);
  if (values["no-ui"]) over.uiPort = null;
  else set("uiPort", int("ui-port", values["ui-port"], 0, 65535));
  if (values.interactive) over.interactive = true;
  set("generatorCpuLimit", num("generator-cpu-limit", values["generator-cpu-limit"], 0));
  set("hostBusyLimit", num("host-busy-limit", values["host-busy-limit"], 0, 1));
  set("prefix", values.prefix);
  set("domain", values.domain);
  if (values.wav?.length) over.wavs = values.wav.map((w) => path.resolve(w));
  set("logLevel", values["log-level"]);
  if (values["no-seed"]) over.seed = false;
  const o = defaultOptions(over);
  if (o.wavs.length === 0) throw new Error(`no speech clips: ${AUDIO_DIR} has no WAV files (give --wav)`);
  // Read the clips now, as the generators will: a wrong --wav is one line before anything starts.
  try {
    loadPackets(o.wavs);
  } catch (err) {
    throw new Error(`--wav: ${(err as Error).message}`);
  }
  if (o.interactive && o.uiPort === null) throw new Error("--interactive needs the live page (drop --no-ui)");
  return o;
}

/** --gateway: an http(s) base URL, without a trailing slash. */
function gatewayUrl(v: string): string {
  let u: URL | null = null;
  try {
    u = new URL(v);
  } catch {
    u = null;
  }
  if (!u || (u.protocol !== "http:" && u.protocol !== "https:")) throw new Error(`--gateway must be an http:// or https:// URL, got ${JSON.stringify(v)}`);
  return v.replace(/\/+$/, "");
}
