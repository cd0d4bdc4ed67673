/**
 * Watches every pod: GET /health and GET /metrics each interval, parsed with the metrics package's
 * own Prometheus parser. Turns counters into per-second rates and the lag histogram into a p99 over
 * the last ~5 s. Pods come from the caller (own cluster) or from the gateway's /admin/pods.
 */
import { parsePrometheusText, type PromFamily } from "@mentra-cluster/metrics";
import { promHistogramQuantile } from "./stats.ts";
import type { PodSample } from "./types.ts";

export interface PodTarget {
  podId: string;
  /** Base URL serving /health and /metrics. */
  baseUrl: string;
}

type Families = Map<string, PromFamily>;

/** Sum of the samples called `name` (in its own family, or a histogram's `_count`/`_sum`/`_bucket` family). */
function total(f: Families, name: string, filter: (l: Record<string, string>) => boolean = () => true): number {
  const fam = f.get(name) ?? f.get(name.replace(/_(count|sum|bucket)$/, ""));
  if (!fam) return 0;
  return fam.samples.filter((s) => s.name === name && filter(s.labels)).reduce((a, s) => a + s.value, 0);
}
function maybe(f: Families, name: string): number | null {
  const fam = f.get(name);
  return fam && fam.samples.length ? total(f, name) : null;
}

export function lagBuckets(f: Families): { le: number; count: number }[] {
  const fam = f.get("mentra_event_loop_delay_seconds");
  if (!fam) return [];
  return fam.samples
    .filter((s) => s.name === "mentra_event_loop_delay_seconds_bucket")
    .map((s) => ({ le: s.labels.le === "+Inf" ? Infinity : Number(s.labels.le) * 1000, count: s.value }));
}

/** The counters and gauges one scrape gives (no rates yet). */
export function readPodMetrics(podId: string, text: string, health: Record<string, any> | null): Omit<PodSample, "rates" | "cpuCores" | "lagP99RecentMs"> {
  const f = parsePrometheusText(text);
  const MB = 1048576;
  return {
    podId,
    ok: true,
    sessions: maybe(f, "mentra_user_sessions") ?? health?.sessions?.userSessions ?? 0,
    miniapps: maybe(f, "mentra_miniapp_sessions") ?? health?.sessions?.miniappSessions ?? 0,
    udpSessions: total(f, "mentra_udp_registered_sessions"),
    lagMs: maybe(f, "mentra_event_loop_lag_ms") ?? health?.eventLoop?.lagMs ?? 0,
    lagP99Ms: maybe(f, "mentra_event_loop_lag_p99_ms") ?? health?.eventLoop?.lagP99Ms ?? 0,
    elu: total(f, "mentra_event_loop_utilization"),
    rssMB: (maybe(f, "mentra_rss_bytes") ?? health?.memory?.rss ?? 0) / MB,
    heapUsedMB: (maybe(f, "mentra_heap_used_bytes") ?? health?.memory?.heapUsed ?? 0) / MB,
    heapTotalMB: (maybe(f, "mentra_heap_total_bytes") ?? health?.memory?.heapTotal ?? 0) / MB,
    externalMB: (maybe(f, "mentra_external_bytes") ?? health?.memory?.external ?? 0) / MB,
    counters: {
      cpuSeconds: maybe(f, "process_cpu_seconds_total"),
      udpReceived: maybe(f, "mentra_udp_packets_received_total") ?? health?.udp?.received ?? 0,
      udpDropped: maybe(f, "mentra_udp_packets_dropped_total") ?? health?.udp?.dropped ?? 0,
      wsClientIn: maybe(f, "mentra_ws_client_messages_in_total") ?? health?.throughput?.wsClientMessagesIn ?? 0,
      wsClientOut: maybe(f, "mentra_ws_client_messages_out_total") ?? health?.throughput?.wsClientMessagesOut ?? 0,
      wsAppIn: maybe(f, "mentra_ws_miniapp_messages_in_total") ?? health?.throughput?.wsMiniappMessagesIn ?? 0,
      wsAppOut: maybe(f, "mentra_ws_miniapp_messages_out_total") ?? health?.throughput?.wsMiniappMessagesOut ?? 0,
      droppedMessages: total(f, "mentra_dropped_messages_total"),
      transcriptionErrors: total(f, "mentra_transcription_provider_errors_total"),
      newSessionRejections: total(f, "mentra_new_session_rejections_total"),
      sessionCreations: total(f, "mentra_session_creations_total"),
      unhandledRejections: total(f, "mentra_unhandled_rejections_total"),
      uncaughtExceptions: total(f, "mentra_uncaught_exceptions_total"),
      lagSamples: total(f, "mentra_event_loop_delay_seconds_count"),
    },
    lagBuckets: lagBuckets(f),
  };
}

interface History {
  t: number;
  s: PodSample;
}

export class PodMonitor {
  private targets: PodTarget[] = [];
  private readonly history = new Map<string, History[]>();
  private lastDiscovery = 0;

  constructor(
    private readonly o: {
      /** Fixed pods (own cluster), or null to discover them through the gateway's admin API. */
      pods: PodTarget[] | null;
      gatewayUrl: string;
      adminToken: string;
      timeoutMs: number;
    },
  ) {
    if (o.pods) this.targets = o.pods;
  }

