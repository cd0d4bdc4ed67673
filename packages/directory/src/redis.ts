/**
 * The directory on Redis (ioredis): what every pod of a multi-process cluster without MongoDB shares
 * (the local REDIS_URL cluster, the cross-process tests).
 *
 * Keys (prefix configurable, default `mentra:dir:`; the `{…}` hash tag keeps one user's keys in one
 * Redis Cluster slot so a MULTI over them is legal there too):
 *   <prefix>user:{<id>}            hash   id, createdAt (the user exists once this exists)
 *   <prefix>user:{<id>}:installed  set    package names
 *   <prefix>user:{<id>}:running    set    running-app intent
 *   <prefix>user:{<id>}:settings   hash   setting key → JSON value
 *   <prefix>app:<pkg>              hash   packageName, name, publicUrl, hashedApiKey, type, permissions (JSON)
 *   <prefix>apps                   set    every package name
 *
 * Every mutation is one MULTI of single-key atomic commands (HSETNX, SADD, SREM, HSET): there is no
 * read-modify-write anywhere, so any number of pods can write the same user at once.
 */
import { Redis, type RedisOptions } from "ioredis";
import type { AppRecord, AppType, Directory, UserRecord } from "./index.ts";
import { normalizeApp, normalizeUserId } from "./util.ts";

export interface RedisDirectoryOptions {
  /** redis:// URL; ignored when `client` is given. */
  url?: string;
  /** An existing connection (not closed by close()). */
  client?: Redis;
  /** Key prefix, default `mentra:dir:`. Tests pass a unique one to isolate themselves. */
  prefix?: string;
  redisOptions?: RedisOptions;
}

type ExecResult = [error: Error | null, result: unknown][] | null;

function unwrap(res: ExecResult): unknown[] {
  if (!res) throw new Error("redis transaction aborted");
  return res.map(([err, v]) => {
    if (err) throw err;
    return v;
  });
}

export class RedisDirectory implements Directory {
  readonly kind = "redis";
  readonly prefix: string;
  readonly redis: Redis;
  private readonly owned: boolean;

  constructor(opts: RedisDirectoryOptions = {}) {
    this.prefix = opts.prefix ?? "mentra:dir:";
    if (opts.client) {
      this.redis = opts.client;
      this.owned = false;
    } else {
      const options: RedisOptions = {
        lazyConnect: true,
        // A directory call during an outage fails after a few reconnect attempts instead of hanging.
        maxRetriesPerRequest: 3,
        retryStrategy: (times) => Math.min(50 * 2 ** times, 2000),
        ...opts.redisOptions,
      };
      this.redis = opts.url ? new Redis(opts.url, options) : new Redis(options);
      this.owned = true;
    }
    // Errors surface on the calls; an unhandled 'error' event would crash the process.
    this.redis.on("error", () => undefined);
  }

  private userKey(id: string): string {
    return `${this.prefix}user:{${id}}`;
  }
  private appKey(pkg: string): string {
    return `${this.prefix}app:${pkg}`;
  }
  private get appsKey(): string {
    return `${this.prefix}apps`;
  }

  async ready(): Promise<void> {
    if (this.redis.status === "wait") await this.redis.connect();
    await this.redis.ping();
  }

  /** A MULTI that first makes sure the user record exists (HSETNX is atomic and idempotent). */
  private userTx(id: string) {
    const k = this.userKey(id);
    return this.redis.multi().hsetnx(k, "id", id).hsetnx(k, "createdAt", String(Date.now()));
  }

  async getOrCreateUser(userId: string): Promise<UserRecord> {
    const id = normalizeUserId(userId);
    const k = this.userKey(id);
    const r = unwrap(await this.userTx(id).smembers(`${k}:installed`).smembers(`${k}:running`).hgetall(`${k}:settings`).exec());
    const settings: Record<string, unknown> = {};
    for (const [field, json] of Object.entries((r[4] ?? {}) as Record<string, string>)) settings[field] = JSON.parse(json);
    return { id, installedApps: (r[2] as string[]).sort(), runningApps: (r[3] as string[]).sort(), settings };
  }

  async getApp(packageName: string): Promise<AppRecord | null> {
    return decodeApp(await this.redis.hgetall(this.appKey(packageName)));
  }

  async listApps(): Promise<AppRecord[]> {
    const pkgs = await this.redis.smembers(this.appsKey);
    if (pkgs.length === 0) return [];
    const p = this.redis.pipeline();
    for (const pkg of pkgs) p.hgetall(this.appKey(pkg));
    const out: AppRecord[] = [];
    for (const h of unwrap(await p.exec())) {
      const a = decodeApp(h as Record<string, string>);
      if (a) out.push(a);
    }
    return out;
  }

  async upsertApp(app: AppRecord): Promise<void> {
    const a = normalizeApp(app);
    const k = this.appKey(a.packageName);
    // DEL + HSET in one MULTI: readers see the old record or the new one, never a mix.
    unwrap(
      await this.redis
        .multi()
        .del(k)
        .hset(k, {
          packageName: a.packageName,
          name: a.name,
          publicUrl: a.publicUrl,
          hashedApiKey: a.hashedApiKey,
          type: a.type,
          permissions: JSON.stringify(a.permissions),
          updatedAt: String(Date.now()),
        })
        .sadd(this.appsKey, a.packageName)
        .exec(),
    );
  }

  async deleteApp(packageName: string): Promise<void> {
    unwrap(await this.redis.multi().del(this.appKey(packageName)).srem(this.appsKey, packageName).exec());
  }

  async installApp(userId: string, packageName: string): Promise<void> {
    const id = normalizeUserId(userId);
    unwrap(await this.userTx(id).sadd(`${this.userKey(id)}:installed`, packageName).exec());
  }

  async addRunningApp(userId: string, packageName: string): Promise<void> {
    const id = normalizeUserId(userId);
    unwrap(await this.userTx(id).sadd(`${this.userKey(id)}:running`, packageName).exec());
  }

  async removeRunningApp(userId: string, packageName: string): Promise<void> {
    const id = normalizeUserId(userId);
    unwrap(await this.userTx(id).srem(`${this.userKey(id)}:running`, packageName).exec());
  }

  async setUserSettings(userId: string, patch: Record<string, unknown>): Promise<void> {
    const id = normalizeUserId(userId);
    const fields: Record<string, string> = {};
    for (const [key, value] of Object.entries(patch)) {
      if (value !== undefined) fields[key] = JSON.stringify(value);
    }
    const tx = this.userTx(id);
    if (Object.keys(fields).length > 0) tx.hset(`${this.userKey(id)}:settings`, fields);
    unwrap(await tx.exec());
  }

  async close(): Promise<void> {
    if (!this.owned) return;
    if (this.redis.status === "end" || this.redis.status === "wait") {
      this.redis.disconnect();
      return;
    }
    await this.redis.quit().catch(() => this.redis.disconnect());
  }
}

function decodeApp(h: Record<string, string> | null | undefined): AppRecord | null {
  if (!h || !h.packageName) return null;
  let permissions: string[] = [];
  try {
    const p = JSON.parse(h.permissions ?? "[]");
    if (Array.isArray(p)) permissions = p.map(String);
  } catch {
    permissions = [];
  }
  return {
    packageName: h.packageName,
    name: h.name || h.packageName,
    publicUrl: h.publicUrl ?? "",
    hashedApiKey: h.hashedApiKey ?? "",
    type: (h.type as AppType) || "standard",
    permissions,
  };
}
