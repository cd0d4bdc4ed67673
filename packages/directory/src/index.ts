/**
 * The directory of users and apps behind one interface. The embedded store is the default for a
 * single pod and for tests; the MongoDB adapter implements the same interface later.
 * Every mutation is a single atomic change on one field (never a whole-document save), so two
 * writers racing on one user cannot lose each other's updates.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";

export type AppType = "standard" | "background" | "system";

export interface UserRecord {
  id: string;
  installedApps: string[];
  /** What the user wants running (intent). A pod that loses a user never removes entries. */
  runningApps: string[];
  settings: Record<string, unknown>;
}

export interface AppRecord {
  packageName: string;
  name: string;
  publicUrl: string;
  /** SHA-256 hex of the API key; the plain key is never stored. */
  hashedApiKey: string;
  type: AppType;
  permissions: string[];
}

export interface Directory {
  readonly kind: string;
  /** Resolves once the store can answer (connections open, indexes built). */
  ready(): Promise<void>;
  /** Returns the user, creating an empty record on first sight (as the cloud does at login). */
  getOrCreateUser(userId: string): Promise<UserRecord>;
  getApp(packageName: string): Promise<AppRecord | null>;
  listApps(): Promise<AppRecord[]>;
  upsertApp(app: AppRecord): Promise<void>;
  installApp(userId: string, packageName: string): Promise<void>;
  addRunningApp(userId: string, packageName: string): Promise<void>;
  removeRunningApp(userId: string, packageName: string): Promise<void>;
  setUserSettings(userId: string, patch: Record<string, unknown>): Promise<void>;
  close(): Promise<void>;
}

export function hashApiKey(apiKey: string): string {
  return createHash("sha256").update(apiKey, "utf8").digest("hex");
}

/** Constant-time comparison of a presented API key against the stored SHA-256 hex hash. */
export function verifyApiKey(apiKey: unknown, hashedApiKey: string): boolean {
  if (typeof apiKey !== "string" || apiKey.length === 0) return false;
  const given = createHash("sha256").update(apiKey, "utf8").digest();
  const stored = Buffer.from(hashedApiKey, "hex");
  return stored.length === given.length && timingSafeEqual(given, stored);
}

export interface SeedFile {
  users?: { id: string; installedApps?: string[]; runningApps?: string[]; settings?: Record<string, unknown> }[];
  apps?: (Omit<AppRecord, "hashedApiKey" | "permissions" | "type" | "name"> & {
    name?: string;
    type?: AppType;
    permissions?: string[];
    hashedApiKey?: string;
    /** Plain key in a seed file is hashed on load and never kept. */
    apiKey?: string;
  })[];
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
    return new EmbeddedDirectory({ ...opts, seed: JSON.parse(readFileSync(path, "utf8")) as SeedFile });
  }

  load(seed: SeedFile): void {
    for (const a of seed.apps ?? []) {
      const hashedApiKey = a.hashedApiKey ?? (a.apiKey ? hashApiKey(a.apiKey) : "");
      if (!hashedApiKey) throw new Error(`seed app ${a.packageName} has neither apiKey nor hashedApiKey`);
      this.apps.set(a.packageName, {
        packageName: a.packageName,
        name: a.name ?? a.packageName,
        publicUrl: a.publicUrl.replace(/\/+$/, ""),
        hashedApiKey,
        type: a.type ?? "standard",
        permissions: a.permissions ?? [],
      });
    }
    for (const u of seed.users ?? []) {
      const id = u.id.toLowerCase();
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
    const id = userId.toLowerCase();
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
    return a ? { ...a, permissions: [...a.permissions] } : null;
  }

  async listApps(): Promise<AppRecord[]> {
    await this.rt();
    return [...this.apps.values()].map((a) => ({ ...a, permissions: [...a.permissions] }));
  }

  async upsertApp(app: AppRecord): Promise<void> {
    await this.rt();
    this.apps.set(app.packageName, { ...app, publicUrl: app.publicUrl.replace(/\/+$/, ""), permissions: [...app.permissions] });
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
    await this.rt();
    Object.assign(this.user(userId).settings, structuredClone(patch));
  }

  async close(): Promise<void> {}
}