  get pods(): readonly PodTarget[] {
    return this.targets;
  }

  /** Asks the gateway which pods exist (external clusters), at most every 10 s. */
  async discover(force = false): Promise<void> {
    if (this.o.pods) return;
    if (!force && Date.now() - this.lastDiscovery < 10_000) return;
    this.lastDiscovery = Date.now();
    const url = `${this.o.gatewayUrl}/admin/pods`;
    const res = await fetch(url, { headers: { authorization: `Bearer ${this.o.adminToken}` }, signal: AbortSignal.timeout(this.o.timeoutMs) }).catch((err: Error & { cause?: { code?: string; message?: string } }) => {
      throw new Error(`cannot reach the gateway: GET ${url}: ${err.cause?.code ?? err.cause?.message ?? err.message}`);
    });
    if (!res.ok) throw new Error(`GET ${this.o.gatewayUrl}/admin/pods answered ${res.status}: give the cluster's admin token (--admin-token or ADMIN_TOKEN)`);
    const body = (await res.json()) as { pods: { podId: string; endpoints: { httpUrl: string; internalUrl?: string } }[] };
    const known = new Map(this.targets.map((t) => [t.podId, t]));
    for (const p of body.pods) known.set(p.podId, { podId: p.podId, baseUrl: p.endpoints.httpUrl.replace(/\/+$/, "") });
    this.targets = [...known.values()].sort((a, b) => a.podId.localeCompare(b.podId));
  }

  /** One poll of every pod. A pod that does not answer gives ok=false (and counts as a problem). */
  async poll(): Promise<PodSample[]> {
    await this.discover().catch(() => undefined);
    return Promise.all(this.targets.map((t) => this.pollOne(t)));
  }

  private async pollOne(t: PodTarget): Promise<PodSample> {
    const at = Date.now();
    try {
      const [healthRes, metricsRes] = await Promise.all([
        fetch(`${t.baseUrl}/health`, { signal: AbortSignal.timeout(this.o.timeoutMs) }),
        fetch(`${t.baseUrl}/metrics`, { signal: AbortSignal.timeout(this.o.timeoutMs) }),
      ]);
      if (!metricsRes.ok) throw new Error(`/metrics answered ${metricsRes.status}`);
      const health = healthRes.ok ? ((await healthRes.json()) as Record<string, any>) : null;
      const base = readPodMetrics(t.podId, await metricsRes.text(), health);
      const hist = this.history.get(t.podId) ?? [];
      const prev = hist[hist.length - 1];
      const dt = prev ? (at - prev.t) / 1000 : 0;
      const rate = (k: keyof PodSample["counters"]) => (prev && dt > 0 ? Math.max(0, ((base.counters[k] ?? 0) - (prev.s.counters[k] ?? 0)) / dt) : 0);
      const cpu = prev && dt > 0 && base.counters.cpuSeconds !== null && prev.s.counters.cpuSeconds !== null ? (base.counters.cpuSeconds - prev.s.counters.cpuSeconds) / dt : null;
      // p99 of the lag samples taken in about the last 5 s.
      const old = [...hist].reverse().find((h) => at - h.t >= 4500) ?? hist[0];
      let lagP99RecentMs: number | null = null;
      if (old) {
        const before = new Map(old.s.lagBuckets.map((b) => [b.le, b.count]));
        lagP99RecentMs = promHistogramQuantile(base.lagBuckets.map((b) => ({ le: b.le, count: b.count - (before.get(b.le) ?? 0) })), 0.99);
      }
      const s: PodSample = {
        ...base,
        cpuCores: cpu,
        lagP99RecentMs,
        rates: { udpIn: rate("udpReceived"), udpDropped: rate("udpDropped"), wsClientIn: rate("wsClientIn"), wsClientOut: rate("wsClientOut"), wsAppIn: rate("wsAppIn"), wsAppOut: rate("wsAppOut") },
      };
      hist.push({ t: at, s });
      while (hist.length > 20) hist.shift();
      this.history.set(t.podId, hist);
      return s;
    } catch (err) {
      const prev = this.history.get(t.podId)?.at(-1)?.s;
      return {
        podId: t.podId,
        ok: false,
        error: (err as Error).message,
        sessions: prev?.sessions ?? 0,
        miniapps: prev?.miniapps ?? 0,
        udpSessions: prev?.udpSessions ?? 0,
        lagMs: 0,
        lagP99Ms: 0,
        lagP99RecentMs: null,
        elu: 0,
        cpuCores: null,
        rssMB: 0,
        heapUsedMB: 0,
        heapTotalMB: 0,
        externalMB: 0,
        rates: { udpIn: 0, udpDropped: 0, wsClientIn: 0, wsClientOut: 0, wsAppIn: 0, wsAppOut: 0 },
        counters: prev?.counters ?? { cpuSeconds: null, udpReceived: 0, udpDropped: 0, wsClientIn: 0, wsClientOut: 0, wsAppIn: 0, wsAppOut: 0, droppedMessages: 0, transcriptionErrors: 0, newSessionRejections: 0, sessionCreations: 0, unhandledRejections: 0, uncaughtExceptions: 0, lagSamples: 0 },
        lagBuckets: prev?.lagBuckets ?? [],
      };
    }
  }
}
