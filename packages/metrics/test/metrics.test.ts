import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";
import {
  PodMetrics,
  parsePrometheusText,
  percentile,
  PromParseError,
  RollingWindow,
  type HealthDocument,
  type PodMetricsOptions,
  type PromFamily,
} from "../src/index.ts";
import { SEED_METRICS } from "./seedMetrics.ts";


const EXTRA_METRICS: Record<string, string> = {
  mentra_event_loop_delay_seconds: "histogram",
  mentra_event_loop_utilization: "gauge",
  mentra_udp_packets_dropped_by_reason_total: "counter",
  mentra_session_creations_total: "counter",
  mentra_session_disposals_total: "counter",
  mentra_phone_socket_closes_total: "counter",
  mentra_phone_reconnects_total: "counter",
  mentra_webhook_results_total: "counter",
  mentra_app_state_transitions_total: "counter",
  mentra_transcription_provider_errors_total: "counter",
  mentra_wrong_pod_arrivals_total: "counter",
  mentra_unhandled_rejections_total: "counter",
  mentra_uncaught_exceptions_total: "counter",
  mentra_log_lines_dropped_total: "counter",
  mentra_dropped_messages_total: "counter",
};

function pod(opts: Partial<PodMetricsOptions> = {}): PodMetrics {
  return new PodMetrics({ podId: "pod-a", region: "us-central", version: "1.2.3", collectDefaultMetrics: false, ...opts });
}

async function waitFor(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

async function scrape(m: PodMetrics): Promise<Map<string, PromFamily>> {
  return parsePrometheusText(await m.metricsText());
}

/** The family holding samples named `sampleName` (histogram `_bucket`/`_sum`/`_count` included). */
function familyOf(families: Map<string, PromFamily>, sampleName: string): PromFamily | undefined {
  return families.get(sampleName) ?? [...families.values()].find((f) => f.samples.some((s) => s.name === sampleName));
}

/** Value of the one sample `name` whose labels include `match` (default labels ignored). */
function value(families: Map<string, PromFamily>, name: string, match: Record<string, string> = {}): number {
  const family = familyOf(families, name);
  assert.ok(family, `no ${name} samples`);
  const hits = family.samples.filter(
    (s) => s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v),
  );
  assert.equal(hits.length, 1, `expected one ${name}${JSON.stringify(match)} sample, got ${hits.length}`);
  return hits[0]!.value;
}

/** 0 when the labelled series does not exist yet (prom-client creates it on first inc). */
function valueOr0(families: Map<string, PromFamily>, name: string, match: Record<string, string>): number {
  const family = families.get(name);
  const hit = family?.samples.find((s) => Object.entries(match).every(([k, v]) => s.labels[k] === v));
  return hit?.value ?? 0;
}

