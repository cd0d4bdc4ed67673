/**
 * Observability of a live pod: every seed metric scraped with a real Prometheus text parser,
 * counters moving by the right amounts under phone, app, UDP and HTTP traffic, lag and readiness
 * under a blocked event loop, probes that never walk sessions (C7, C8), 404/405, no secrets.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { AppSim } from "@mentra-cluster/phone-sim";
import { parsePrometheusText } from "@mentra-cluster/metrics";
import { appSeed, eventually, sleep, startTestPod, TEST_SECRET, ADMIN_TOKEN, type TestPod } from "../../../test/helpers/pod.ts";
import { SEED_METRICS } from "../../../packages/metrics/test/seedMetrics.ts";

const PKG = "com.test.obs";
const KEY = "obs-secret-api-key";
let tp: TestPod;
let app: AppSim;

before(async () => {
  app = await new AppSim({ packageName: PKG, apiKey: KEY }).start();
  tp = await startTestPod({ seed: appSeed(PKG, app.publicUrl, KEY), config: { lagSampleIntervalMs: 50, readyLagP99CapMs: 100 } });
});
after(async () => {
  await tp.close();
  await app.stop();
});

const SEED = SEED_METRICS;

async function scrape() {
  const res = await fetch(`${tp.httpUrl}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /text\/plain/);
  return parsePrometheusText(await res.text());
}
function value(m: Awaited<ReturnType<typeof scrape>>, name: string, labels: Record<string, string> = {}): number {
  const fam = m.get(name) ?? m.get(name.replace(/_(count|sum|bucket)$/, ""));
  assert.ok(fam, `${name} missing`);
  const s = fam.samples.find((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v));
  return s?.value ?? 0;
}

test("every seed metric is exported with its exact name and type, labelled with pod, region and version", async () => {
  const m = await scrape();
  for (const [name, type] of Object.entries(SEED)) {
    assert.equal(m.get(name)?.type, type, name);
    for (const s of m.get(name)!.samples) {
      assert.equal(s.labels.pod, "pod-test", name);
      assert.ok(s.labels.region && s.labels.version, name);
    }
  }
  for (const extra of ["mentra_event_loop_delay_seconds", "mentra_event_loop_utilization", "mentra_session_creations_total", "mentra_phone_socket_closes_total", "mentra_webhook_results_total", "mentra_app_state_transitions_total", "mentra_wrong_pod_arrivals_total", "mentra_unhandled_rejections_total", "mentra_log_lines_dropped_total", "process_cpu_seconds_total"]) {
    assert.ok(m.get(extra), extra);
  }
  assert.equal(m.get("mentra_event_loop_delay_seconds")!.type, "histogram");
});

test("counters move by exactly the traffic sent: phone, app, UDP, HTTP", async () => {
  const user = "counted@example.com";
  const p = tp.phone(user);
  await p.connect();
  await p.registerUdp();
  assert.equal((await p.startApp(PKG)).status, 200);
  const s = app.sessions.get(`${user}-${PKG}`)!;
  await eventually(() => tp.pod.sessions.get(user)!.subscriptions.get(PKG).length === 1, 3000);
  await eventually(() => tp.pod.metrics.health().udp.pings >= 3, 3000, "all 3 registration PINGs");
  await sleep(100);
  const m0 = await scrape();
  // 3 phone frames in, each answered by one pong out.
  for (let i = 0; i < 3; i++) p.send({ type: "ping" });
  await eventually(() => p.received.filter((m) => m.type === "pong").length === 3, 3000);
  // 2 app frames in (pings), each answered by one pong out.
  s.ws.send(JSON.stringify({ type: "ping" }));
  s.ws.send(JSON.stringify({ type: "ping" }));
  await eventually(() => s.other.filter((m) => m.type === "pong").length === 2, 3000);
  // 4 UDP audio packets and 1 undersized datagram.
  for (let i = 0; i < 4; i++) p.sendUdpAudio(Buffer.alloc(64));
  const dgram = await import("node:dgram");
  const sock = dgram.createSocket("udp4");
  await new Promise<void>((r) => sock.send(Buffer.alloc(3), tp.pod.addresses.udpPort, "127.0.0.1", () => r()));
  sock.close();
  await eventually(() => tp.pod.metrics.health().udp.received >= value(m0, "mentra_udp_packets_received_total") + 5, 3000);
  // HTTP: one 404 and one 401.
  await fetch(`${tp.httpUrl}/nope`);
  await fetch(`${tp.httpUrl}/api/client/apps`);
  await sleep(100);
  const m1 = await scrape();
  const d = (name: string, labels?: Record<string, string>) => value(m1, name, labels) - value(m0, name, labels);
  assert.equal(d("mentra_ws_client_messages_in_total"), 3);
  assert.equal(d("mentra_ws_client_messages_out_total") >= 3, true); // 3 pongs (+ pings every 2 s)
  assert.equal(d("mentra_ws_miniapp_messages_in_total"), 2);
  assert.equal(d("mentra_ws_miniapp_messages_out_total"), 2);
  assert.equal(d("mentra_udp_packets_received_total"), 5);
  assert.equal(d("mentra_udp_packets_dropped_total"), 1);
  assert.equal(d("mentra_http_requests_total", { status: "4xx" }), 2);
  assert.equal(d("mentra_http_requests_total", { status: "2xx" }), 1); // the previous scrape
  assert.equal(value(m1, "mentra_user_sessions"), tp.pod.sessions.size);
  assert.equal(value(m1, "mentra_miniapp_sessions"), 1);
  assert.equal(value(m1, "mentra_udp_registered_sessions"), 1);
  const h = await (await fetch(`${tp.httpUrl}/health`)).json();
  for (const k of ["eventLoop", "sessions", "throughput", "udp", "memory", "uptime"]) assert.ok(k in h, k);
  assert.equal(h.sessions.miniappSessions, 1);
});

test("a blocked event loop raises current lag, p99 and the histogram, turns readiness false, and both recover", async () => {
  assert.equal((await fetch(`${tp.httpUrl}/readyz`)).status, 200);
  const m0 = await scrape();
  const count0 = value(m0, "mentra_event_loop_delay_seconds_count");
  const slow0 = count0 - value(m0, "mentra_event_loop_delay_seconds_bucket", { le: "0.25" });
  const end = Date.now() + 400;
  while (Date.now() < end) {
    /* block the loop on purpose */
  }
  await sleep(150);
  const m1 = await scrape();
  assert.ok(value(m1, "mentra_event_loop_lag_p99_ms") >= 250, "rolling p99 rose");
  assert.ok(value(m1, "mentra_event_loop_delay_seconds_count") > count0);
  assert.ok(value(m1, "mentra_event_loop_delay_seconds_count") - value(m1, "mentra_event_loop_delay_seconds_bucket", { le: "0.25" }) > slow0, "histogram saw a slow sample");
  const r = await fetch(`${tp.httpUrl}/readyz`);
  assert.equal(r.status, 503);
  assert.equal((await r.json()).reason, "event_loop_lag");
  assert.equal((await fetch(`${tp.httpUrl}/livez`)).status, 200, "liveness unaffected (C7)");
  // 15 fresh samples at 50 ms push the stall out of the readiness window.
  await eventually(async () => (await fetch(`${tp.httpUrl}/readyz`)).status === 200, 5000, "readiness recovers");
  assert.ok(tp.pod.metrics.lag().currentMs < 100);
});

