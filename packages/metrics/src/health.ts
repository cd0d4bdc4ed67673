/** HTTP status classes counted by `mentra_http_requests_total{status}`. */
export type HttpStatusClass = "2xx" | "3xx" | "4xx" | "5xx";

/**
 * The seed cloud's `GET /health` document (protocol.md §4): top-level summary fields, then the
 * MetricsService JSON. MB values are rounded to whole MB; lag avg/p99 to 2 decimal places.
 */
export interface HealthDocument {
  status: "ok";
  /** ISO 8601. */
  timestamp: string;
  heapUsedMB: number;
  heapTotalMB: number;
  rssMB: number;
  externalMB: number;
  /** Latest lag sample, same as `eventLoop.lagMs`. */
  eventLoopLagMs: number;
  /** Same as `sessions.userSessions`. */
  activeSessions: number;
  /** Whole seconds. */
  uptimeSeconds: number;
  eventLoop: {
    lagMs: number;
    lagAvgMs: number;
    lagP99Ms: number;
    samples: number;
  };
  sessions: {
    userSessions: number;
    miniappSessions: number;
  };
  throughput: {
    wsClientMessagesIn: number;
    wsClientMessagesOut: number;
    wsMiniappMessagesIn: number;
    wsMiniappMessagesOut: number;
    httpRequests: Record<HttpStatusClass, number>;
  };
  udp: {
    received: number;
    dropped: number;
    pings: number;
    sessions: number;
    decrypted: number;
    decryptionFailures: number;
  };
  /** Bytes, from process.memoryUsage(). */
  memory: {
    rss: number;
    heapTotal: number;
    heapUsed: number;
    external: number;
    arrayBuffers: number;
  };
  /** Seconds, unrounded. */
  uptime: number;
}