describe("parsePrometheusText", () => {
  it("reads HELP/TYPE, escaped labels, special values and timestamps", () => {
    const text = [
      "# A plain comment",
      "# HELP http_total Requests with a \\\\ backslash\\nand a newline",
      "# TYPE http_total counter",
      'http_total{path="/a\\"b\\\\c\\nd",code="200",} 3 1700000000000',
      'http_total { path = "x" , code="500" } 1e3',
      "# TYPE g gauge",
      "g NaN",
      "g1 Nan",
      "g2 +Inf",
      "g3 -Inf",
      "g4 -.5",
    ].join("\n");
    const f = parsePrometheusText(text);
    const http = f.get("http_total")!;
    assert.equal(http.type, "counter");
    assert.equal(http.help, "Requests with a \\ backslash\nand a newline");
    assert.deepEqual(http.samples[0], {
      name: "http_total",
      labels: { path: '/a"b\\c\nd', code: "200" },
      value: 3,
      timestampMs: 1700000000000,
    });
    assert.deepEqual(http.samples[1], { name: "http_total", labels: { path: "x", code: "500" }, value: 1000 });
    assert.ok(Number.isNaN(f.get("g")!.samples[0]!.value));
    assert.ok(Number.isNaN(f.get("g1")!.samples[0]!.value), "prom-client writes Nan");
    assert.equal(f.get("g2")!.type, "untyped");
    assert.equal(f.get("g2")!.samples[0]!.value, Infinity);
    assert.equal(f.get("g3")!.samples[0]!.value, -Infinity);
    assert.equal(f.get("g4")!.samples[0]!.value, -0.5);
  });

  it("groups histogram and summary samples under their family", () => {
    const text = [
      "# HELP lat Latency",
      "# TYPE lat histogram",
      'lat_bucket{le="0.1"} 1',
      'lat_bucket{le="+Inf"} 2',
      "lat_sum 0.3",
      "lat_count 2",
      "# TYPE q summary",
      'q{quantile="0.5"} 1',
      "q_sum 4",
      "q_count 3",
      "# TYPE other_count gauge",
      "other_count 7",
    ].join("\n");
    const f = parsePrometheusText(text);
    assert.deepEqual([...f.keys()], ["lat", "q", "other_count"]);
    assert.deepEqual(
      f.get("lat")!.samples.map((s) => s.name),
      ["lat_bucket", "lat_bucket", "lat_sum", "lat_count"],
    );
    assert.equal(f.get("lat")!.samples[1]!.labels.le, "+Inf");
    assert.deepEqual(
      f.get("q")!.samples.map((s) => s.name),
      ["q", "q_sum", "q_count"],
    );
    assert.equal(f.get("other_count")!.samples[0]!.value, 7);
  });

  it("rejects malformed input with the line number", () => {
    const bad = [
      'x{a="1} 2',
      'x{a="\\q"} 2',
      "x{a=1} 2",
      'x{a="1",a="2"} 2',
      "x one",
      "x",
      "x 1 2 3",
      "# TYPE x flavour",
      "9x 1",
    ];
    for (const line of bad) {
      assert.throws(() => parsePrometheusText(`ok 1\n${line}`), (e: unknown) => {
        assert.ok(e instanceof PromParseError, `${line}: ${String(e)}`);
        assert.equal(e.line, 2);
        return true;
      });
    }
  });
});

describe("percentile / RollingWindow", () => {
  it("is nearest-rank: index ceil(p*n)-1 of the sorted values", () => {
    const hundred = Array.from({ length: 100 }, (_, i) => 100 - i); // 100..1, unsorted
    assert.equal(percentile(hundred, 99), 99);
    assert.equal(percentile(hundred, 100), 100);
    assert.equal(percentile(hundred, 50), 50);
    assert.equal(percentile(Array.from({ length: 150 }, (_, i) => i + 1), 99), 149); // ceil(148.5)-1 = 148
    assert.equal(percentile([1, 2, 3, 1000], 99), 1000);
    assert.equal(percentile([7], 99), 7);
    assert.equal(percentile([], 99), 0);
    const input = [3, 1, 2];
    percentile(input, 50);
    assert.deepEqual(input, [3, 1, 2], "input not mutated");
    assert.throws(() => percentile([1], 101), RangeError);
  });

  it("keeps the last `capacity` samples in a ring", () => {
    const w = new RollingWindow(3);
    assert.equal(w.mean, 0);
    assert.equal(w.p99, 0);
    for (const v of [1, 2, 3, 4, 5]) w.push(v);
    assert.equal(w.size, 3);
    assert.deepEqual(w.values(), [3, 4, 5]);
    assert.equal(w.mean, 4);
    assert.equal(w.p99, 5);
    assert.equal(w.p99, percentile(w.values(), 99));
  });
});

