/**
 * The load test end to end on its own cluster (Redis, gateway, pod and STT emulator as processes):
 *   1. 20 users (2 on the real @mentra/sdk app) through the gateway, UDP audio, transcription over
 *      the pod's streaming STT provider, displays back to the phones; the report's numbers are
 *      checked against the pod's own /metrics and against what the generator sent.
 *   2. The live page in a real headless Chromium: it loads, its charts draw from the driver's data,
 *      Start / Set users / Stop work; a run whose generator counts as saturated says so instead of
 *      reporting a capacity; the report page renders its charts.
 * Chromium: CHROMIUM_PATH, else /usr/bin/chromium (Debian's). Without it the browser test fails
 * when CI=true and is skipped (saying why) otherwise.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { parsePrometheusText } from "@mentra-cluster/metrics";
import { Driver, defaultOptions, procCpuMs, reanalyze, startWebServer, type RunResult, type WebServer } from "@mentra-cluster/loadtest";

const out = mkdtempSync(path.join(tmpdir(), "loadtest-test-"));
const opts = defaultOptions({
  users: 20,
  steps: [10, 20],
  rampPerS: 40,
  holdS: 5,
  settleS: 1,
  holdWaitS: 10,
  sdkUsers: 2,
  outDir: out,
  uiPort: 0,
  workers: 1,
});
let driver: Driver;
let result: RunResult | null = null;
let web: WebServer | null = null;

before(async () => {
  driver = new Driver(opts);
  await driver.setup();
});
after(async () => {
  await web?.close();
  await driver?.teardown();
  rmSync(out, { recursive: true, force: true });
});

async function scrape(url: string) {
  return parsePrometheusText(await (await fetch(`${url}/metrics`)).text());
}
const value = (m: Awaited<ReturnType<typeof scrape>>, name: string) =>
  (m.get(name) ?? m.get(name.replace(/_count$/, "")))?.samples.filter((s) => s.name === name).reduce((a, s) => a + s.value, 0) ?? NaN;

test("20 users end to end: the report's numbers agree with the pod's own /metrics", async () => {
  const pod0 = driver.cluster!.pods[0]!;
  const cpuBefore = { metrics: value(await scrape(pod0.httpUrl), "process_cpu_seconds_total"), proc: procCpuMs(pod0.pid)! };
  result = await driver.start();
  assert.ok(result, "the run wrote a report");
  const r = result.report;
  const pod = driver.cluster!.pods[0]!;
  const m = await scrape(pod.httpUrl);
  const cpuNow = procCpuMs(pod.pid);

  // Files: the HTML with the answer, the JSON with every sample.
  const json = JSON.parse(readFileSync(result.jsonPath, "utf8"));
  assert.equal(json.samples.length, r.samples.length);
  assert.ok(r.samples.length >= 12, `${r.samples.length} samples`);
  assert.ok(readFileSync(result.htmlPath, "utf8").includes("id=\"answer\""));
  // The stored samples are enough to analyse the run again, to the same figures.
  const again = reanalyze(json);
  assert.deepEqual(again.steps.map((s) => [s.users, s.lagP99Ms, s.podCpuCores]), r.steps.map((s) => [s.users, s.lagP99Ms, s.podCpuCores]));
  assert.equal(again.verdict.answer, r.verdict.answer);
  assert.ok(r.verdict.answer.length > 40);

  // Steps: idle baseline, 10, 20; every user ran on the one pod, none failed.
  assert.deepEqual(r.steps.map((s) => s.users), [0, 10, 20]);
  const s20 = r.steps[2]!;
  assert.equal(s20.podSessionsMax, 20);
  assert.equal(s20.usersRunning, 20);
  assert.equal(s20.failures, 0);
  assert.ok(s20.udpInPerS! > 20 * 25 * 0.8 && s20.udpInPerS! < 20 * 25 * 1.2, `UDP in ${s20.udpInPerS}/s for 20 users`);
  assert.ok(s20.transcriptsPerS! > 0 && s20.latency.n > 0, "transcripts reached the apps and displays came back to the phones");
  assert.ok(s20.podCpuCores! > 0 && s20.lagP99Ms !== null && s20.rssMB! > 20);
  assert.ok(r.fits.cpuMsPerS && r.verdict.perUserCpuMs !== null, "per-user CPU was fitted");

  // Against the pod's own /metrics, scraped now (phones have hung up since the last sample).
  const last = r.samples[r.samples.length - 1]!.pods[0]!;
  assert.equal(value(m, "mentra_session_creations_total"), 20, "one session per user");
  assert.equal(last.counters.sessionCreations, 20);
  const udpNow = value(m, "mentra_udp_packets_received_total");
  assert.ok(last.counters.udpReceived <= udpNow && udpNow - last.counters.udpReceived <= 3 * 20 * 25, `udp: report ${last.counters.udpReceived}, pod now ${udpNow}`);
  const cpuS = value(m, "process_cpu_seconds_total");
  assert.ok(last.counters.cpuSeconds! <= cpuS && cpuS - last.counters.cpuSeconds! < 3, `cpu: report ${last.counters.cpuSeconds} s, pod now ${cpuS} s`);
  // And /metrics' CPU counter (it starts with the pod's metrics, after start-up) grows like the kernel's count.
  const dMetrics = (cpuS - cpuBefore.metrics) * 1000;
  const dProc = cpuNow! - cpuBefore.proc;
  assert.ok(Math.abs(dMetrics - dProc) < Math.max(150, dProc * 0.1), `process_cpu_seconds_total grew ${dMetrics} ms, /proc ${dProc} ms`);
  const lagCount = value(m, "mentra_event_loop_delay_seconds_count");
  assert.ok(last.counters.lagSamples <= lagCount && lagCount - last.counters.lagSamples <= 16, `lag samples: report ${last.counters.lagSamples}, pod now ${lagCount}`);
  const rssNow = value(m, "mentra_rss_bytes") / 1048576;
  assert.ok(Math.abs(rssNow - last.rssMB) / rssNow < 0.3, `rss: report ${last.rssMB} MB, pod now ${rssNow} MB`);
  assert.equal(value(m, "mentra_udp_packets_dropped_total"), last.counters.udpDropped);
  assert.equal(value(m, "mentra_unhandled_rejections_total"), 0);

  // The generator's side: the audio rate it sent is the rate the pod received.
  const gen = r.samples[r.samples.length - 1]!.gen;
  assert.ok(gen.packetsSent > 0 && last.counters.udpReceived >= gen.packetsSent * 0.95, `sent ${gen.packetsSent}, pod got ${last.counters.udpReceived}`);
  assert.ok(Math.abs(s20.packetsPerSSent! - s20.udpInPerS!) / s20.udpInPerS! < 0.1, `generator sent ${s20.packetsPerSSent}/s, pod received ${s20.udpInPerS}/s`);
  assert.equal(gen.failures, 0);
  // The real-SDK sample: its sessions ran and got transcripts.
  const sdk = r.samples[r.samples.length - 1]!.sdk;
  assert.equal(sdk.sessions, 2);
  assert.ok(sdk.transcripts > 0);
});

function chromiumPath(): string | null {
  const candidates = [process.env.CHROMIUM_PATH, "/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"].filter((p): p is string => !!p);
  return candidates.find((p) => existsSync(p)) ?? null;
}

test("the live page and the report in a real headless Chromium", async (t) => {
  const exe = chromiumPath();
  if (!exe) {
    const why = "no Chromium (set CHROMIUM_PATH or apt-get install -y chromium)";
    if (process.env.CI === "true") assert.fail(`the browser test needs Chromium: ${why}`);
    t.skip(why);
    return;
  }
  const { chromium } = await import("playwright-core");
  web = await startWebServer(driver, { port: 0, host: "127.0.0.1" });
  const browser = await chromium.launch({ executablePath: exe, headless: true, args: ["--no-sandbox", "--disable-gpu"] });
  try {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(e.message));
    await page.goto(web.url);
    // The finished run is on the page: its charts are drawn from the driver's samples.
    await page.waitForFunction(() => document.querySelectorAll("svg.chart").length === 5);
    await page.waitForFunction(() => document.getElementById("status")?.textContent === "done");
    const state = (await (await fetch(`${web.url}/api/state?since=0`)).json()) as { samples: unknown[] };
    const drawn = await page.$eval('svg[data-chart="sessions"] path[data-series="phones running"]', (p) => Number(p.getAttribute("data-n")));
    assert.ok(drawn >= state.samples.length - 2 && drawn <= state.samples.length + 2, `${drawn} points drawn for ${state.samples.length} samples`);
    for (const id of ["lag", "cpu", "memory"]) {
      const n = await page.$eval(`svg[data-chart="${id}"]`, (s) => Number(s.getAttribute("data-points")));
      assert.ok(n > 10, `${id} chart has ${n} points`);
    }
    assert.equal(await page.textContent("#answer"), result!.report.verdict.answer);

    // A second run from the page. The generator counts as saturated at any CPU use, so the run
    // must say so instead of reporting a capacity.
    driver.o.generatorCpuLimit = 0;
    await page.fill("#steps", "4");
    await page.click("#start");
    await page.waitForFunction(() => /^running/.test(document.getElementById("status")!.textContent!));
    await page.waitForFunction(() => /users 4\/4/.test(document.getElementById("summary")!.textContent!), undefined, { timeout: 20_000 });
    await page.fill("#users", "6");
    await page.click("#set-users");
    await page.waitForFunction(() => /users 6\/6/.test(document.getElementById("summary")!.textContent!), undefined, { timeout: 20_000 });
    // Hold 6 users long enough for the step to be measured (samples after its settle time), so the
    // verdict is about that step rather than "not measured".
    const seqAt6 = ((await (await fetch(`${web.url}/api/state?since=0`)).json()) as { seq: number }).seq;
    for (let i = 0; i < 100; i++) {
      const st = (await (await fetch(`${web.url}/api/state?since=${seqAt6}`)).json()) as { samples: unknown[] };
      if (st.samples.length >= 5) break;
      await page.waitForTimeout(250);
    }
    await page.click("#stop");
    await page.waitForFunction(() => document.getElementById("status")?.textContent === "done", undefined, { timeout: 20_000 });
    const answer = await page.textContent("#answer");
    assert.match(answer ?? "", /^No capacity is reported: the load generator could not drive \d+ users \(generator-cpu/);
    assert.equal(driver.lastResult!.report.verdict.kind, "saturated");
    assert.ok((await page.$eval('svg[data-chart="lag"]', (s) => Number(s.getAttribute("data-points")))) > 0);

    // The report pages: the one just written (served) and the first run's file.
    await page.click("#report-link");
    await page.waitForSelector("#answer");
    assert.equal(await page.getAttribute("#answer", "data-kind"), "saturated");
    assert.equal(await page.locator("svg.chart").count(), 5);
    await page.goto(pathToFileURL(result!.htmlPath).href);
    assert.equal(await page.textContent("#answer"), result!.report.verdict.answer);
    assert.equal(await page.locator("#steps tr[data-step]").count(), 3);
    const lagPoints = await page.$eval('svg[data-chart="lag"]', (s) => Number(s.getAttribute("data-points")));
    assert.ok(lagPoints > 10);
    const shot = path.join(out, "report.png");
    await page.screenshot({ path: shot, fullPage: true });
    assert.ok(existsSync(shot));
    assert.deepEqual(errors, [], "no script errors on the pages");
  } finally {
    await browser.close();
  }
});
