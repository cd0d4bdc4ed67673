/**
 * Redis implementations (ioredis). Commands fail fast when Redis is away (no offline queue, short
 * command timeout) so that callers fall back to their snapshots instead of blocking.
 */
import { Redis, type RedisOptions } from "ioredis";
import type { Assignment, AssignmentStore, PodControl, PodRegistry, PodView } from "./types.ts";
import { defaultControl, type PodRecord } from "./types.ts";

export interface RedisStoreOptions {
  url: string;
  /** Key prefix, so several clusters (or tests) can share one Redis. */
  prefix?: string;
  commandTimeoutMs?: number;
}

export function redisClient(opts: RedisStoreOptions, extra: RedisOptions = {}): Redis {
  return new Redis(opts.url, {
    lazyConnect: false,
    // Queue only while (re)connecting: maxRetriesPerRequest and commandTimeout make calls fail fast when Redis is away.
    enableOfflineQueue: true,
    maxRetriesPerRequest: 1,
    commandTimeout: opts.commandTimeoutMs ?? 1000,
    retryStrategy: (n) => Math.min(1000, 50 * n),
    // Commands issued in the same tick share one write: the routing path is many small GETs.
    enableAutoPipelining: true,
    ...extra,
  });
}

/** Swallows connection errors that ioredis would otherwise emit as unhandled 'error' events. */
function quiet(r: Redis): Redis {
  r.on("error", () => undefined);
  return r;
}

export class RedisPodRegistry implements PodRegistry {
  private readonly r: Redis;
  private readonly p: string;
  constructor(opts: RedisStoreOptions, client?: Redis) {
    this.r = client ?? quiet(redisClient(opts));
    this.p = opts.prefix ?? "mentra:";
  }

  async heartbeat(rec: PodRecord, ttlMs: number): Promise<void> {
    const expiresAt = Date.now() + ttlMs;
    await this.r
      .multi()
      .set(`${this.p}pod:${rec.podId}`, JSON.stringify(rec), "PX", ttlMs)
      .zadd(`${this.p}pods`, expiresAt, rec.podId)
      .exec();
  }

  async remove(podId: string): Promise<void> {
    await this.r.multi().del(`${this.p}pod:${podId}`).zrem(`${this.p}pods`, podId).exec();
  }

  async list(): Promise<PodView[]> {
    const now = Date.now();
    await this.r.zremrangebyscore(`${this.p}pods`, "-inf", now);
    const ids = await this.r.zrange(`${this.p}pods`, 0, -1);
    if (ids.length === 0) return [];
    const [recs, ctls] = await Promise.all([
      this.r.mget(ids.map((id) => `${this.p}pod:${id}`)),
      this.r.mget(ids.map((id) => `${this.p}podctl:${id}`)),
    ]);
    const out: PodView[] = [];
    ids.forEach((id, i) => {
      const rec = recs[i];
      if (!rec) return;
      const control = ctls[i] ? { ...defaultControl(), ...JSON.parse(ctls[i]!) } : defaultControl();
      out.push({ ...(JSON.parse(rec) as PodRecord), control });
    });
    return out.sort((a, b) => a.podId.localeCompare(b.podId));
  }

  async getControl(podId: string): Promise<PodControl> {
    const raw = await this.r.get(`${this.p}podctl:${podId}`);
    return raw ? { ...defaultControl(), ...JSON.parse(raw) } : defaultControl();
  }

  async setControl(podId: string, patch: Partial<Omit<PodControl, "updatedAt">>): Promise<PodControl> {
    const next = { ...(await this.getControl(podId)), ...patch, updatedAt: Date.now() };
    await this.r.set(`${this.p}podctl:${podId}`, JSON.stringify(next), "EX", 7 * 24 * 3600);
    return next;
  }

  async close(): Promise<void> {
    this.r.disconnect();
  }
}

const CLAIM = `
local cur = redis.call('GET', KEYS[1])
if (cur or '') ~= ARGV[2] then return {0, cur or ''} end
local epoch = redis.call('INCR', KEYS[2])
local val = ARGV[1] .. '|' .. epoch
redis.call('SET', KEYS[1], val)
local prefix = ARGV[1] .. '|'
if (not cur) or string.sub(cur, 1, #prefix) ~= prefix then
  redis.call('PUBLISH', KEYS[3], cjson.encode({u = ARGV[3], v = val}))
end
return {1, val}
`;
const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

function parse(userId: string, raw: string | null | undefined): Assignment | null {
  if (!raw) return null;
  const bar = raw.lastIndexOf("|");
  return { userId, podId: raw.slice(0, bar), epoch: Number(raw.slice(bar + 1)) };
}

export class RedisAssignmentStore implements AssignmentStore {
  private readonly r: Redis;
  private sub: Redis | null = null;
  private readonly p: string;
  private readonly listeners = new Set<(a: Assignment) => void>();

  constructor(private readonly opts: RedisStoreOptions, client?: Redis) {
    this.r = client ?? quiet(redisClient(opts));
    this.p = opts.prefix ?? "mentra:";
    this.r.defineCommand("mentraClaim", { numberOfKeys: 3, lua: CLAIM });
    this.r.defineCommand("mentraRelease", { numberOfKeys: 1, lua: RELEASE });
  }

  private key(userId: string): string {
    return `${this.p}assign:${userId}`;
  }

  async get(userId: string): Promise<Assignment | null> {
    return parse(userId, await this.r.get(this.key(userId)));
  }

  async getMany(userIds: string[]): Promise<(Assignment | null)[]> {
    if (userIds.length === 0) return [];
    const raws = await this.r.mget(userIds.map((u) => this.key(u)));
    return raws.map((raw, i) => parse(userIds[i]!, raw));
  }

  async claim(userId: string, podId: string, expected: Assignment | null): Promise<{ won: boolean; assignment: Assignment | null }> {
    if (podId.includes("|")) throw new Error("pod ids cannot contain '|'");
    const exp = expected ? `${expected.podId}|${expected.epoch}` : "";
    const [won, val] = (await (this.r as unknown as { mentraClaim: (...a: string[]) => Promise<[number, string]> }).mentraClaim(
      this.key(userId),
      `${this.p}epoch`,
      `${this.p}owner-changed`,
      podId,
      exp,
      userId,
    )) as [number, string];
    return { won: won === 1, assignment: parse(userId, val) };
  }

  async release(userId: string, podId: string, epoch: number): Promise<boolean> {
    const n = await (this.r as unknown as { mentraRelease: (...a: string[]) => Promise<number> }).mentraRelease(this.key(userId), `${podId}|${epoch}`);
    return n === 1;
  }

  onOwnerChange(fn: (a: Assignment) => void): () => void {
    this.listeners.add(fn);
    if (!this.sub) {
      // Subscriber connections must queue while connecting, unlike the command connection.
      this.sub = quiet(redisClient(this.opts, { enableOfflineQueue: true, maxRetriesPerRequest: null, commandTimeout: undefined }));
      const channel = `${this.p}owner-changed`;
      void this.sub.subscribe(channel).catch(() => undefined);
      this.sub.on("message", (_ch: string, msg: string) => {
        try {
          const { u, v } = JSON.parse(msg) as { u: string; v: string };
          const a = parse(u, v);
          if (a) for (const l of this.listeners) l(a);
        } catch {
          /* ignore malformed */
        }
      });
    }
    return () => this.listeners.delete(fn);
  }

  async close(): Promise<void> {
    this.listeners.clear();
    this.sub?.disconnect();
    this.r.disconnect();
  }
}