describe("PodMetrics exposition", () => {
  it("exposes every seed metric, with the exact seed name and TYPE", async () => {
    const f = await scrape(pod());
    for (const [name, type] of Object.entries(SEED_METRICS)) {
      const family = f.get(name);
      assert.ok(family, `seed metric ${name} missing`);
      assert.equal(family.type, type, `${name} type`);
      assert.ok(family.help.length > 0, `${name} has HELP`);
      assert.ok(family.samples.length > 0, `${name} has a sample`);
      for (const s of family.samples) assert.equal(s.name, name, `sample name of ${name} is unchanged`);
    }
    assert.deepEqual(
      f.get("mentra_http_requests_total")!.samples.map((s) => s.labels.status),
      ["2xx", "3xx", "4xx", "5xx"],
      "all four status classes present from the start, as in the seed",
    );
    assert.equal(f.get("mentra_udp_packets_dropped_total")!.samples.length, 1, "seed drop series stays unlabelled");
    for (const [name, type] of Object.entries(EXTRA_METRICS)) {
      assert.equal(f.get(name)?.type, type, `extra metric ${name}`);
    }
    for (const name of f.keys()) assert.match(name, /^mentra_/, "only mentra_ metrics without default metrics");
  });

  it("puts the default labels pod/region/version on every sample, default metrics included", async () => {
    const m = pod({ collectDefaultMetrics: true });
    m.sessionDisposed("grace_expired");
    m.recordLagSample(3);
    const f = await scrape(m);
    assert.ok(f.has("process_cpu_user_seconds_total"), "prom-client default metrics collected");
    assert.ok(f.has("nodejs_heap_size_used_bytes"));
    let samples = 0;
    for (const [name, family] of f) {
      for (const s of family.samples) {
        samples++;
        assert.equal(s.labels.pod, "pod-a", `${s.name} pod label`);
        assert.equal(s.labels.region, "us-central", `${s.name} region label`);
        // nodejs_version_info's own `version` label (the Node version) takes precedence over the
        // default label: the one series where the pod's version is not visible.
        const version = name === "nodejs_version_info" ? process.version : "1.2.3";
        assert.equal(s.labels.version, version, `${name} version label`);
      }
    }
    assert.ok(samples > 60);
  });

  it("labels region/version 'unknown' when not configured", async () => {
    const f = await scrape(new PodMetrics({ podId: "p", collectDefaultMetrics: false }));
    assert.deepEqual(f.get("mentra_user_sessions")!.samples[0]!.labels, { pod: "p", region: "unknown", version: "unknown" });
  });

  it("uses prom-client's Prometheus text content type", () => {
    assert.equal(pod().contentType, "text/plain; version=0.0.4; charset=utf-8");
  });
});