test("C8: /livez, /readyz, /health and /metrics never walk the sessions", async () => {
  const phones = [];
  for (let i = 0; i < 20; i++) {
    const p = tp.phone(`walk${i}@example.com`);
    await p.connect();
    phones.push(p);
  }
  const store = tp.pod.sessions;
  let walks = 0;
  const orig = store.values.bind(store);
  store.values = () => {
    walks++;
    return orig();
  };
  try {
    for (const path of ["/livez", "/readyz", "/health", "/metrics"]) {
      for (let i = 0; i < 5; i++) await fetch(`${tp.httpUrl}${path}`);
    }
  } finally {
    store.values = orig;
  }
  assert.equal(walks, 0);
  assert.ok(tp.pod.metrics.health().sessions.userSessions >= 20);
});

test("probe paths answer 405 to other methods and unknown paths 404; nothing secret in /metrics or /health", async () => {
  for (const path of ["/metrics", "/health", "/livez", "/readyz"]) {
    const r = await fetch(`${tp.httpUrl}${path}`, { method: "POST" });
    assert.equal(r.status, 405, path);
    assert.equal(r.headers.get("allow"), "GET, HEAD");
    assert.equal((await r.json()).error, "method_not_allowed");
  }
  assert.equal((await fetch(`${tp.httpUrl}/metricz`)).status, 404);
  const text = (await (await fetch(`${tp.httpUrl}/metrics`)).text()) + JSON.stringify(await (await fetch(`${tp.httpUrl}/health`)).json());
  for (const secret of [TEST_SECRET, KEY, ADMIN_TOKEN, tp.token("counted@example.com")]) assert.ok(!text.includes(secret));
});
