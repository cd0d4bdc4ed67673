/**
 * CachedDirectory: the per-pod app cache in front of any Directory.
 *
 * - Apps (public URL, API key hash, permissions) are held in memory. `ready()` subscribes to the
 *   AppChangeBus and then loads every app; it resolves only once both have succeeded, retrying with
 *   backoff meanwhile, so a pod whose cache is cold (slow or failing store) stays not ready.
 * - The whole table is reloaded every `refreshMs` (a safety net: changes made behind the bus's back,
 *   lost pub/sub messages). A failed refresh keeps the last good table.
 * - A change made through any CachedDirectory (upsertApp, deleteApp) is published on the bus; every
 *   other pod re-reads that one app from the store at once (within a second, not at the next refresh).
 * - getApp() is served from memory once warm: zero store round trips per message or audio packet.
 *   An unknown package is looked up in the store once and remembered as absent for `negativeTtlMs`,
 *   so a stream of bogus package names cannot turn into a stream of store queries.
 * - User calls (getOrCreateUser, running-app intent, settings) pass straight through: the store is
 *   the only place that intent lives, so every pod sees the same intent.
 *
 * Reads that race (a full refresh, an invalidation re-read, a local write) are ordered by a sequence
 * number taken when each read starts: a result is applied to a package only if no read that started
 * later has already been applied to it, so a slow stale read can never overwrite a newer record.
 */
import { randomUUID } from "node:crypto";
import { EventEmitter } from "node:events";
import { Redis, type RedisOptions } from "ioredis";
import type { AppRecord, Directory, UserRecord } from "./index.ts";
import { freezeApp, normalizeApp } from "./util.ts";

export interface AppChange {
  packageName: string;
  op: "upsert" | "delete";
  /** Id of the CachedDirectory that made the change (it ignores its own messages). */
  origin: string;
  at: number;
}

/** How app changes reach every pod's cache. */
export interface AppChangeBus {
  readonly kind: string;
  /**
   * Starts delivering changes to `onChange`. Resolves once the subscription is live. `onResync` is
   * called when messages may have been missed (the connection was lost and is back): the cache then
   * reloads everything.
   */
  subscribe(onChange: (change: AppChange) => void, onResync?: () => void): Promise<() => Promise<void>>;
  publish(change: AppChange): Promise<void>;
  close(): Promise<void>;
}

/** One process, many caches (tests; a single pod). Delivery is asynchronous, like a real bus. */
export class InProcessAppChangeBus implements AppChangeBus {
  readonly kind = "in-process";
  private readonly ee = new EventEmitter().setMaxListeners(0);
  async subscribe(onChange: (change: AppChange) => void): Promise<() => Promise<void>> {
    const h = (c: AppChange) => onChange(c);
    this.ee.on("change", h);
    return async () => void this.ee.off("change", h);
  }
  async publish(change: AppChange): Promise<void> {
    setImmediate(() => this.ee.emit("change", { ...change }));
  }
  async close(): Promise<void> {
    this.ee.removeAllListeners();
  }
}

export interface RedisAppChangeBusOptions {
  url?: string;
  /** Connection used to publish (not closed by close()); a new one from `url` otherwise. */
  publisher?: Redis;
  /** Pub/sub channel, default `mentra:dir:app-changes`. */
  channel?: string;
  redisOptions?: RedisOptions;
}

/**
 * Redis pub/sub. The subscriber has its own connection (a subscribed connection can do nothing
 * else); ioredis re-subscribes after a reconnect, and the bus then asks for a resync because
 * anything published while it was away is lost.
 */
export class RedisAppChangeBus implements AppChangeBus {
  readonly kind = "redis";
  readonly channel: string;
  private readonly pub: Redis;
  private readonly sub: Redis;
  private readonly ownsPub: boolean;
  private handlers = new Set<{ onChange: (c: AppChange) => void; onResync?: () => void }>();
  private subscribed: Promise<void> | null = null;
  private lostConnection = false;