describe("PodMetrics counters and gauges", () => {
  it("moves every seed counter by the exact amount", async () => {
    const m = pod();
    const before = await scrape(m);
    m.wsClientIn();
    m.wsClientIn(4);
    m.wsClientOut(2);
    m.wsMiniappIn(7);
    m.wsMiniappOut();
    for (let i = 0; i < 5; i++) m.udpReceived();
    m.udpPing();
    m.udpPing();
    m.udpDecrypted();
    m.udpDecryptFailed();
    m.udpDropped("unknown_hash");
    m.udpDropped("unknown_hash");
    m.udpDropped("too_small");
    const after = await scrape(m);
    const delta = (name: string) => value(after, name) - value(before, name);
    assert.equal(delta("mentra_ws_client_messages_in_total"), 5);
    assert.equal(delta("mentra_ws_client_messages_out_total"), 2);
    assert.equal(delta("mentra_ws_miniapp_messages_in_total"), 7);
    assert.equal(delta("mentra_ws_miniapp_messages_out_total"), 1);
    assert.equal(delta("mentra_udp_packets_received_total"), 5);
    assert.equal(delta("mentra_udp_pings_received_total"), 2);
    assert.equal(delta("mentra_udp_packets_decrypted_total"), 1);
    assert.equal(delta("mentra_udp_decryption_failures_total"), 1);
    assert.equal(delta("mentra_udp_packets_dropped_total"), 3);
    const byReason = "mentra_udp_packets_dropped_by_reason_total";
    assert.equal(value(after, byReason, { reason: "unknown_hash" }), 2);
    assert.equal(value(after, byReason, { reason: "too_small" }), 1);
    assert.throws(() => m.wsClientIn(-1), "a counter never goes down");
    assert.equal(value(await scrape(m), "mentra_ws_client_messages_in_total"), 5);
    assert.equal(m.health().throughput.wsClientMessagesIn, 5, "mirror unchanged by the rejected call");
  });

  it("buckets HTTP status codes into the seed's classes", async () => {
    const m = pod();
    for (const code of [200, 201, 204, 299, 301, 304, 400, 404, 499, 500, 503, 504, 600, 101, 0]) m.httpRequest(code);
    const f = await scrape(m);
    const http = (status: string) => value(f, "mentra_http_requests_total", { status });
    assert.deepEqual([http("2xx"), http("3xx"), http("4xx"), http("5xx")], [4, 2, 3, 4]);
    assert.equal(f.get("mentra_http_requests_total")!.samples.length, 4, "1xx and junk codes are not counted");
    assert.deepEqual(m.health().throughput.httpRequests, { "2xx": 4, "3xx": 2, "4xx": 3, "5xx": 4 });
  });

  it("keeps session and UDP registration gauges with inc/dec", async () => {
    const m = pod();
    m.userSessionsInc();
    m.userSessionsInc();
    m.userSessionsInc();
    m.userSessionsDec();
    m.miniappSessionsInc();
    m.miniappSessionsInc();
    m.miniappSessionsDec();
    m.udpRegisteredInc();
    const f = await scrape(m);
    assert.equal(value(f, "mentra_user_sessions"), 2);
    assert.equal(value(f, "mentra_miniapp_sessions"), 1);
    assert.equal(value(f, "mentra_udp_registered_sessions"), 1);
    const h = m.health();
    assert.deepEqual(h.sessions, { userSessions: 2, miniappSessions: 1 });
    assert.equal(h.activeSessions, 2);
    assert.equal(h.udp.sessions, 1);
    m.udpRegisteredDec();
    assert.equal(value(await scrape(m), "mentra_udp_registered_sessions"), 0);
  });

  it("counts the fleet extras with their labels", async () => {
    const m = pod();
    m.sessionCreated();
    m.sessionCreated();
    m.sessionDisposed("grace_expired");
    m.sessionDisposed("drain");
    m.sessionDisposed("drain");
    m.phoneSocketClosed(1006);
    m.phoneSocketClosed(1000);
    m.phoneSocketClosed(1006);
    m.phoneReconnect();
    m.webhook("session_request", "ok");
    m.webhook("session_request", "timeout");
    m.webhook("stop_request", "ok");
    m.appStateTransition("RUNNING", "GRACE_PERIOD");
    m.appStateTransition("GRACE_PERIOD", "RUNNING");
    m.appStateTransition("RUNNING", "GRACE_PERIOD");
    m.transcriptionError("fake");
    m.wrongPodArrival("udp");
    m.wrongPodArrival("rest");
    m.wrongPodArrival("udp");
    m.unhandledRejection();
    m.uncaughtException();
    m.logLineDropped();
    m.logLineDropped(9);
    m.droppedMessage("app_ws", "grace_period");
    m.droppedMessage("app_ws", "grace_period");
    m.droppedMessage("phone_ws", "backpressure");
    const f = await scrape(m);
    assert.equal(value(f, "mentra_session_creations_total"), 2);
    assert.equal(value(f, "mentra_session_disposals_total", { reason: "grace_expired" }), 1);
    assert.equal(value(f, "mentra_session_disposals_total", { reason: "drain" }), 2);
    assert.equal(value(f, "mentra_phone_socket_closes_total", { code: "1006" }), 2);
    assert.equal(value(f, "mentra_phone_socket_closes_total", { code: "1000" }), 1);
    assert.equal(value(f, "mentra_phone_reconnects_total"), 1);
    assert.equal(value(f, "mentra_webhook_results_total", { kind: "session_request", result: "ok" }), 1);
    assert.equal(value(f, "mentra_webhook_results_total", { kind: "session_request", result: "timeout" }), 1);
    assert.equal(value(f, "mentra_webhook_results_total", { kind: "stop_request", result: "ok" }), 1);
    assert.equal(value(f, "mentra_app_state_transitions_total", { from: "RUNNING", to: "GRACE_PERIOD" }), 2);
    assert.equal(value(f, "mentra_app_state_transitions_total", { from: "GRACE_PERIOD", to: "RUNNING" }), 1);
    assert.equal(value(f, "mentra_transcription_provider_errors_total", { provider: "fake" }), 1);
    assert.equal(value(f, "mentra_wrong_pod_arrivals_total", { traffic: "udp" }), 2);
    assert.equal(value(f, "mentra_wrong_pod_arrivals_total", { traffic: "rest" }), 1);
    assert.equal(value(f, "mentra_wrong_pod_arrivals_total", { traffic: "phone_ws" }), 0, "known kinds start at 0");
    assert.equal(value(f, "mentra_unhandled_rejections_total"), 1);
    assert.equal(value(f, "mentra_uncaught_exceptions_total"), 1);
    assert.equal(value(f, "mentra_log_lines_dropped_total"), 10);
    assert.equal(value(f, "mentra_dropped_messages_total", { channel: "app_ws", reason: "grace_period" }), 2);
    assert.equal(value(f, "mentra_dropped_messages_total", { channel: "phone_ws", reason: "backpressure" }), 1);
    assert.equal(valueOr0(f, "mentra_dropped_messages_total", { channel: "udp" }), 0);
  });
});

