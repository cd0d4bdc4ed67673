/**
 * C16 (database latency) and C17 (traffic before ready) at the pod level, with the per-pod app
 * cache (CachedDirectory) in front of a store that takes 300 ms for every call.
 */
import assert from "node:assert/strict";
import { fork, type ChildProcess } from "node:child_process";
import os from "node:os";
import { after, test } from "node:test";
import { monitorEventLoopDelay, performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import {
  CachedDirectory,
  DelayedDirectory,
  EmbeddedDirectory,
  InProcessAppChangeBus,
  hashApiKey,
  type AppRecord,
} from "@mentra-cluster/directory";
import { mintUserToken } from "@mentra-cluster/protocol";
import { AppSim, PhoneSim } from "@mentra-cluster/phone-sim";
import { TEST_SECRET, eventually, sleep, startTestPod, type TestPod } from "../../../test/helpers/pod.ts";
import { freePort } from "../../../test/helpers/redis.ts";

const WAV = "/work/shared/data/audio/what-time-is-it-16khz.wav";
const PKG_A = "com.c16.alpha";
const PKG_B = "com.c16.beta";
const cleanup: (() => Promise<unknown>)[] = [];

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
};

/**
 * The pod runs as its own process (as in production, and as `npm run bench:pod` runs it), so the lag
 * measured is the pod's own and not that of the 100 simulated phones and 200 app sessions driving it.
 * This same file is the child: started with MENTRA_C16_CHILD=1 it runs the pod (startTestPod) over
 * a 300 ms store behind the app cache and answers stats requests over IPC.
 */
interface ChildStats {
  calls: number;
  byMethod: Record<string, number>;
  health: ReturnType<TestPod["pod"]["metrics"]["health"]>;
  podLag: ReturnType<TestPod["pod"]["metrics"]["lag"]>;
  loopP99Ms: number;
  loopMaxMs: number;
  cache: ReturnType<CachedDirectory["stats"]>;
}

async function runC16Child(): Promise<void> {
  const cfg = JSON.parse(process.env.MENTRA_C16_CONFIG!) as { apps: { packageName: string; publicUrl: string; apiKey: string }[]; users: string[]; latencyMs: number };
  const store = new DelayedDirectory(
    new EmbeddedDirectory({ seed: { apps: cfg.apps, users: cfg.users.map((id) => ({ id, installedApps: cfg.apps.map((a) => a.packageName) })) } }),
    { latencyMs: cfg.latencyMs },
  );
  // The production refresh period: no refresh falls inside the test.
  const directory = new CachedDirectory(store, { bus: new InProcessAppChangeBus(), refreshMs: 30_000 });
  const t0 = performance.now();
  const tp = await startTestPod({ deps: { directory }, config: { lagSampleIntervalMs: 100 } });
  const warmMs = performance.now() - t0;
  const loop = monitorEventLoopDelay({ resolution: 10 });
  loop.enable();
  const stats = (): ChildStats => ({
    calls: store.calls,
    byMethod: { ...store.callsByMethod },
    health: tp.pod.metrics.health(),
    podLag: tp.pod.metrics.lag(),
    loopP99Ms: loop.percentile(99) / 1e6,
    loopMaxMs: loop.max / 1e6,
    cache: directory.stats(),
  });
  process.on("message", (m: { id: number; cmd: string }) => {
    if (m.cmd === "stats") process.send!({ id: m.id, stats: stats() });
    if (m.cmd === "stop") void tp.close().then(() => directory.close()).finally(() => process.exit(0));
  });
  process.on("disconnect", () => process.exit(0));
  process.send!({ id: 0, up: { httpUrl: tp.httpUrl, wsUrl: tp.wsUrl, warmMs, calls: store.calls } });
}