  constructor(opts: RedisAppChangeBusOptions) {
    this.channel = opts.channel ?? "mentra:dir:app-changes";
    const options: RedisOptions = { lazyConnect: true, maxRetriesPerRequest: 3, retryStrategy: (t) => Math.min(50 * 2 ** t, 2000), ...opts.redisOptions };
    if (!opts.publisher && !opts.url) throw new Error("RedisAppChangeBus needs a url or a publisher connection");
    if (opts.publisher) {
      this.pub = opts.publisher;
      this.ownsPub = false;
    } else {
      this.pub = new Redis(opts.url!, options);
      this.ownsPub = true;
    }
    this.sub = opts.url ? new Redis(opts.url, options) : opts.publisher!.duplicate({ lazyConnect: true });
    this.pub.on("error", () => undefined);
    this.sub.on("error", () => undefined);
    this.sub.on("close", () => {
      if (this.subscribed) this.lostConnection = true;
    });
    this.sub.on("ready", () => {
      if (!this.lostConnection) return;
      this.lostConnection = false;
      for (const h of this.handlers) h.onResync?.();
    });
    this.sub.on("message", (channel: string, message: string) => {
      if (channel !== this.channel) return;
      let c: AppChange;
      try {
        c = JSON.parse(message) as AppChange;
      } catch {
        return;
      }
      if (!c || typeof c.packageName !== "string") return;
      for (const h of this.handlers) h.onChange(c);
    });
  }

  async subscribe(onChange: (change: AppChange) => void, onResync?: () => void): Promise<() => Promise<void>> {
    const entry = { onChange, onResync };
    this.subscribed ??= (async () => {
      if (this.sub.status === "wait") await this.sub.connect();
      await this.sub.subscribe(this.channel);
    })().catch((err) => {
      this.subscribed = null;
      throw err;
    });
    await this.subscribed;
    this.handlers.add(entry);
    return async () => void this.handlers.delete(entry);
  }

  async publish(change: AppChange): Promise<void> {
    if (this.pub.status === "wait") await this.pub.connect();
    await this.pub.publish(this.channel, JSON.stringify(change));
  }

  async close(): Promise<void> {
    this.handlers.clear();
    const end = async (r: Redis) => {
      if (r.status === "end" || r.status === "wait") return void r.disconnect();
      await r.quit().catch(() => r.disconnect());
    };
    await end(this.sub);
    if (this.ownsPub) await end(this.pub);
  }
}

export interface CachedDirectoryOptions {
  bus?: AppChangeBus;
  /** Close the bus on close() (default true). */
  ownsBus?: boolean;
  /** Close the wrapped store on close() (default true). */
  ownsStore?: boolean;
  /** Full reload period in ms; 0 turns it off. Default 30 s. ±10 % jitter so pods do not all reload at once. */
  refreshMs?: number;
  /** How long a package the store does not know is remembered as absent. Default 5 s. */
  negativeTtlMs?: number;
  /** Warm-up retry backoff. Defaults 200 ms doubling to 5 s. */
  retryMinMs?: number;
  retryMaxMs?: number;
  /** Errors the cache survives (failed warm-up attempt, refresh, publish, re-read). */
  onError?: (err: unknown, what: string) => void;
  /** This cache's id in bus messages. */
  id?: string;
}

export interface CacheStats {
  warm: boolean;
  apps: number;
  hits: number;
  misses: number;
  /** Store round trips made by the cache itself (warm-up, refreshes, re-reads, misses). */
  storeReads: number;
  refreshes: number;
  refreshFailures: number;
  invalidations: number;
  warmupAttempts: number;
  lastRefreshAt: number | null;
}

/** Most entries the table holds; beyond it, unknown packages are not remembered as absent. */
const MAX_SLOTS = 100_000;

interface Slot {
  /** Sequence number of the read (or write) whose result is in the slot. */
  seq: number;
  app: Readonly<AppRecord> | null;
  /** For absent entries learnt from a miss: forget them after this time. */
  expiresAt?: number;
}

export class CachedDirectory implements Directory {
  readonly kind: string;
  readonly id: string;
  private readonly slots = new Map<string, Slot>();
  private seq = 0;
  private isWarm = false;
  private closed = false;
  private warmPromise: Promise<void> | null = null;
  private refreshTimer: NodeJS.Timeout | null = null;
  private refreshing: Promise<void> | null = null;
  private unsubscribe: (() => Promise<void>) | null = null;
  private readonly inflight = new Map<string, Promise<Readonly<AppRecord> | null>>();
  private readonly closeWaiters = new Set<() => void>();
  private readonly opts: Required<Omit<CachedDirectoryOptions, "bus" | "onError" | "id">>;
  private readonly s: Omit<CacheStats, "warm" | "apps"> = {
    hits: 0,
    misses: 0,
    storeReads: 0,
    refreshes: 0,
    refreshFailures: 0,
    invalidations: 0,
    warmupAttempts: 0,
    lastRefreshAt: null,
  };