describe("PodMetrics event loop lag", () => {
  it("recordLagSample drives current, rolling avg, nearest-rank p99 and the histogram", async () => {
    const m = pod({ lagWindow: 4 });
    assert.deepEqual(m.lag(), { currentMs: 0, avgMs: 0, p99Ms: 0, samples: 0, elu: 0, recentP99Ms: 0 });
    for (const ms of [2, 4, 6]) m.recordLagSample(ms);
    assert.deepEqual(m.lag(), { currentMs: 6, avgMs: 4, p99Ms: 6, samples: 3, elu: 0, recentP99Ms: 6 });
    m.recordLagSample(250);
    m.recordLagSample(8); // window of 4 drops the 2
    const lag = m.lag();
    assert.equal(lag.currentMs, 8);
    assert.equal(lag.samples, 4);
    assert.equal(lag.avgMs, (4 + 6 + 250 + 8) / 4);
    assert.equal(lag.p99Ms, 250);

    const f = await scrape(m);
    assert.equal(value(f, "mentra_event_loop_lag_ms"), 8);
    assert.equal(value(f, "mentra_event_loop_lag_avg_ms"), 67);
    assert.equal(value(f, "mentra_event_loop_lag_p99_ms"), 250);
    const h = "mentra_event_loop_delay_seconds";
    const hist = f.get(h)!;
    assert.equal(value(f, `${h}_count`), 5, "histogram counts every sample, not just the window");
    assert.ok(Math.abs(value(f, `${h}_sum`) - 0.27) < 1e-9);
    assert.equal(value(f, `${h}_bucket`, { le: "0.001" }), 0);
    assert.equal(value(f, `${h}_bucket`, { le: "0.005" }), 2);
    assert.equal(value(f, `${h}_bucket`, { le: "0.01" }), 4);
    assert.equal(value(f, `${h}_bucket`, { le: "0.25" }), 5);
    assert.equal(value(f, `${h}_bucket`, { le: "10" }), 5);
    assert.equal(value(f, `${h}_bucket`, { le: "+Inf" }), 5);
    const les = hist.samples.filter((s) => s.name === `${h}_bucket`).map((s) => Number(s.labels.le));
    assert.equal(les[0], 0.001);
    assert.equal(les.at(-2), 10);

    assert.throws(() => m.recordLagSample(-1), RangeError);
    assert.throws(() => m.recordLagSample(NaN), RangeError);
  });

  it("p99 over the default 150-sample window is nearest-rank", () => {
    const m = pod();
    for (let i = 1; i <= 200; i++) m.recordLagSample(i); // window keeps 51..200
    const lag = m.lag();
    assert.equal(lag.samples, 150);
    assert.equal(lag.p99Ms, percentile(Array.from({ length: 150 }, (_, i) => 51 + i), 99));
    assert.equal(lag.p99Ms, 199);
    assert.equal(lag.avgMs, 125.5);
  });

  it("warns on samples over 100 ms at most once per 30 s of the injected clock", () => {
    let now = 1_000_000;
    const warnings: number[] = [];
    const m = pod({ now: () => now, onLagWarning: (ms) => warnings.push(ms) });
    m.recordLagSample(100); // not over the threshold
    m.recordLagSample(150);
    m.recordLagSample(400);
    now += 29_999;
    m.recordLagSample(500);
    now += 1;
    m.recordLagSample(20);
    m.recordLagSample(120);
    m.recordLagSample(130);
    assert.deepEqual(warnings, [150, 120]);
    const throwing = pod({
      onLagWarning: () => {
        throw new Error("log sink down");
      },
    });
    throwing.recordLagSample(200); // must not throw out of the sampler
    assert.equal(throwing.lag().currentMs, 200);
  });

  it("start() samples setTimeout(0) delay and ELU on an interval; stop() ends it", async () => {
    const m = pod({ lagSampleIntervalMs: 10 });
    const resourcesBefore = process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;
    m.start();
    m.start(); // idempotent: still one sampler
    assert.equal(
      process.getActiveResourcesInfo().filter((r) => r === "Timeout").length,
      resourcesBefore,
      "sampler timers are unref'd",
    );
    // Deadlines, not fixed sleeps: the machine may be busy, so only bound what must hold.
    const t0 = performance.now();
    await waitFor(() => m.lag().samples >= 4, "4 samples");
    const running = m.lag();
    const elapsed = performance.now() - t0;
    // Each cycle waits the full interval, so one sampler takes at most elapsed/interval + 1 samples.
    assert.ok(running.samples <= Math.floor(elapsed / 10) + 1, `one sampler, not two: ${running.samples} in ${elapsed} ms`);
    assert.ok(running.currentMs >= 0 && running.currentMs < 10_000);
    assert.ok(running.elu >= 0 && running.elu <= 1, `elu ${running.elu}`);

    // Busy-wait 40 ms: whichever sampler timer is pending fires >= ~30 ms late, and the tick
    // after the stall measures ELU over an interval that includes it.
    const beforeStall = m.lag().samples;
    const end = performance.now() + 40;
    while (performance.now() < end);
    await waitFor(() => m.lag().samples >= beforeStall + 2, "two samples after the stall");
    const stalled = m.lag();
    assert.ok(stalled.p99Ms >= 20, `stall visible in p99: ${stalled.p99Ms}`);
    assert.ok(stalled.elu > 0, `elu after busy loop: ${stalled.elu}`);
    const f = await scrape(m);
    const after = m.lag();
    assert.equal(value(f, "mentra_event_loop_utilization"), after.elu);
    assert.equal(value(f, "mentra_event_loop_delay_seconds_count"), after.samples);
    assert.equal(value(f, "mentra_event_loop_lag_ms"), after.currentMs);

    m.stop();
    m.stop(); // idempotent
    const stoppedAt = m.lag().samples;
    await sleep(60);
    assert.equal(m.lag().samples, stoppedAt, "no samples after stop()");

    m.start(); // restartable
    await waitFor(() => m.lag().samples > stoppedAt, "a sample after restart");
    m.stop();
  });

  it("a process with a started (or stopped) PodMetrics exits on its own", async () => {
    const entry = fileURLToPath(new URL("../src/index.ts", import.meta.url));
    const script = `
      import { PodMetrics } from ${JSON.stringify(entry)};
      const a = new PodMetrics({ podId: "a", lagSampleIntervalMs: 5 });
      const b = new PodMetrics({ podId: "b", lagSampleIntervalMs: 5 });
      a.start(); b.start();
      await new Promise((r) => setTimeout(r, 50));
      await a.metricsText();
      b.stop();
      console.log("samples", a.lag().samples > 0, b.lag().samples > 0);
    `;
    const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
      cwd: fileURLToPath(new URL("../../..", import.meta.url)),
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d));
    child.stderr.on("data", (d: Buffer) => (out += d));
    const killer = setTimeout(() => child.kill("SIGKILL"), 15_000);
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
      child.on("exit", (c, s) => resolve([c, s])),
    );
    clearTimeout(killer);
    assert.equal(signal, null, `child had to be killed: ${out}`);
    assert.equal(code, 0, out);
    assert.match(out, /samples true true/);
  });
});

