/** What every manager of a UserSession shares: the pod's clock, metrics, logger, directory and config. */
import type { Logger } from "pino";
import type { Directory } from "@mentra-cluster/directory";
import type { PodMetrics } from "@mentra-cluster/metrics";
import type { Clock } from "./util/clock.ts";
import type { TranscriptionProvider } from "./transcription/provider.ts";
import type { UdpAudioServer } from "./udp/UdpAudioServer.ts";
import type { ClusterAgent } from "./cluster/agent.ts";

export interface PodTimings {
  phonePingMs: number;
  phoneGraceMs: number;
  appGraceMs: number;
  appConnectTimeoutMs: number;
  webhookTimeoutMs: number;
  webhookAttempts: number;
  webhookBackoffMs: number;
  emptySubscriptionIgnoreMs: number;
  displayThrottleMs: number;
  bootWindowMs: number;
  appInitTimeoutMs: number;
  /** How long a pod that lost a user keeps app sockets open for the SDK's hand-off. */
  handoffWaitMs: number;
  /**
   * After a transcription stream fails for good (refused key, provider down past its retries),
   * no new stream opens for this long, doubling per failure in a row up to the max; audio in
   * between is dropped and counted. Without it every 40 ms packet would open a new connection.
   */
  transcriptionRetryMs: number;
  transcriptionRetryMaxMs: number;
}

export const DEFAULT_TIMINGS: PodTimings = {
  phonePingMs: 2000,
  phoneGraceMs: 60_000,
  appGraceMs: 5000,
  appConnectTimeoutMs: 5000,
  webhookTimeoutMs: 10_000,
  webhookAttempts: 2,
  webhookBackoffMs: 1000,
  emptySubscriptionIgnoreMs: 8000,
  displayThrottleMs: 300,
  bootWindowMs: 1500,
  appInitTimeoutMs: 5000,
  handoffWaitMs: 15_000,
  transcriptionRetryMs: 2000,
  transcriptionRetryMaxMs: 60_000,
};

export interface PodContext {
  podId: string;
  env: string;
  clock: Clock;
  metrics: PodMetrics;
  log: Logger;
  directory: Directory;
  transcription: TranscriptionProvider;
  udp: UdpAudioServer;
  timings: PodTimings;
  /** This pod's own public app-ws URL, sent in every webhook. */
  appWsUrl(): string;
  /** This pod's advertised UDP endpoint, sent in connection_ack. */
  udpEndpoint(): { host: string; port: number } | null;
  /** App sockets of users that moved away, kept open until the SDK hands them over. */
  handoffSockets: Set<import("ws").WebSocket>;
  /** Cluster membership (registry, ownership); null for a standalone pod. */
  cluster: ClusterAgent | null;
  /** Outbound HTTP for webhooks (injectable for tests). */
  fetch: typeof fetch;
}