  constructor(readonly store: Directory, private readonly options: CachedDirectoryOptions = {}) {
    this.kind = `cached:${store.kind}`;
    this.id = options.id ?? randomUUID();
    this.opts = {
      ownsBus: options.ownsBus ?? true,
      ownsStore: options.ownsStore ?? true,
      refreshMs: options.refreshMs ?? 30_000,
      negativeTtlMs: options.negativeTtlMs ?? 5_000,
      retryMinMs: options.retryMinMs ?? 200,
      retryMaxMs: options.retryMaxMs ?? 5_000,
    };
  }

  get bus(): AppChangeBus | undefined {
    return this.options.bus;
  }

  /** True once the app table has been loaded (and the bus subscribed); stays true after. */
  get warm(): boolean {
    return this.isWarm;
  }

  stats(): CacheStats {
    let apps = 0;
    for (const s of this.slots.values()) if (s.app) apps++;
    return { warm: this.isWarm, apps, ...this.s };
  }

  private error(err: unknown, what: string): void {
    try {
      this.options.onError?.(err, what);
    } catch {
      // a failing logger must not break the cache
    }
  }

  // ---------------- warm-up, refresh, invalidation ----------------

  /**
   * Resolves once the cache is warm: bus subscribed, every app loaded. Retries with backoff until
   * then (never rejects because the store is slow or down); rejects only if the cache is closed first.
   */
  ready(): Promise<void> {
    this.warmPromise ??= this.warmUp();
    return this.warmPromise;
  }

  private async warmUp(): Promise<void> {
    let delay = this.opts.retryMinMs;
    for (;;) {
      if (this.closed) throw new Error("directory closed before it was ready");
      this.s.warmupAttempts++;
      try {
        await this.store.ready();
        if (this.options.bus && !this.unsubscribe) {
          this.unsubscribe = await this.options.bus.subscribe(
            (c) => this.onChange(c),
            () => void this.refresh().catch(() => undefined),
          );
        }
        await this.refresh(true);
        break;
      } catch (err) {
        this.error(err, "warm-up");
        await this.pause(delay);
        delay = Math.min(delay * 2, this.opts.retryMaxMs);
      }
    }
    if (this.closed) throw new Error("directory closed before it was ready");
    this.isWarm = true;
    this.scheduleRefresh();
  }