describe("PodMetrics isolation", () => {
  it("two pods in one process keep separate registries and values", async () => {
    const a = pod({ podId: "pod-a", collectDefaultMetrics: true });
    const b = pod({ podId: "pod-b", collectDefaultMetrics: true });
    assert.notEqual(a.registry, b.registry);
    a.wsClientIn(3);
    a.userSessionsInc();
    a.httpRequest(500);
    b.wsClientIn(10);
    b.recordLagSample(42);
    const [fa, fb] = [await scrape(a), await scrape(b)];
    assert.equal(value(fa, "mentra_ws_client_messages_in_total"), 3);
    assert.equal(value(fb, "mentra_ws_client_messages_in_total"), 10);
    assert.equal(value(fa, "mentra_user_sessions"), 1);
    assert.equal(value(fb, "mentra_user_sessions"), 0);
    assert.equal(value(fa, "mentra_http_requests_total", { status: "5xx" }), 1);
    assert.equal(value(fb, "mentra_http_requests_total", { status: "5xx" }), 0);
    assert.equal(value(fa, "mentra_event_loop_lag_ms"), 0);
    assert.equal(value(fb, "mentra_event_loop_lag_ms"), 42);
    assert.ok(fa.get("mentra_ws_client_messages_in_total")!.samples.every((s) => s.labels.pod === "pod-a"));
    assert.ok(fb.get("mentra_ws_client_messages_in_total")!.samples.every((s) => s.labels.pod === "pod-b"));
    assert.equal(a.health().throughput.wsClientMessagesIn, 3);
    assert.equal(b.health().throughput.wsClientMessagesIn, 10);
  });

  it("never registers on prom-client's global registry", async () => {
    const { register } = await import("prom-client");
    const before = register.getMetricsAsArray().length;
    pod({ collectDefaultMetrics: true }).wsClientIn();
    assert.equal(register.getMetricsAsArray().length, before);
    assert.equal(register.getSingleMetric("mentra_user_sessions"), undefined);
  });
});

