/**
 * The seed design's metric names and types (../shared/docs/seed-cloud-scaling.md), written out
 * by hand as the oracle the metrics tests check the exposition against, so it is not derived from
 * the code under test. Shared by packages/metrics/test and apps/pod/test/observability.test.ts.
 */
export const SEED_METRICS: Readonly<Record<string, "gauge" | "counter">> = {
  mentra_user_sessions: "gauge",
  mentra_miniapp_sessions: "gauge",
  mentra_event_loop_lag_ms: "gauge",
  mentra_event_loop_lag_avg_ms: "gauge",
  mentra_event_loop_lag_p99_ms: "gauge",
  mentra_udp_packets_received_total: "counter",
  mentra_udp_packets_dropped_total: "counter",
  mentra_udp_pings_received_total: "counter",
  mentra_udp_packets_decrypted_total: "counter",
  mentra_udp_decryption_failures_total: "counter",
  mentra_udp_registered_sessions: "gauge",
  mentra_ws_client_messages_in_total: "counter",
  mentra_ws_client_messages_out_total: "counter",
  mentra_ws_miniapp_messages_in_total: "counter",
  mentra_ws_miniapp_messages_out_total: "counter",
  mentra_http_requests_total: "counter",
  mentra_heap_used_bytes: "gauge",
  mentra_heap_total_bytes: "gauge",
  mentra_rss_bytes: "gauge",
  mentra_external_bytes: "gauge",
  mentra_array_buffers_bytes: "gauge",
  mentra_uptime_seconds: "gauge",
};
