/** Pod configuration from the environment. Secrets are never logged. */
import { hostname } from "node:os";

export interface PodConfig {
  podId: string;
  host: string;
  port: number;
  udpBindHost: string;
  udpPort: number;
  /** Host advertised to phones for UDP audio; null disables UDP in the ack. */
  udpAdvertiseHost: string | null;
  /** Public HTTP base URL of this pod (phones' REST, and the base of the app-ws URL). Null = derived from the bound address. */
  publicUrl: string | null;
  jwtSecret: string;
  adminToken: string | null;
  env: string;
  region: string;
  version: string;
  logLevel: string;
  directorySeed: string | null;
  /** Event-loop lag sampling interval (the seed's 2 s; benchmarks use shorter). */
  lagSampleIntervalMs: number;
  /** Export metrics at all (benchmarks measure the instrumentation's own cost with it off). */
  metricsEnabled: boolean;
  /** Readiness goes false while the recent lag p99 is above this. */
  readyLagP99CapMs: number;
  /** Cluster mode: the pod registers itself and checks ownership in Redis (or an injected registry). */
  redisUrl: string | null;
  redisPrefix: string;
  /** Key shared with the gateway for route tickets. */
  routeTicketKey: string;
  /** e.g. https://cloud.example.com/p/{podId}; PUBLIC_URL wins when set. */
  publicUrlTemplate: string | null;
  /**
   * Host other processes (the gateway's /p/<podId>/ proxy) reach this pod at, registered as its
   * internal URL. Null: HOST, or the first non-internal IPv4 address when bound to 0.0.0.0.
   */
  internalHost: string | null;
  /** Placement caps advertised in the registry. */
  maxSessions: number;
  placementLagP99CapMs: number;
  eluCap: number;
  /** New sessions accepted per second (503 + Retry-After above it). */
  maxNewSessionsPerS: number;
  /** Drain deadline for SIGTERM and operator drains without one; keep it under the grace period. */
  drainDeadlineMs: number;
}

export const DEV_JWT_SECRET = "dev-only-secret";

export function loadConfig(env: NodeJS.ProcessEnv = process.env): PodConfig {
  const nodeEnv = env.NODE_ENV ?? "development";
  const jwtSecret = env.JWT_SECRET ?? env.AUGMENTOS_AUTH_JWT_SECRET ?? (nodeEnv === "production" ? "" : DEV_JWT_SECRET);
  if (!jwtSecret) throw new Error("JWT_SECRET (or AUGMENTOS_AUTH_JWT_SECRET) must be set in production");
  if (env.REDIS_URL && nodeEnv === "production" && !env.ROUTE_TICKET_KEY) throw new Error("ROUTE_TICKET_KEY must be set in production");
  const num = (v: string | undefined, d: number) => {
    if (v === undefined || v === "") return d;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`invalid port: ${v}`);
    return n;
  };
  return {
    podId: env.POD_ID ?? `pod-${hostname()}`,
    host: env.HOST ?? "127.0.0.1",
    port: num(env.PORT, 7002),
    udpBindHost: env.UDP_BIND_HOST ?? env.HOST ?? "127.0.0.1",
    udpPort: num(env.UDP_PORT, 8000),
    udpAdvertiseHost: env.UDP_HOST ?? "127.0.0.1",
    publicUrl: env.PUBLIC_URL ? env.PUBLIC_URL.replace(/\/+$/, "") : null,
    jwtSecret,
    adminToken: env.ADMIN_TOKEN ?? null,
    env: nodeEnv,
    region: env.REGION ?? "local",
    version: env.VERSION ?? "0.1.0",
    logLevel: env.LOG_LEVEL ?? "info",
    directorySeed: env.DIRECTORY_SEED ?? null,
    lagSampleIntervalMs: Number(env.LAG_SAMPLE_INTERVAL_MS ?? 2000) || 2000,
    metricsEnabled: env.METRICS_ENABLED !== "false",
    readyLagP99CapMs: Number(env.READY_LAG_P99_CAP_MS ?? 200) || 200,
    redisUrl: env.REDIS_URL || null,
    redisPrefix: env.REDIS_PREFIX ?? "mentra:",
    routeTicketKey: env.ROUTE_TICKET_KEY ?? (nodeEnv === "production" ? "" : "dev-only-ticket-key"),
    publicUrlTemplate: env.PUBLIC_URL_TEMPLATE ?? null,
    internalHost: env.INTERNAL_HOST || null,
    maxSessions: Number(env.MAX_SESSIONS ?? 1000) || 1000,
    placementLagP99CapMs: Number(env.PLACEMENT_LAG_P99_CAP_MS ?? 100) || 100,
    eluCap: Number(env.ELU_CAP ?? 0.9) || 0.9,
    maxNewSessionsPerS: Number(env.MAX_NEW_SESSIONS_PER_S ?? 100) || 100,
    drainDeadlineMs: Number(env.DRAIN_DEADLINE_MS ?? 25_000) || 25_000,
  };
}
