/** Gateway configuration from the environment. */
export interface GatewayConfig {
  gatewayId: string;
  host: string;
  port: number;
  jwtSecret: string;
  ticketKey: string;
  ticketTtlMs: number;
  adminToken: string | null;
  redisUrl: string | null;
  redisPrefix: string;
  /** Proxy /p/<podId>/… (HTTP and WebSocket) to the pod's internal URL: the local cluster's ingress. */
  proxyPods: boolean;
  logLevel: string;
}

export function loadGatewayConfig(env: NodeJS.ProcessEnv = process.env): GatewayConfig {
  const prod = env.NODE_ENV === "production";
  const need = (name: string, dev: string) => {
    const v = env[name];
    if (v) return v;
    if (prod) throw new Error(`${name} must be set in production`);
    return dev;
  };
  return {
    gatewayId: env.GATEWAY_ID ?? "gateway-0",
    host: env.HOST ?? "127.0.0.1",
    port: Number(env.PORT ?? 7000),
    jwtSecret: env.JWT_SECRET ?? env.AUGMENTOS_AUTH_JWT_SECRET ?? need("JWT_SECRET", "dev-only-secret"),
    ticketKey: need("ROUTE_TICKET_KEY", "dev-only-ticket-key"),
    ticketTtlMs: Number(env.ROUTE_TICKET_TTL_MS ?? 60_000),
    adminToken: env.ADMIN_TOKEN ?? null,
    redisUrl: env.REDIS_URL ?? null,
    redisPrefix: env.REDIS_PREFIX ?? "mentra:",
    proxyPods: env.PROXY_PODS === "true",
    logLevel: env.LOG_LEVEL ?? "info",
  };
}