class PodChild {
  private next = 1;
  private waiters = new Map<number, (m: { stats: ChildStats }) => void>();
  private constructor(readonly child: ChildProcess, readonly up: { httpUrl: string; wsUrl: string; warmMs: number; calls: number }) {
    child.on("message", (m: { id: number; stats: ChildStats }) => this.waiters.get(m.id)?.(m));
  }
  static start(config: object): Promise<PodChild> {
    const env: NodeJS.ProcessEnv = { ...process.env, MENTRA_C16_CHILD: "1", MENTRA_C16_CONFIG: JSON.stringify(config) };
    delete env.NODE_TEST_CONTEXT;
    const child = fork(fileURLToPath(import.meta.url), [], { env, execArgv: ["--import", "tsx"], stdio: ["ignore", "inherit", "inherit", "ipc"] });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("pod child did not start within 20 s")), 20_000);
      child.once("exit", (code) => reject(new Error(`pod child exited with ${code}`)));
      child.once("message", (m: { up: PodChild["up"] }) => {
        clearTimeout(timer);
        resolve(new PodChild(child, m.up));
      });
    });
  }
  stats(): Promise<ChildStats> {
    const id = this.next++;
    return new Promise((resolve) => {
      this.waiters.set(id, (m) => {
        this.waiters.delete(id);
        resolve(m.stats);
      });
      this.child.send({ id, cmd: "stats" });
    });
  }
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((r) => this.child.once("exit", () => r()));
    this.child.send({ cmd: "stop" });
    const t = setTimeout(() => this.child.kill("SIGKILL"), 5000);
    await exited;
    clearTimeout(t);
  }
}

