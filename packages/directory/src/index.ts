/**
 * The directory of users and apps behind one interface, with three stores:
 *  - EmbeddedDirectory: in-process (single pod, tests, `npm start`), the default;
 *  - RedisDirectory: shared by every pod of a multi-process cluster without MongoDB (REDIS_URL);
 *  - MongoDirectory: production (MONGODB_URL), official `mongodb` driver;
 * and CachedDirectory, which wraps any of them: apps held in memory (warmed before the pod is
 * ready, refreshed periodically, invalidated across pods through an AppChangeBus), user calls
 * passed through. `directoryFromEnv()` builds the configured combination.
 *
 * Every mutation is a single atomic change (one field, $set/$addToSet/$pull, SADD/SREM/HSET), never
 * a read-modify-write of a whole document, so writers racing on one user cannot lose each other's
 * updates.
 */
import { readFileSync } from "node:fs";
import { copyApp, hashApiKey, normalizeApp, normalizeUserId } from "./util.ts";

export { hashApiKey, verifyApiKey, normalizeUserId, normalizeApp } from "./util.ts";

export type AppType = "standard" | "background" | "system";

export interface UserRecord {
  /** Lower-cased e-mail address. */
  id: string;
  installedApps: string[];
  /** What the user wants running (intent). A pod that loses a user never removes entries. */
  runningApps: string[];
  settings: Record<string, unknown>;
}

export interface AppRecord {
  packageName: string;
  name: string;
  /** Base URL of the app server, without a trailing slash; webhooks go to `<publicUrl>/webhook`. */
  publicUrl: string;
  /** SHA-256 hex of the API key; the plain key is never stored. */
  hashedApiKey: string;
  type: AppType;
  permissions: string[];
}

export interface Directory {
  readonly kind: string;
  /** Resolves once the store can answer (connections open, indexes built; for a cache: warm). */
  ready(): Promise<void>;
  /** Returns the user, creating an empty record on first sight (as the cloud does at login). */
  getOrCreateUser(userId: string): Promise<UserRecord>;
  getApp(packageName: string): Promise<AppRecord | null>;
  listApps(): Promise<AppRecord[]>;
  /** Creates or replaces an app record (the URL or key of an existing app may change). */
  upsertApp(app: AppRecord): Promise<void>;
  /** Removes an app record; users' installed/running entries are left alone. */
  deleteApp(packageName: string): Promise<void>;
  installApp(userId: string, packageName: string): Promise<void>;
  /** Adds to the running-app intent (idempotent, atomic). */
  addRunningApp(userId: string, packageName: string): Promise<void>;
  /** Removes from the running-app intent: only for an explicit stop by the user. */
  removeRunningApp(userId: string, packageName: string): Promise<void>;
  /** Shallow patch of the user's settings: each key is set atomically; other keys are untouched. */
  setUserSettings(userId: string, patch: Record<string, unknown>): Promise<void>;
  close(): Promise<void>;
}

export interface SeedUser {
  id: string;
  installedApps?: string[];
  runningApps?: string[];
  settings?: Record<string, unknown>;
}

export type SeedApp = Omit<AppRecord, "hashedApiKey" | "permissions" | "type" | "name"> & {
  name?: string;
  type?: AppType;
  permissions?: string[];
  hashedApiKey?: string;
  /** Plain key in a seed file is hashed on load and never kept. */
  apiKey?: string;
};

export interface SeedFile {
  users?: SeedUser[];
  apps?: SeedApp[];
}

/** A seed file's app entry as a stored record (plain keys hashed). */
export function seedAppRecord(a: SeedApp): AppRecord {
  const hashedApiKey = a.hashedApiKey ?? (a.apiKey ? hashApiKey(a.apiKey) : "");
  if (!hashedApiKey) throw new Error(`seed app ${a.packageName} has neither apiKey nor hashedApiKey`);
  return normalizeApp({
    packageName: a.packageName,
    name: a.name ?? a.packageName,
    publicUrl: a.publicUrl,
    hashedApiKey,
    type: a.type ?? "standard",
    permissions: a.permissions ?? [],
  });
}

export interface EmbeddedDirectoryOptions {
  seed?: SeedFile;
  /** Added to every call, to rehearse a distant database (failure case C16). */
  latencyMs?: number;
}

