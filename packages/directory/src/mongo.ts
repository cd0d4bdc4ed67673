/**
 * The production directory on MongoDB (official `mongodb` driver).
 *
 * Collections (names configurable). Documents are found by `email` and `packageName` (unique
 * indexes), never by _id, so collections whose _id is an ObjectId (the cloud's) work as they are:
 *   users  { email: <lower-cased>, installedApps: [{ packageName, installedDate }],
 *            runningApps: [pkg], settings: { key: value }, createdAt, updatedAt }
 *   apps   { packageName, name, publicUrl, hashedApiKey (SHA-256 hex), type, permissions: [string],
 *            createdAt, updatedAt }
 * Reads also accept installedApps as plain strings, permissions as { type } objects and the type
 * as `appType`.
 *
 * Every change is made of atomic update operators on the fields it changes ($addToSet, $pull, $set
 * of `settings.<key>`, a conditional $push), upserting the user on first sight with $setOnInsert —
 * never a read-modify-write of a whole document (the production incident: 44,997 lost updates in 4 hours from racing
 * full-document saves). Indexes are created in ready().
 *
 * Setting keys are stored escaped (`%` → %25, `.` → %2E, `$` → %24, "" → %) so a key can never
 * address a nested path or an operator, or be an empty field name; they are unescaped on read.
 */
import { MongoClient, MongoServerError, type Collection, type Db, type MongoClientOptions } from "mongodb";
import type { AppRecord, AppType, Directory, UserRecord } from "./index.ts";
import { normalizeApp, normalizeUserId } from "./util.ts";

export interface MongoDirectoryOptions {
  /** mongodb:// or mongodb+srv:// URL; ignored when `client` is given. */
  url?: string;
  /** An existing client (not closed by close()). */
  client?: MongoClient;
  /** Database name; default: the URL's path, else "mentra". */
  dbName?: string;
  usersCollection?: string;
  appsCollection?: string;
  clientOptions?: MongoClientOptions;
}

interface InstalledApp {
  packageName: string;
  installedDate?: Date;
}

interface UserDoc {
  email: string;
  installedApps: (InstalledApp | string)[];
  runningApps: string[];
  settings: Record<string, unknown>;
  createdAt: Date;
  updatedAt: Date;
}

interface AppDoc {
  packageName: string;
  name: string;
  publicUrl: string;
  hashedApiKey: string;
  type?: AppType;
  appType?: string;
  permissions: (string | { type?: string })[];
  createdAt: Date;
  updatedAt: Date;
}

const DUPLICATE_KEY = 11000;

/** Reversible escape of a setting key into a safe field name: `%`, `.` and `$` become %25, %2E, %24; "" becomes "%". */
export function encodeSettingKey(key: string): string {
  if (key === "") return "%";
  return key.replace(/[%.$]/g, (c) => (c === "%" ? "%25" : c === "." ? "%2E" : "%24"));
}
export function decodeSettingKey(field: string): string {
  if (field === "%") return "";
  return field.replace(/%(25|2E|24)/g, (_m, h: string) => (h === "25" ? "%" : h === "2E" ? "." : "$"));
}

function dbNameFromUrl(url: string | undefined): string | null {
  if (!url) return null;
  const m = /^mongodb(?:\+srv)?:\/\/[^/]+\/([^?]+)/.exec(url);
  return m?.[1] ? decodeURIComponent(m[1]) : null;
}

export class MongoDirectory implements Directory {
  readonly kind = "mongodb";
  readonly client: MongoClient;
  readonly db: Db;
  readonly users: Collection<UserDoc>;
  readonly apps: Collection<AppDoc>;
  private readonly owned: boolean;
  private readyPromise: Promise<void> | null = null;

  constructor(opts: MongoDirectoryOptions = {}) {
    if (opts.client) {
      this.client = opts.client;
      this.owned = false;
    } else {
      if (!opts.url) throw new Error("MongoDirectory needs a url or a client");
      this.client = new MongoClient(opts.url, {
        serverSelectionTimeoutMS: 5_000,
        connectTimeoutMS: 5_000,
        retryWrites: true,
        retryReads: true,
        ...opts.clientOptions,
      });
      this.owned = true;
    }
    this.db = this.client.db(opts.dbName ?? dbNameFromUrl(opts.url) ?? "mentra");
    this.users = this.db.collection<UserDoc>(opts.usersCollection ?? "users");
    this.apps = this.db.collection<AppDoc>(opts.appsCollection ?? "apps");
  }

  /**
   * Connects and creates the indexes (idempotent; default index names, as Mongoose would create
   * them). An equivalent index that already exists under other options is left alone. A failure can
   * be retried by calling again.
   */
  ready(): Promise<void> {
    this.readyPromise ??= (async () => {
      await this.client.connect();
      const ensure = (c: { createIndex: Collection["createIndex"] }, key: Record<string, 1>, unique = false) =>
        c.createIndex(key, unique ? { unique: true } : {}).catch((err: unknown) => {
          // 85 IndexOptionsConflict, 86 IndexKeySpecsConflict: the collection already has this index.
          if (err instanceof MongoServerError && (err.code === 85 || err.code === 86)) return;
          throw err;
        });
      await Promise.all([
        ensure(this.users, { email: 1 }, true),
        ensure(this.users, { runningApps: 1 }),
        ensure(this.users, { "installedApps.packageName": 1 }),
        ensure(this.apps, { packageName: 1 }, true),
        ensure(this.apps, { updatedAt: 1 }),
      ]);
    })().catch((err) => {
      this.readyPromise = null;
      throw err;
    });
    return this.readyPromise;
  }