if (process.env.MENTRA_C16_CHILD === "1") {
  await runC16Child();
} else {
  after(async () => {
    for (const c of cleanup.reverse()) await c().catch(() => undefined);
  });

  test("C16: 300 ms on every directory call; 100 phones at 10/s each start 2 apps → ack ≤ 1 s, no store round trip per packet or message, lag p99 < 50 ms", async () => {
    const appA = await new AppSim({ packageName: PKG_A, apiKey: "key-a", subscriptions: ["transcription:en-US"], echo: "all" }).start();
    const appB = await new AppSim({ packageName: PKG_B, apiKey: "key-b", subscriptions: ["transcription:en-US", "VAD"], echo: "none" }).start();
    cleanup.push(() => appA.stop(), () => appB.stop());
    const N = 100;
    const users = Array.from({ length: N }, (_, i) => `c16-${i}@example.com`);
    const pod = await PodChild.start({
      apps: [
        { packageName: PKG_A, publicUrl: appA.publicUrl, apiKey: "key-a" },
        { packageName: PKG_B, publicUrl: appB.publicUrl, apiKey: "key-b" },
      ],
      users,
      latencyMs: 300,
    });
    cleanup.push(() => pod.stop());
    // The load generator (100 phones, 200 app sessions) yields the CPU to the pod, as remote phones
    // would: on a 2-core machine running other test files it would otherwise be the pod's lag.
    const niceBefore = os.getPriority();
    try {
      os.setPriority(Math.min(19, niceBefore + 5));
      cleanup.push(async () => os.setPriority(niceBefore));
    } catch {
      // not allowed here: measure as is
    }
    assert.equal(pod.up.calls, 1, "warm-up is one listApps");
    assert.ok(pod.up.warmMs >= 300, "the pod was not ready before its cache was warm");

    // 100 phones at 10/s; each: connect, start both apps (REST), register UDP, stream speech, send messages.
    const ackMs: number[] = [];
    const startMs: number[] = [];
    const phones: PhoneSim[] = [];
    const messageTimers: NodeJS.Timeout[] = [];
    cleanup.push(async () => {
      messageTimers.forEach(clearInterval);
      await Promise.all(phones.map((p) => p.dispose().catch(() => undefined)));
    });
    const tStart = performance.now();
    const one = async (i: number) => {
      const p = new PhoneSim({ wsUrl: pod.up.wsUrl, restBase: pod.up.httpUrl, token: mintUserToken(users[i]!, TEST_SECRET), userId: users[i]! });
      phones.push(p);
      const t0 = performance.now();
      await p.connect();
      ackMs.push(performance.now() - t0);
      const t1 = performance.now();
      const [ra, rb] = await Promise.all([p.startApp(PKG_A), p.startApp(PKG_B)]);
      startMs.push(performance.now() - t1);
      assert.equal(ra.status, 200, JSON.stringify(ra.body));
      assert.equal(rb.status, 200, JSON.stringify(rb.body));
      await p.registerUdp();
      p.streamWav(WAV, { loop: true });
      // Phone → pod → app → pod → phone: VAD is relayed to B; local transcripts go to A, whose echo comes back as displays.
      let n = 0;
      messageTimers.push(
        setInterval(() => {
          p.send({ type: "VAD", status: n % 2 === 0 });
          p.send({ type: "local_transcription", text: `hello ${n++}`, isFinal: true, transcribeLanguage: "en-US" });
        }, 500),
      );
    };
    const runs: Promise<void>[] = [];
    for (let i = 0; i < N; i++) {
      runs.push(one(i));
      await sleep(100);
    }
    await Promise.all(runs);
    const connectPhaseMs = performance.now() - tStart;

    // Intent writes (one per started app) are fire-and-forget with 300 ms each: let them land.
    await eventually(async () => (await pod.stats()).byMethod.addRunningApp === 2 * N, 5000, "intent writes");
    const s0 = { ...(await pod.stats()), a: count(appA), b: count(appB), displays: sum(phones.map((p) => p.displays.length)) };
    assert.deepEqual(s0.byMethod, { listApps: 1, getOrCreateUser: N, addRunningApp: 2 * N }, "per phone: one user read at connect and one intent write per app, nothing else");

    // Steady state: audio and messages flow; count calls on the underlying store.
    const WINDOW_MS = 3000;
    await sleep(WINDOW_MS);
    const s1 = { ...(await pod.stats()), a: count(appA), b: count(appB), displays: sum(phones.map((p) => p.displays.length)) };

    const udpIn = s1.health.udp.received - s0.health.udp.received;
    const phoneMsgsIn = s1.health.throughput.wsClientMessagesIn - s0.health.throughput.wsClientMessagesIn;
    const appMsgsIn = s1.health.throughput.wsMiniappMessagesIn - s0.health.throughput.wsMiniappMessagesIn;
    const appMsgsOut = s1.health.throughput.wsMiniappMessagesOut - s0.health.throughput.wsMiniappMessagesOut;
    const report = {
      phones: N,
      podWarmUpMs: Math.round(pod.up.warmMs),
      connectPhaseMs: Math.round(connectPhaseMs),
      ackMs: { p50: +pct(ackMs, 50).toFixed(1), p99: +pct(ackMs, 99).toFixed(1), max: +Math.max(...ackMs).toFixed(1) },
      startBothAppsMs: { p50: Math.round(pct(startMs, 50)), max: Math.round(Math.max(...startMs)) },
      window: { ms: WINDOW_MS, udpPackets: udpIn, phoneMessages: phoneMsgsIn, appMessagesIn: appMsgsIn, appMessagesOut: appMsgsOut, displaysToPhones: s1.displays - s0.displays },
      storeCallsInWindow: s1.calls - s0.calls,
      storeCalls: s1.byMethod,
      podLagMs: { samplerP99: s1.podLag.p99Ms, loopDelayP99: +s1.loopP99Ms.toFixed(1), loopDelayMax: +s1.loopMaxMs.toFixed(1) },
      cache: { hits: s1.cache.hits, misses: s1.cache.misses, storeReads: s1.cache.storeReads },
    };
    console.log(`# C16 ${JSON.stringify(report)}`);

    assert.ok(Math.max(...ackMs) <= 1000, `connection_ack max ${Math.max(...ackMs)} ms`);
    assert.ok(udpIn > N * 25 * 2, `audio flowed: ${udpIn} UDP packets`);
    assert.ok(phoneMsgsIn >= N * 4, `phone messages flowed: ${phoneMsgsIn}`);
    assert.ok(appMsgsIn > 0 && appMsgsOut > 0, "app messages flowed both ways");
    assert.ok(s1.a.transcripts > s0.a.transcripts && s1.b.dataStreams > s0.b.dataStreams);
    assert.ok(s1.displays > s0.displays, "displays reached the phones");
    assert.equal(s1.calls - s0.calls, 0, "zero directory round trips while audio and messages flow");
    assert.equal(s1.cache.misses, 0);
    // The pod's event-loop delay over the whole run (connect phase and flow), every 10 ms tick. The
    // pod's own sampler (10 samples/s, p99 of its last 150, so nearly their maximum) is reported too.
    assert.ok(s1.loopP99Ms < 50, `pod event-loop lag p99 ${s1.loopP99Ms} ms`);
  });

  function count(app: AppSim) {
    let transcripts = 0;
    let dataStreams = 0;
    for (const s of app.sessions.values()) {
      transcripts += s.transcripts.length;
      dataStreams += s.dataStreams;
    }
    return { transcripts, dataStreams, sessions: app.sessions.size };
  }
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

  /** A store whose listApps fails while `down`, then answers after `slowMs`. */
  class WarmUpStore extends DelayedDirectory {
    down = true;
    slowMs = 0;
    constructor(seed: { apps: AppRecord[] }) {
      super(new EmbeddedDirectory({ seed }), { latencyMs: 0 });
    }
    override async listApps(): Promise<AppRecord[]> {
      if (this.down) throw new Error("directory unavailable");
      await sleep(this.slowMs);
      return super.listApps();
    }
  }

  test("C17: a pod whose app cache is not warm answers /readyz 503 (and /livez 200) until the cache is warm", async () => {
    const store = new WarmUpStore({ apps: [{ packageName: PKG_A, name: PKG_A, publicUrl: "http://127.0.0.1:9", hashedApiKey: hashApiKey("k"), type: "standard", permissions: [] }] });
    const errors: string[] = [];
    const directory = new CachedDirectory(store, { retryMinMs: 50, retryMaxMs: 200, onError: (_e, what) => errors.push(what) });
    cleanup.push(() => directory.close());
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    let tp: TestPod | null = null;
    const starting = startTestPod({ deps: { directory }, config: { port } }).then((t) => (tp = t));
    cleanup.push(async () => {
      // Whatever happened above, let the start finish so the pod can be stopped.
      store.down = false;
      store.slowMs = 0;
      const t = await Promise.race([starting, sleep(5000).then(() => null)]);
      await t?.close();
    });

    const probe = async (path: string) => {
      const r = await fetch(base + path);
      return { status: r.status, body: r.headers.get("content-type")?.includes("json") ? await r.json() : await r.text() };
    };
    await eventually(async () => (await probe("/livez")).status === 200, 5000, "listener up");
    // Failing store: not ready, alive, for as long as it fails.
    const seen: number[] = [];
    for (let i = 0; i < 10; i++) {
      const [live, ready] = await Promise.all([probe("/livez"), probe("/readyz")]);
      assert.equal(live.status, 200);
      assert.equal(ready.status, 503);
      assert.equal((ready.body as { ready: boolean }).ready, false);
      seen.push(ready.status);
      await sleep(50);
    }
    assert.equal(directory.warm, false);
    assert.equal(tp, null, "pod.start() has not finished");
    assert.ok(errors.filter((e) => e === "warm-up").length >= 2, "warm-up retried");

    // The store comes back but is slow: still not ready until the table is loaded.
    store.slowMs = 800;
    store.down = false;
    const t0 = performance.now();
    await sleep(300);
    assert.equal((await probe("/readyz")).status, 503, "still warming up");
    assert.equal((await probe("/livez")).status, 200);
    await starting;
    const readyAfter = performance.now() - t0;
    const ready = await probe("/readyz");
    assert.equal(ready.status, 200, JSON.stringify(ready.body));
    assert.equal(directory.warm, true);
    assert.equal(directory.peekApp(PKG_A)?.publicUrl, "http://127.0.0.1:9");
    console.log(`# C17 /readyz 503 through ${seen.length} probes while the store failed, 200 ${readyAfter.toFixed(0)} ms after it came back slow (800 ms); /livez 200 throughout`);
  });
}
