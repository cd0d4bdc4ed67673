/**
 * The directory a process should use, from its environment:
 *
 *   MONGODB_URL set            → MongoDirectory (MONGODB_DB, else the URL's database, else "mentra")
 *   else REDIS_URL set         → RedisDirectory (key prefix DIRECTORY_REDIS_PREFIX, default
 *                                `<REDIS_PREFIX>dir:`, i.e. "mentra:dir:")
 *   else                       → EmbeddedDirectory (DIRECTORY_SEED loaded into it), the default
 *
 * always wrapped in a CachedDirectory whose app changes travel over Redis pub/sub when REDIS_URL is
 * set (channel `<prefix>app-changes`), else over an in-process bus. DIRECTORY_CACHE_REFRESH_MS sets
 * the full reload period (default 30 s with a Redis bus; 5 s without one, where the reload is the
 * only way one pod learns about another's change). DIRECTORY_LATENCY_MS adds a fixed delay to every
 * store call (rehearses a distant database, failure case C16).
 *
 * With a shared store (MongoDB or Redis), DIRECTORY_SEED's apps and installed apps are upserted at
 * warm-up (idempotent), so a local cluster started with a seed file finds its demo app; running-app
 * intent and settings in the file are applied only by the seeding command (`npm run seed`), because a
 * pod restart must not bring back an app the user has stopped since.
 */
import { DelayedDirectory } from "./delayed.ts";
import { CachedDirectory, InProcessAppChangeBus, RedisAppChangeBus, type AppChangeBus } from "./cached.ts";
import { EmbeddedDirectory, readSeedFile, type Directory, type SeedFile } from "./index.ts";
import { MongoDirectory } from "./mongo.ts";
import { RedisDirectory } from "./redis.ts";
import { seedDirectory } from "./seeding.ts";

export interface DirectoryEnv {
  MONGODB_URL?: string;
  MONGODB_DB?: string;
  REDIS_URL?: string;
  DIRECTORY_REDIS_PREFIX?: string;
  REDIS_PREFIX?: string;
  DIRECTORY_CACHE_REFRESH_MS?: string;
  DIRECTORY_SEED?: string;
  DIRECTORY_LATENCY_MS?: string;
  [key: string]: string | undefined;
}

export interface DirectoryFromEnvOptions {
  /** Called for errors the cache survives (warm-up attempts, refresh, publish); wire it to the logger. */
  onError?: (err: unknown, what: string) => void;
  /** Overrides DIRECTORY_SEED for the embedded store (and the shared stores' app seeding). */
  seed?: SeedFile;
  /** Overrides DIRECTORY_CACHE_REFRESH_MS. */
  refreshMs?: number;
  /** Overrides DIRECTORY_LATENCY_MS. */
  latencyMs?: number;
  /** A bus to use instead of the one the environment implies. */
  bus?: AppChangeBus;
}

/** One line for logs and the seeding command: which store and bus the environment selects. */
export function describeDirectoryEnv(env: DirectoryEnv): { store: "mongodb" | "redis" | "embedded"; bus: "redis" | "in-process" } {
  return {
    store: env.MONGODB_URL ? "mongodb" : env.REDIS_URL ? "redis" : "embedded",
    bus: env.REDIS_URL ? "redis" : "in-process",
  };
}

function nonNegative(name: string, v: string | undefined): number | undefined {
  if (v === undefined || v === "") return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name} must be a number >= 0, got ${JSON.stringify(v)}`);
  return n;
}

export function directoryFromEnv(env: DirectoryEnv = process.env, opts: DirectoryFromEnvOptions = {}): CachedDirectory {
  const { store: kind } = describeDirectoryEnv(env);
  // Under the cluster's REDIS_PREFIX (the registry's, default "mentra:") unless set on its own.
  const prefix = env.DIRECTORY_REDIS_PREFIX || `${env.REDIS_PREFIX ?? "mentra:"}dir:`;
  const seed = opts.seed ?? (env.DIRECTORY_SEED ? readSeedFile(env.DIRECTORY_SEED) : undefined);

  let store: Directory;
  if (kind === "mongodb") store = new MongoDirectory({ url: env.MONGODB_URL!, ...(env.MONGODB_DB ? { dbName: env.MONGODB_DB } : {}) });
  else if (kind === "redis") store = new RedisDirectory({ url: env.REDIS_URL!, prefix });
  else store = new EmbeddedDirectory({ seed });

  if (seed && kind !== "embedded") store = new SeedOnReady(store, { apps: seed.apps, users: seed.users?.map((u) => ({ id: u.id, installedApps: u.installedApps })) });

  const latencyMs = opts.latencyMs ?? nonNegative("DIRECTORY_LATENCY_MS", env.DIRECTORY_LATENCY_MS) ?? 0;
  if (latencyMs > 0) store = new DelayedDirectory(store, { latencyMs });

  const bus = opts.bus ?? (env.REDIS_URL ? new RedisAppChangeBus({ url: env.REDIS_URL, channel: `${prefix}app-changes` }) : new InProcessAppChangeBus());
  const refreshMs = opts.refreshMs ?? nonNegative("DIRECTORY_CACHE_REFRESH_MS", env.DIRECTORY_CACHE_REFRESH_MS) ?? (env.REDIS_URL || kind === "embedded" ? 30_000 : 5_000);
  return new CachedDirectory(store, { bus, refreshMs, ...(opts.onError ? { onError: opts.onError } : {}) });
}

/** Passes everything through; ready() also applies a seed (idempotent upserts) once. */
class SeedOnReady implements Directory {
  readonly kind: string;
  private seeded = false;
  constructor(private readonly inner: Directory, private readonly seed: SeedFile) {
    this.kind = inner.kind;
  }
  async ready(): Promise<void> {
    await this.inner.ready();
    if (this.seeded) return;
    await seedDirectory(this.inner, this.seed);
    this.seeded = true;
  }
  getOrCreateUser(userId: string) {
    return this.inner.getOrCreateUser(userId);
  }
  getApp(packageName: string) {
    return this.inner.getApp(packageName);
  }
  listApps() {
    return this.inner.listApps();
  }
  upsertApp(app: Parameters<Directory["upsertApp"]>[0]) {
    return this.inner.upsertApp(app);
  }
  deleteApp(packageName: string) {
    return this.inner.deleteApp(packageName);
  }
  installApp(userId: string, packageName: string) {
    return this.inner.installApp(userId, packageName);
  }
  addRunningApp(userId: string, packageName: string) {
    return this.inner.addRunningApp(userId, packageName);
  }
  removeRunningApp(userId: string, packageName: string) {
    return this.inner.removeRunningApp(userId, packageName);
  }
  setUserSettings(userId: string, patch: Record<string, unknown>) {
    return this.inner.setUserSettings(userId, patch);
  }
  close() {
    return this.inner.close();
  }
}