  /** Sleeps, but wakes up at once when the cache is closed. */
  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(t);
        this.closeWaiters.delete(done);
        resolve();
      };
      const t = setTimeout(done, ms);
      this.closeWaiters.add(done);
    });
  }

  private scheduleRefresh(): void {
    if (this.closed || !(this.opts.refreshMs > 0)) return;
    const jitter = 1 + (Math.random() * 0.2 - 0.1);
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = null;
      void this.refresh()
        .catch(() => undefined)
        .finally(() => this.scheduleRefresh());
    }, Math.round(this.opts.refreshMs * jitter));
    this.refreshTimer.unref();
  }

  /** Reloads every app from the store. Concurrent calls share one reload. */
  refresh(throwOnError = false): Promise<void> {
    const run = (this.refreshing ??= (async () => {
      const seq = ++this.seq;
      this.s.storeReads++;
      try {
        const apps = await this.store.listApps();
        const seen = new Set<string>();
        for (const a of apps) {
          seen.add(a.packageName);
          this.apply(a.packageName, seq, a);
        }
        for (const [pkg, slot] of this.slots) if (!seen.has(pkg) && slot.seq < seq) this.slots.delete(pkg);
        this.s.refreshes++;
        this.s.lastRefreshAt = Date.now();
      } catch (err) {
        this.s.refreshFailures++;
        this.error(err, "refresh");
        throw err;
      } finally {
        this.refreshing = null;
      }
    })());
    return throwOnError ? run : run.catch(() => undefined);
  }

  private apply(pkg: string, seq: number, app: AppRecord | null, expiresAt?: number): Readonly<AppRecord> | null {
    const cur = this.slots.get(pkg);
    if (cur && cur.seq > seq) return cur.app;
    const frozen = app ? freezeApp(app) : null;
    this.slots.set(pkg, expiresAt === undefined ? { seq, app: frozen } : { seq, app: frozen, expiresAt });
    return frozen;
  }

  /** Reads one app from the store into the cache (single flight per package). */
  private load(pkg: string, negative: boolean): Promise<Readonly<AppRecord> | null> {
    const existing = this.inflight.get(pkg);
    if (existing) return existing;
    const seq = ++this.seq;
    this.s.storeReads++;
    const p = this.store
      .getApp(pkg)
      .then((app) => {
        // Remember absent packages, but never let a flood of made-up names grow the table without bound.
        if (!app && negative && this.slots.size >= MAX_SLOTS) return null;
        return this.apply(pkg, seq, app, !app && negative ? Date.now() + this.opts.negativeTtlMs : undefined);
      })
      .finally(() => {
        if (this.inflight.get(pkg) === p) this.inflight.delete(pkg);
      });
    this.inflight.set(pkg, p);
    return p;
  }

  private onChange(c: AppChange): void {
    if (this.closed || c.origin === this.id) return;
    this.s.invalidations++;
    // A re-read already in flight may have started before this change: read again after it.
    const prior = this.inflight.get(c.packageName);
    const reread = () =>
      this.load(c.packageName, false).catch((err) => {
        this.error(err, `re-read ${c.packageName}`);
        // Keep serving the old record; the periodic refresh will catch up. Drop a negative entry.
        const slot = this.slots.get(c.packageName);
        if (slot && !slot.app) this.slots.delete(c.packageName);
        return null;
      });
    if (prior) void prior.catch(() => null).then(reread);
    else void reread();
  }

  private async publish(op: AppChange["op"], packageName: string): Promise<void> {
    const bus = this.options.bus;
    if (!bus) return;
    try {
      await bus.publish({ packageName, op, origin: this.id, at: Date.now() });
    } catch (err) {
      // The store has the change; other pods will see it at their next refresh.
      this.error(err, `publish ${packageName}`);
    }
  }

  // ---------------- apps: served from memory ----------------

  async getApp(packageName: string): Promise<AppRecord | null> {
    const slot = this.slots.get(packageName);
    if (slot && (slot.app || slot.expiresAt === undefined || slot.expiresAt > Date.now())) {
      this.s.hits++;
      return slot.app as AppRecord | null;
    }
    this.s.misses++;
    return (await this.load(packageName, true)) as AppRecord | null;
  }

  /** The cached record without any I/O (undefined = not cached). */
  peekApp(packageName: string): AppRecord | null | undefined {
    return this.slots.get(packageName)?.app as AppRecord | null | undefined;
  }

  async listApps(): Promise<AppRecord[]> {
    if (!this.isWarm) {
      this.s.storeReads++;
      return this.store.listApps();
    }
    const out: AppRecord[] = [];
    for (const s of this.slots.values()) if (s.app) out.push(s.app as AppRecord);
    return out;
  }

  async upsertApp(app: AppRecord): Promise<void> {
    const rec = normalizeApp(app);
    await this.store.upsertApp(rec);
    this.apply(rec.packageName, ++this.seq, rec);
    await this.publish("upsert", rec.packageName);
  }

  async deleteApp(packageName: string): Promise<void> {
    await this.store.deleteApp(packageName);
    this.apply(packageName, ++this.seq, null, Date.now() + this.opts.negativeTtlMs);
    await this.publish("delete", packageName);
  }

  // ---------------- users: straight through ----------------

  getOrCreateUser(userId: string): Promise<UserRecord> {
    return this.store.getOrCreateUser(userId);
  }
  installApp(userId: string, packageName: string): Promise<void> {
    return this.store.installApp(userId, packageName);
  }
  addRunningApp(userId: string, packageName: string): Promise<void> {
    return this.store.addRunningApp(userId, packageName);
  }
  removeRunningApp(userId: string, packageName: string): Promise<void> {
    return this.store.removeRunningApp(userId, packageName);
  }
  setUserSettings(userId: string, patch: Record<string, unknown>): Promise<void> {
    return this.store.setUserSettings(userId, patch);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
    for (const w of [...this.closeWaiters]) w();
    // A warm-up still waiting on the store rejects; nobody else may be listening.
    this.warmPromise?.catch(() => undefined);
    const unsub = this.unsubscribe;
    this.unsubscribe = null;
    await unsub?.().catch(() => undefined);
    if (this.options.bus && this.opts.ownsBus) await this.options.bus.close().catch(() => undefined);
    if (this.opts.ownsStore) await this.store.close();
  }
}