describe("PodMetrics.health()", () => {
  it("has every field of the seed /health document, from the mirrors", () => {
    let now = Date.parse("2025-01-02T03:04:05.000Z");
    const m = pod({ now: () => now, lagWindow: 3 });
    m.userSessionsInc();
    m.miniappSessionsInc();
    m.miniappSessionsInc();
    m.wsClientIn(2);
    m.wsClientOut(3);
    m.wsMiniappIn(4);
    m.wsMiniappOut(5);
    m.httpRequest(200);
    m.httpRequest(302);
    m.udpReceived();
    m.udpDropped("empty");
    m.udpPing();
    m.udpRegisteredInc();
    m.udpDecrypted();
    m.udpDecryptFailed();
    for (const ms of [1.111, 2.222, 3.333]) m.recordLagSample(ms);
    now += 90_600;

    const h: HealthDocument = m.health();
    assert.deepEqual(Object.keys(h).sort(), [
      "activeSessions", "eventLoop", "eventLoopLagMs", "externalMB", "heapTotalMB", "heapUsedMB",
      "memory", "rssMB", "sessions", "status", "throughput", "timestamp", "udp", "uptime", "uptimeSeconds",
    ]);
    assert.equal(h.status, "ok");
    assert.equal(h.timestamp, "2025-01-02T03:05:35.600Z");
    assert.equal(h.uptime, 90.6);
    assert.equal(h.uptimeSeconds, 91);
    assert.equal(h.eventLoopLagMs, 3.333);
    assert.equal(h.activeSessions, 1);
    assert.deepEqual(h.eventLoop, { lagMs: 3.333, lagAvgMs: 2.22, lagP99Ms: 3.33, samples: 3 });
    assert.deepEqual(h.sessions, { userSessions: 1, miniappSessions: 2 });
    assert.deepEqual(h.throughput, {
      wsClientMessagesIn: 2,
      wsClientMessagesOut: 3,
      wsMiniappMessagesIn: 4,
      wsMiniappMessagesOut: 5,
      httpRequests: { "2xx": 1, "3xx": 1, "4xx": 0, "5xx": 0 },
    });
    assert.deepEqual(h.udp, { received: 1, dropped: 1, pings: 1, sessions: 1, decrypted: 1, decryptionFailures: 1 });
    assert.deepEqual(Object.keys(h.memory).sort(), ["arrayBuffers", "external", "heapTotal", "heapUsed", "rss"]);
    for (const [k, v] of Object.entries(h.memory)) assert.ok(Number.isInteger(v) && v >= 0, `memory.${k}`);
    assert.ok(h.memory.rss > 0 && h.memory.heapUsed > 0);
    assert.equal(h.rssMB, Math.round(h.memory.rss / 1048576));
    assert.equal(h.heapUsedMB, Math.round(h.memory.heapUsed / 1048576));
    assert.equal(h.heapTotalMB, Math.round(h.memory.heapTotal / 1048576));
    assert.equal(h.externalMB, Math.round(h.memory.external / 1048576));
    assert.deepEqual(JSON.parse(JSON.stringify(h)), h, "plain JSON");

    h.throughput.httpRequests["2xx"] = 99;
    assert.equal(m.health().throughput.httpRequests["2xx"], 1, "a returned document is a copy");
  });

  it("uses process.uptime() when no clock is injected, like the seed", () => {
    const h = pod().health();
    assert.ok(Math.abs(h.uptime - process.uptime()) < 1);
    assert.ok(Math.abs(Date.parse(h.timestamp) - Date.now()) < 5000);
  });

  it("never reads the registry (O(1) in sessions and series)", () => {
    const m = pod({ collectDefaultMetrics: true });
    for (let i = 0; i < 1000; i++) m.sessionDisposed(`reason-${i}`);
    const reg = m.registry as unknown as Record<string, unknown>;
    for (const method of ["metrics", "getMetricsAsJSON", "getMetricsAsArray", "getSingleMetric", "getSingleMetricAsString"]) {
      reg[method] = () => {
        throw new Error(`health() called registry.${method}`);
      };
    }
    m.userSessionsInc();
    assert.equal(m.health().activeSessions, 1);
  });

  it("memory gauges are read at scrape time and agree with each other", async () => {
    const m = pod();
    const f = await scrape(m);
    const rss = value(f, "mentra_rss_bytes");
    const heapUsed = value(f, "mentra_heap_used_bytes");
    const heapTotal = value(f, "mentra_heap_total_bytes");
    assert.ok(rss > 0 && heapUsed > 0 && heapTotal >= heapUsed, "one memoryUsage() snapshot per scrape");
    assert.ok(value(f, "mentra_external_bytes") >= 0);
    assert.ok(value(f, "mentra_array_buffers_bytes") >= 0);
    assert.ok(value(f, "mentra_uptime_seconds") > 0);
  });
});
