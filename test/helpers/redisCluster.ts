/**
 * The cross-process cluster the Redis tests (and bench/drain.ts) share: a throw-away redis-server,
 * a lean protocol-level app (AppSim), optionally the real @mentra/sdk app as a child process, and
 * `startLocalCluster` with a gateway and N pods as separate processes on that Redis, the apps
 * seeded into its directory. Phones made through `phone()` route through the gateway and are
 * disposed by stop(), which also stops the cluster, the apps and Redis, in that order.
 *
 *   const fx = await startRedisCluster({ name: "dr", podEnv: { DRAIN_DEADLINE_MS: "25000" }, real: {} });
 *   after(() => fx.stop());
 *   const p = fx.phone("a@example.com", { reconnect: { baseMs: 250, maxMs: 2000 } });
 *   await fx.admin(`/admin/pods/pod-0/cordon`);
 */
import { AppSim, PhoneSim, gatewayResolver } from "@mentra-cluster/phone-sim";
import { mintUserToken } from "@mentra-cluster/protocol";
import { startLocalCluster, type LocalCluster } from "@mentra-cluster/cli";
import { hashApiKey } from "@mentra-cluster/directory";
import { loadScore, type PodView } from "@mentra-cluster/registry";
import { startRedis, type RedisHandle } from "./redis.ts";
import { startSdkApp, type SdkAppHandle, type StartSdkAppOptions } from "./sdkApp.ts";

/**
 * The machine also runs the load generator and the other processes: placement and readiness caps
 * are not what these tests are about, so they are loosened (a test's podEnv can override them).
 */
const RELAXED_CAPS = { PLACEMENT_LAG_P99_CAP_MS: "2000", ELU_CAP: "1.01", READY_LAG_P99_CAP_MS: "5000" };

export interface RedisClusterOptions {
  /** Short name: secrets, admin token and package names derive from it. */
  name: string;
  pods?: number;
  /** Extra pod environment, on top of the relaxed placement caps. */
  podEnv?: Record<string, string>;
  ticketKey?: string;
  /** Also run the real SDK app (package `com.test.<name>.real`) with these options. */
  real?: Omit<StartSdkAppOptions, "packageName" | "apiKey">;
}

export interface RedisClusterFixture {
  redis: RedisHandle;
  cluster: LocalCluster;
  /** The lean app, package `com.test.<name>.lean`. */
  lean: AppSim;
  leanPkg: string;
  real: SdkAppHandle | null;
  realPkg: string;
  secret: string;
  adminToken: string;
  token(user: string): string;
  /** A phone that resolves its pod through the gateway; reconnect off unless given. */
  phone(user: string, o?: { reconnect?: { baseMs: number; maxMs: number; jitter?: number } | false }): PhoneSim;
  /**
   * Waits until every pod is listed, ready and idle by its own figures (load score < 0.05). A pod
   * that just started reports its start-up stalls in its recent lag p99 and ELU for a while, and
   * power of two choices sends it nobody until those figures fall below the other pods' load.
   */
  settled(timeoutMs?: number): Promise<PodView[]>;
  /** Admin API call: POST (empty JSON body) for /admin/pods/<id>/<action>, GET otherwise. */
  admin(path: string): Promise<Response>;
  stop(): Promise<void>;
}

export async function startRedisCluster(o: RedisClusterOptions): Promise<RedisClusterFixture> {
  const secret = `${o.name}-secret`;
  const adminToken = `${o.name}-admin`;
  const leanPkg = `com.test.${o.name}.lean`;
  const realPkg = `com.test.${o.name}.real`;
  const phones: PhoneSim[] = [];
  const redis = await startRedis();
  let lean: AppSim | null = null;
  let real: SdkAppHandle | null = null;
  let cluster: LocalCluster | null = null;
  const stop = async () => {
    await Promise.all(phones.map((p) => p.dispose().catch(() => undefined)));
    await cluster?.stop();
    await lean?.stop();
    await real?.kill();
    await redis.stop();
  };
  try {
    lean = await new AppSim({ packageName: leanPkg, apiKey: "lean-key", echo: "none" }).start();
    if (o.real) real = await startSdkApp({ ...o.real, packageName: realPkg, apiKey: "real-key" });
    cluster = await startLocalCluster({
      pods: o.pods ?? 3,
      gatewayPort: 0,
      redisUrl: redis.url,
      jwtSecret: secret,
      ...(o.ticketKey ? { ticketKey: o.ticketKey } : {}),
      adminToken,
      logLevel: "warn",
      podEnv: { ...RELAXED_CAPS, ...o.podEnv },
      seed: {
        apps: [
          { packageName: leanPkg, name: leanPkg, publicUrl: lean.publicUrl, hashedApiKey: hashApiKey("lean-key") },
          ...(real ? [{ packageName: realPkg, name: realPkg, publicUrl: real.publicUrl, hashedApiKey: hashApiKey("real-key") }] : []),
        ],
      },
    });
  } catch (err) {
    await stop().catch(() => undefined);
    throw err;
  }
  const c = cluster;
  const token = (user: string) => mintUserToken(user, secret);
  return {
    redis,
    cluster: c,
    lean,
    leanPkg,
    real,
    realPkg,
    secret,
    adminToken,
    token,
    phone(user, po = {}) {
      const t = token(user);
      const p = new PhoneSim({ wsUrl: "ws://unused", restBase: "http://unused", token: t, userId: user, resolveEndpoint: gatewayResolver(c.gatewayUrl, t), reconnect: po.reconnect ?? false });
      phones.push(p);
      return p;
    },
    async settled(timeoutMs = 45_000) {
      const end = Date.now() + timeoutMs;
      let pods: PodView[] = [];
      for (;;) {
        const r = await fetch(`${c.gatewayUrl}/admin/pods`, { headers: { authorization: `Bearer ${adminToken}` } });
        pods = ((await r.json()) as { pods: PodView[] }).pods;
        if (pods.length === c.podIds.length && pods.every((p) => p.state === "ready" && loadScore(p) < 0.05)) return pods;
        if (Date.now() > end) throw new Error(`pods did not settle in ${timeoutMs} ms: ${JSON.stringify(pods.map((p) => ({ podId: p.podId, state: p.state, lagP99Ms: p.lagP99Ms, elu: p.elu, score: loadScore(p) })))}`);
        await new Promise((res) => setTimeout(res, 500));
      }
    },
    admin(path) {
      const post = path.startsWith("/admin/pods/");
      return fetch(`${c.gatewayUrl}${path}`, { method: post ? "POST" : "GET", headers: { authorization: `Bearer ${adminToken}`, ...(post ? { "content-type": "application/json" } : {}) }, body: post ? "{}" : undefined });
    },
    stop,
  };
}
