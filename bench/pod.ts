/**
 * `npm run bench:pod`: N simulated phones (WebSocket + UDP PCM at 25 packets/s of 40 ms) each with
 * one lean SDK-protocol app subscribed to transcription, against one pod running as its own process.
 * Reports the pod's CPU ms per user-second (raw, and above the idle baseline) and event-loop lag p99.
 *
 *   npm run bench:pod -- [--users 100,250,500] [--measure 20] [--metrics on|off|both]
 */
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { createInterface } from "node:readline";
import { mintUserToken, readWav } from "@mentra-cluster/protocol";
import { AppSim, PhoneSim } from "@mentra-cluster/phone-sim";
import { POD_NODE_FLAGS } from "@mentra-cluster/pod/node-flags";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const { values } = parseArgs({
  options: {
    users: { type: "string", default: "100,250,500" },
    measure: { type: "string", default: "20" },
    metrics: { type: "string", default: "on" },
    ramp: { type: "string", default: "50" },
    profile: { type: "boolean", default: false },
  },
});
const SECRET = "bench-secret";
const PKG = "com.bench.app";
const KEY = "bench-key";
const CLK = 100; // USER_HZ on Linux
const wav = readWav(path.resolve(root, "../shared/data/audio/short-test-16khz.wav")).pcm;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function cpuMs(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8");
  const rest = f.slice(f.lastIndexOf(")") + 2).split(" ");
  return ((Number(rest[11]) + Number(rest[12])) * 1000) / CLK; // utime + stime
}
function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : 0;
}

async function startPod(appUrl: string, metricsEnabled: boolean): Promise<{ child: ChildProcess; http: string; ws: string }> {
  const child = spawn(process.execPath, [...POD_NODE_FLAGS, ...(values.profile ? ["--cpu-prof", `--cpu-prof-dir=${path.join(root, "bench/out")}`] : []), "--import", "tsx", path.join(root, "bench/pod-process.ts")], {
    cwd: root,
    env: { ...process.env, JWT_SECRET: SECRET, BENCH_APP_URL: appUrl, LAG_SAMPLE_INTERVAL_MS: "250", METRICS_ENABLED: String(metricsEnabled) },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const line = await new Promise<string>((resolve, reject) => {
    const rl = createInterface({ input: child.stdout! });
    rl.once("line", resolve);
    child.once("exit", (c) => reject(new Error(`pod exited ${c}`)));
  });
  const a = JSON.parse(line);
  return { child, http: a.httpUrl, ws: a.wsUrl };
}

async function run(n: number, measureS: number, metricsEnabled: boolean) {
  const app = await new AppSim({ packageName: PKG, apiKey: KEY, subscriptions: ["transcription:en-US"], echo: "final" }).start();
  const pod = await startPod(app.publicUrl, metricsEnabled);
  const pid = pod.child.pid!;
  await sleep(1500);
  const idle0 = cpuMs(pid);
  await sleep(5000);
  const idleMsPerS = (cpuMs(pid) - idle0) / 5;

  const phones: PhoneSim[] = [];
  const streams: { stop(): void }[] = [];
  let failures = 0;
  const rampPerS = Number(values.ramp);
  const t0 = Date.now();
  for (let i = 0; i < n; i++) {
    const user = `bench${i}@load.test`;
    const p = new PhoneSim({ wsUrl: pod.ws, restBase: pod.http, token: mintUserToken(user, SECRET), userId: user });
    phones.push(p);
    const go = async () => {
      await p.connect();
      await p.registerUdp(5000);
      const r = await p.startApp(PKG);
      if (r.status !== 200) throw new Error(`start ${r.status}`);
      // Offsets so users are not in lockstep.
      const offset = Math.floor(Math.random() * (wav.length / 1280)) * 1280;
      streams.push(p.streamPcm(Buffer.concat([wav.subarray(offset), wav.subarray(0, offset)]), { loop: true }));
    };
    go().catch(() => failures++);
    const due = t0 + ((i + 1) * 1000) / rampPerS;
    if (due > Date.now()) await sleep(due - Date.now());
  }
  await sleep(5000); // settle
  const c0 = cpuMs(pid);
  const h0 = await (await fetch(`${pod.http}/health`)).json();
  const transcripts0 = [...app.sessions.values()].reduce((a, s) => a + s.transcripts.length, 0);
  const driverCpu0 = process.cpuUsage();
  const m0 = Date.now();
  await sleep(measureS * 1000);
  const elapsedS = (Date.now() - m0) / 1000;
  const c1 = cpuMs(pid);
  const h1 = await (await fetch(`${pod.http}/health`)).json();
  const driverCpu = process.cpuUsage(driverCpu0);
  const transcripts1 = [...app.sessions.values()].reduce((a, s) => a + s.transcripts.length, 0);
  const podMsPerS = (c1 - c0) / elapsedS;
  const result = {
    users: n,
    metrics: metricsEnabled ? "on" : "off",
    connected: h1.sessions.userSessions,
    apps: h1.sessions.miniappSessions,
    failures,
    podCpuMsPerS: +podMsPerS.toFixed(1),
    podCoreShare: +(podMsPerS / 1000).toFixed(3),
    idleCpuMsPerS: +idleMsPerS.toFixed(1),
    cpuMsPerUserSecond: +(podMsPerS / n).toFixed(3),
    cpuMsPerUserSecondAboveIdle: +((podMsPerS - idleMsPerS) / n).toFixed(3),
    lagP99Ms: h1.eventLoop.lagP99Ms,
    lagAvgMs: h1.eventLoop.lagAvgMs,
    udpPacketsPerS: Math.round((h1.udp.received - h0.udp.received) / elapsedS),
    udpDropped: h1.udp.dropped - h0.udp.dropped,
    transcriptsPerS: +((transcripts1 - transcripts0) / elapsedS).toFixed(1),
    podRssMb: Math.round(rssMb(pid)),
    driverCpuShare: +((driverCpu.user + driverCpu.system) / 1000 / 1000 / elapsedS).toFixed(2),
  };
  for (const s of streams) s.stop();
  await Promise.all(phones.map((p) => p.dispose().catch(() => undefined)));
  pod.child.kill("SIGTERM");
  await new Promise((r) => pod.child.once("exit", r));
  await app.stop();
  return result;
}

const users = values.users!.split(",").map(Number);
const modes = values.metrics === "both" ? [true, false] : [values.metrics !== "off"];
const results = [];
for (const n of users) {
  for (const m of modes) {
    const r = await run(n, Number(values.measure), m);
    results.push(r);
    console.log(JSON.stringify(r));
  }
}
console.log("\n| users | metrics | connected | pod CPU (cores) | CPU ms / user-s | above idle | lag p99 ms | UDP pkt/s | drops | transcripts/s | RSS MB | driver CPU |");
console.log("|---|---|---|---|---|---|---|---|---|---|---|---|");
for (const r of results) {
  console.log(`| ${r.users} | ${r.metrics} | ${r.connected} | ${r.podCoreShare} | ${r.cpuMsPerUserSecond} | ${r.cpuMsPerUserSecondAboveIdle} | ${r.lagP99Ms} | ${r.udpPacketsPerS} | ${r.udpDropped} | ${r.transcriptsPerS} | ${r.podRssMb} | ${r.driverCpuShare} |`);
}
process.exit(0);