/** In-process store. Returns copies so callers can never mutate the stored records. */
export class EmbeddedDirectory implements Directory {
  readonly kind = "embedded";
  private users = new Map<string, UserRecord>();
  private apps = new Map<string, AppRecord>();
  private readonly latencyMs: number;
  /** Round trips served, so tests can prove hot paths never touch the directory. */
  calls = 0;

  constructor(opts: EmbeddedDirectoryOptions = {}) {
    this.latencyMs = opts.latencyMs ?? 0;
    if (opts.seed) this.load(opts.seed);
  }

  static fromFile(path: string, opts: Omit<EmbeddedDirectoryOptions, "seed"> = {}): EmbeddedDirectory {
    return new EmbeddedDirectory({ ...opts, seed: readSeedFile(path) });
  }

  load(seed: SeedFile): void {
    for (const a of seed.apps ?? []) {
      const rec = seedAppRecord(a);
      this.apps.set(rec.packageName, rec);
    }
    for (const u of seed.users ?? []) {
      const id = normalizeUserId(u.id);
      this.users.set(id, {
        id,
        installedApps: [...new Set(u.installedApps ?? [])],
        runningApps: [...new Set(u.runningApps ?? [])],
        settings: { ...(u.settings ?? {}) },
      });
    }
  }

  private async rt(): Promise<void> {
    this.calls++;
    if (this.latencyMs > 0) await new Promise((r) => setTimeout(r, this.latencyMs));
  }

  private user(userId: string): UserRecord {
    const id = normalizeUserId(userId);
    let u = this.users.get(id);
    if (!u) {
      u = { id, installedApps: [], runningApps: [], settings: {} };
      this.users.set(id, u);
    }
    return u;
  }

  async ready(): Promise<void> {}

  async getOrCreateUser(userId: string): Promise<UserRecord> {
    await this.rt();
    const u = this.user(userId);
    return { id: u.id, installedApps: [...u.installedApps], runningApps: [...u.runningApps], settings: structuredClone(u.settings) };
  }

  async getApp(packageName: string): Promise<AppRecord | null> {
    await this.rt();
    const a = this.apps.get(packageName);
    return a ? copyApp(a) : null;
  }

  async listApps(): Promise<AppRecord[]> {
    await this.rt();
    return [...this.apps.values()].map(copyApp);
  }

  async upsertApp(app: AppRecord): Promise<void> {
    const rec = normalizeApp(app);
    await this.rt();
    this.apps.set(rec.packageName, rec);
  }

  async deleteApp(packageName: string): Promise<void> {
    await this.rt();
    this.apps.delete(packageName);
  }

  async installApp(userId: string, packageName: string): Promise<void> {
    await this.rt();
    const u = this.user(userId);
    if (!u.installedApps.includes(packageName)) u.installedApps.push(packageName);
  }

  async addRunningApp(userId: string, packageName: string): Promise<void> {
    await this.rt();
    const u = this.user(userId);
    if (!u.runningApps.includes(packageName)) u.runningApps.push(packageName);
  }

  async removeRunningApp(userId: string, packageName: string): Promise<void> {
    await this.rt();
    const u = this.user(userId);
    u.runningApps = u.runningApps.filter((p) => p !== packageName);
  }

  async setUserSettings(userId: string, patch: Record<string, unknown>): Promise<void> {
    const copy = structuredClone(patch);
    await this.rt();
    Object.assign(this.user(userId).settings, copy);
  }

  async close(): Promise<void> {}
}

export function readSeedFile(path: string): SeedFile {
  return JSON.parse(readFileSync(path, "utf8")) as SeedFile;
}

export { DelayedDirectory, type DelayedDirectoryOptions } from "./delayed.ts";
export { RedisDirectory, type RedisDirectoryOptions } from "./redis.ts";
export { MongoDirectory, type MongoDirectoryOptions } from "./mongo.ts";
export {
  CachedDirectory,
  InProcessAppChangeBus,
  RedisAppChangeBus,
  type AppChange,
  type AppChangeBus,
  type CachedDirectoryOptions,
  type CacheStats,
  type RedisAppChangeBusOptions,
} from "./cached.ts";
export { directoryFromEnv, describeDirectoryEnv, type DirectoryFromEnvOptions, type DirectoryEnv } from "./env.ts";
export { seedDirectory, buildSeed, seedUserId, parseAppArg, type SeedSummary, type BuildSeedOptions } from "./seeding.ts";