  /** Fields a new user document gets, except the one the update itself sets (email comes from the filter). */
  private onInsert(except?: "installedApps" | "runningApps" | "settings"): Partial<UserDoc> {
    const base: Partial<UserDoc> = { installedApps: [], runningApps: [], settings: {}, createdAt: new Date() };
    if (except) delete base[except];
    return base;
  }

  /**
   * Two concurrent upserts of a new user (or app) can race on the unique index; the loser gets
   * E11000 and, the document now existing, succeeds on retry (the server retries most of these itself).
   */
  private async retryDup<T>(f: () => Promise<T>): Promise<T> {
    for (let i = 0; ; i++) {
      try {
        return await f();
      } catch (err) {
        if (i < 3 && err instanceof MongoServerError && err.code === DUPLICATE_KEY) continue;
        throw err;
      }
    }
  }

  async getOrCreateUser(userId: string): Promise<UserRecord> {
    const email = normalizeUserId(userId);
    const doc = await this.retryDup(() =>
      this.users.findOneAndUpdate(
        { email },
        { $setOnInsert: { ...this.onInsert(), updatedAt: new Date() } },
        { upsert: true, returnDocument: "after" },
      ),
    );
    if (!doc) throw new Error(`user ${email} could not be created`);
    const settings: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(doc.settings ?? {})) settings[decodeSettingKey(k)] = v;
    const installed = (doc.installedApps ?? []).map((x) => (typeof x === "string" ? x : x?.packageName)).filter((x): x is string => typeof x === "string" && x.length > 0);
    return { id: email, installedApps: [...new Set(installed)], runningApps: [...new Set(doc.runningApps ?? [])], settings };
  }

  async getApp(packageName: string): Promise<AppRecord | null> {
    const d = await this.apps.findOne({ packageName });
    return d ? fromAppDoc(d) : null;
  }

  async listApps(): Promise<AppRecord[]> {
    const docs = await this.apps.find({}).toArray();
    return docs.map(fromAppDoc);
  }

  async upsertApp(app: AppRecord): Promise<void> {
    const a = normalizeApp(app);
    const now = new Date();
    await this.retryDup(() =>
      this.apps.updateOne(
        { packageName: a.packageName },
        {
          $set: { name: a.name, publicUrl: a.publicUrl, hashedApiKey: a.hashedApiKey, type: a.type, permissions: a.permissions, updatedAt: now },
          $setOnInsert: { createdAt: now },
        },
        { upsert: true },
      ),
    );
  }

  async deleteApp(packageName: string): Promise<void> {
    await this.apps.deleteOne({ packageName });
  }

  async installApp(userId: string, packageName: string): Promise<void> {
    const email = normalizeUserId(userId);
    // Two atomic steps, no read in between: make sure the user exists, then push the entry only if
    // no entry for the package is there (the filter and the push are one atomic document update).
    await this.retryDup(() => this.users.updateOne({ email }, { $setOnInsert: { ...this.onInsert(), updatedAt: new Date() } }, { upsert: true }));
    await this.users.updateOne(
      { email, "installedApps.packageName": { $ne: packageName }, installedApps: { $ne: packageName } },
      { $push: { installedApps: { packageName, installedDate: new Date() } }, $set: { updatedAt: new Date() } },
    );
  }

  async addRunningApp(userId: string, packageName: string): Promise<void> {
    const email = normalizeUserId(userId);
    await this.retryDup(() =>
      this.users.updateOne(
        { email },
        { $addToSet: { runningApps: packageName }, $set: { updatedAt: new Date() }, $setOnInsert: this.onInsert("runningApps") },
        { upsert: true },
      ),
    );
  }

  async removeRunningApp(userId: string, packageName: string): Promise<void> {
    const email = normalizeUserId(userId);
    await this.users.updateOne({ email }, { $pull: { runningApps: packageName }, $set: { updatedAt: new Date() } });
  }

  async setUserSettings(userId: string, patch: Record<string, unknown>): Promise<void> {
    const email = normalizeUserId(userId);
    const set: Record<string, unknown> = { updatedAt: new Date() };
    for (const [k, v] of Object.entries(patch)) {
      if (v !== undefined) set[`settings.${encodeSettingKey(k)}`] = v;
    }
    await this.retryDup(() => this.users.updateOne({ email }, { $set: set, $setOnInsert: this.onInsert("settings") }, { upsert: true }));
  }

  async close(): Promise<void> {
    if (this.owned) await this.client.close();
  }
}

const APP_TYPES: ReadonlySet<string> = new Set(["standard", "background", "system"]);

function fromAppDoc(d: AppDoc): AppRecord {
  const type = d.type ?? d.appType;
  return {
    packageName: d.packageName,
    name: d.name || d.packageName,
    publicUrl: d.publicUrl ?? "",
    hashedApiKey: d.hashedApiKey ?? "",
    type: type && APP_TYPES.has(type) ? (type as AppType) : "standard",
    permissions: (d.permissions ?? []).map((p) => (typeof p === "string" ? p : p?.type)).filter((p): p is string => typeof p === "string"),
  };
}
