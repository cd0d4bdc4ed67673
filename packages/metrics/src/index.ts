export {
  PodMetrics,
  LAG_WARNING_THRESHOLD_MS,
  LAG_WARNING_COOLDOWN_MS,
  DEFAULT_LAG_SAMPLE_INTERVAL_MS,
  DEFAULT_LAG_WINDOW,
  EVENT_LOOP_DELAY_BUCKETS_SECONDS,
} from "./pod-metrics.ts";
export type { PodMetricsOptions, LagState, WrongPodTraffic, WebhookKind } from "./pod-metrics.ts";
export type { HealthDocument, HttpStatusClass } from "./health.ts";
export { percentile, RollingWindow } from "./window.ts";
export { parsePrometheusText, PromParseError } from "./parse.ts";
export type { PromFamily, PromSample } from "./parse.ts";
