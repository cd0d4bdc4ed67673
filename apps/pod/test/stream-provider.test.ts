/**
 * The streaming WebSocket transcription provider against a fake STT server that runs the energy
 * detector: results match the in-process provider, audio is buffered across connects and drops,
 * reconnects back off, C11 (no connection after close while a reconnect is pending), C13 (a socket
 * that finishes connecting after close, a connect timeout nobody awaits: nothing rejects, nothing
 * stays open), fatal refusals go to onError once, and a pod with the provider delivers transcripts.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import net from "node:net";
import { WebSocketServer, type WebSocket } from "ws";
import { AppSim } from "@mentra-cluster/phone-sim";
import { readWav, type TranscriptionData } from "@mentra-cluster/protocol";
import { EnergyTranscriptionProvider } from "../src/transcription/energy.ts";
import { ManualClock } from "../src/util/clock.ts";
import { StreamTranscriptionProvider, streamProviderFromEnv } from "../src/transcription/stream.ts";
import type { TranscriptionStream } from "../src/transcription/provider.ts";
import { appSeed, eventually, sleep, startTestPod } from "../../../test/helpers/pod.ts";

const WAV = new URL("../../../../shared/data/audio/what-time-is-it-16khz.wav", import.meta.url).pathname;
const pcm = readWav(WAV).pcm;
const PACKET = 1280; // 40 ms

let unhandled = 0;
const onUnhandled = () => void unhandled++;
process.on("unhandledRejection", onUnhandled);
after(() => void process.off("unhandledRejection", onUnhandled));

interface FakeStt {
  url: string;
  connections: number;
  open: Set<WebSocket>;
  bytesIn: number;
  /** Per-connection hooks. */
  dropAfterMs: number;
  handshakeDelayMs: number;
  refuse: number;
  stop(): Promise<void>;
}

/** A fake STT: the energy detector per connection, offsets from 0, plus fault knobs. */
async function fakeStt(): Promise<FakeStt> {
  const energy = new EnergyTranscriptionProvider();
  const server = http.createServer();
  const wss = new WebSocketServer({ noServer: true });
  const f: FakeStt = {
    url: "",
    connections: 0,
    open: new Set(),
    bytesIn: 0,
    dropAfterMs: 0,
    handshakeDelayMs: 0,
    refuse: 0,
    async stop() {
      for (const ws of wss.clients) ws.terminate();
      wss.close();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
  server.on("upgrade", (req, socket, head) => {
    f.connections++;
    if (f.refuse) {
      socket.end(`HTTP/1.1 ${f.refuse} Nope\r\ncontent-length: 0\r\nconnection: close\r\n\r\n`);
      return;
    }
    setTimeout(() => {
      if (socket.destroyed) return;
      wss.handleUpgrade(req, socket, head, (ws) => {
        f.open.add(ws);
        const s = energy.createStream({
          language: new URL(req.url!, "http://x").searchParams.get("language")!,
          startEpochMs: 0,
          onResult: (d) => ws.send(JSON.stringify({ type: "result", text: d.text, isFinal: d.isFinal, utteranceId: d.utteranceId, speakerId: d.speakerId, startMs: d.startTime, endMs: d.endTime })),
          onError: () => undefined,
        });
        if (f.dropAfterMs) setTimeout(() => ws.close(1011, "drop"), f.dropAfterMs);
        ws.on("message", (d: Buffer) => {
          f.bytesIn += d.length;
          s.write(d);
        });
        ws.on("close", () => {
          f.open.delete(ws);
          s.close();
        });
      });
    }, f.handshakeDelayMs);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  f.url = `ws://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  return f;
}

let stt: FakeStt;
before(async () => {
  stt = await fakeStt();
});
after(async () => {
  await stt.stop();
});

function collect() {
  const results: TranscriptionData[] = [];
  const errors: Error[] = [];
  return { results, errors, onResult: (d: TranscriptionData) => void results.push(d), onError: (e: Error) => void errors.push(e) };
}

/** Writes the clip in 40 ms packets, `speed` times faster than real time. */
async function feed(stream: TranscriptionStream, audio: Buffer, speed = 8) {
  for (let off = 0; off < audio.length; off += PACKET) {
    stream.write(audio.subarray(off, Math.min(audio.length, off + PACKET)));
    if ((off / PACKET) % speed === speed - 1) await sleep(40);
  }
}

test("results match the in-process energy provider: same texts and times, provider 'stream', audio sent before the socket opened is not lost", async () => {
  const start = 1_700_000_000_000;
  const ref = collect();
  const e = new EnergyTranscriptionProvider().createStream({ language: "en-US", startEpochMs: start, ...ref });
  e.write(pcm);
  const provider = new StreamTranscriptionProvider({ url: stt.url, frameMs: 0 });
  const got = collect();
  const before = stt.bytesIn;
  const s = provider.createStream({ language: "en-US", startEpochMs: start, ...got });
  // Written synchronously, before the handshake can have finished: buffered, then sent in order.
  s.write(pcm.subarray(0, 16_000));
  await feed(s, pcm.subarray(16_000));
  // The detector finalises after 300 ms of silence; the clip ends in silence.
  await eventually(() => got.results.length >= ref.results.length, 5000, "stream results");
  await eventually(() => stt.bytesIn - before === pcm.length - (pcm.length % 2), 3000, "every byte at the STT");
  assert.deepEqual(
    got.results.map((r) => [r.text, r.isFinal, r.startTime, r.endTime]),
    ref.results.map((r) => [r.text, r.isFinal, r.startTime, r.endTime]),
  );
  assert.ok(got.results.some((r) => r.isFinal));
  assert.ok(got.results.every((r) => r.provider === "stream" && r.transcribeLanguage === "en-US" && r.type === "transcription"));
  assert.equal(got.errors.length, 0);
  s.close();
  assert.equal(s.closed, true);
  assert.equal(provider.stats.streamsOpen, 0);
  e.close();
});

test("frameMs coalesces packets into larger frames (fewer socket writes), with the same results (random masks too)", async () => {
  const ref = collect();
  const e = new EnergyTranscriptionProvider().createStream({ language: "en-US", startEpochMs: 0, ...ref });
  e.write(pcm);
  const provider = new StreamTranscriptionProvider({ url: stt.url, frameMs: 120, mask: "random" });
  const got = collect();
  const s = provider.createStream({ language: "en-US", startEpochMs: 0, ...got });
  await feed(s, pcm, 16);
  await eventually(() => got.results.length >= ref.results.length, 5000, "framed results");
  assert.deepEqual(got.results.map((r) => [r.text, r.isFinal, r.endTime]), ref.results.map((r) => [r.text, r.isFinal, r.endTime]));
  assert.ok(provider.stats.framesOut <= Math.ceil(pcm.length / (120 * 32)), `${provider.stats.framesOut} frames for ${Math.ceil(pcm.length / PACKET)} packets`);
  assert.ok(provider.stats.bytesOut >= pcm.length - 120 * 32);
  s.close();
  e.close();
});

test("the default 100 ms frames: a part-filled frame is sent once it is 100 ms old (the mic went quiet), and closing discards it", async () => {
  const provider = new StreamTranscriptionProvider({ url: stt.url });
  assert.equal(provider.frameMs, 100);
  const got = collect();
  const s = provider.createStream({ language: "en-US", startEpochMs: 0, ...got });
  await eventually(() => provider.stats.connectsOpened === 1, 3000, "connected");
  const before = stt.bytesIn;
  // Three 40 ms packets fill a frame: one socket write.
  for (let i = 0; i < 3; i++) s.write(pcm.subarray(i * PACKET, (i + 1) * PACKET));
  assert.equal(provider.stats.framesOut, 1);
  // One more packet, then silence: it leaves as a frame of its own within about 100–200 ms.
  s.write(pcm.subarray(3 * PACKET, 4 * PACKET));
  assert.equal(provider.stats.framesOut, 1, "held while the frame fills");
  await eventually(() => stt.bytesIn - before === 4 * PACKET, 1000, "the stale frame reached the STT");
  assert.equal(provider.stats.framesOut, 2);
  // A part-filled frame at close() is discarded, and nothing is sent after close (C11).
  s.write(pcm.subarray(4 * PACKET, 5 * PACKET));
  s.close();
  await sleep(250);
  assert.equal(provider.stats.framesOut, 2);
  assert.equal(got.errors.length, 0);
});

test("a dropped connection is reconnected with backoff; times stay continuous across connections; onError is not called", async () => {
  const transient: Error[] = [];
  const provider = new StreamTranscriptionProvider({ url: stt.url, backoff: { baseMs: 50, maxMs: 200 }, onTransientError: (e) => void transient.push(e) });
  const got = collect();
  const c0 = stt.connections;
  stt.dropAfterMs = 700;
  try {
    const s = provider.createStream({ language: "en-US", startEpochMs: 0, ...got });
    // Real-time-ish feeding for ~2.6 s so the drop happens mid-stream, twice over.
    const twice = Buffer.concat([pcm, pcm]);
    await feed(s, twice, 3);
    await eventually(() => got.results.filter((r) => r.isFinal).length >= 2, 5000, "finals after reconnects");
    assert.ok(stt.connections - c0 >= 2, `expected reconnects, saw ${stt.connections - c0} connections`);
    assert.ok(transient.length >= 1 && /connection lost/.test(transient[0]!.message));
    assert.equal(got.errors.length, 0);
    // Audio time never goes backwards between results, even across connections.
    for (let i = 1; i < got.results.length; i++) assert.ok(got.results[i]!.endTime >= got.results[i - 1]!.startTime, "times continue");
    const lastEnd = Math.max(...got.results.map((r) => r.endTime));
    assert.ok(lastEnd > (pcm.length / 32) * 1.2, `results cover the second pass (last end ${lastEnd} ms)`);
    s.close();
  } finally {
    stt.dropAfterMs = 0;
  }
});

test("C11: the stream is closed while a reconnect is pending → no connection is opened afterwards, no callback fires", async () => {
  const provider = new StreamTranscriptionProvider({ url: stt.url, backoff: { baseMs: 300, maxMs: 300, jitter: 0 } });
  const got = collect();
  stt.dropAfterMs = 100;
  try {
    const s = provider.createStream({ language: "en-US", startEpochMs: 0, ...got });
    await eventually(() => provider.stats.reconnectsScheduled === 1, 3000, "a scheduled reconnect");
    const c = stt.connections;
    s.close();
    s.write(pcm); // ignored
    await sleep(600);
    assert.equal(stt.connections, c, "no connection after close");
    assert.equal(provider.stats.connectAttempts, 1);
    assert.equal(got.results.length + got.errors.length, 0);
  } finally {
    stt.dropAfterMs = 0;
  }
});

test("C13: a socket that finishes connecting after close is closed at once; a connect timeout nobody awaits rejects nothing", async () => {
  const u0 = unhandled;
  // 1. Slow handshake: close() while connecting.
  stt.handshakeDelayMs = 200;
  try {
    const provider = new StreamTranscriptionProvider({ url: stt.url });
    const got = collect();
    const s = provider.createStream({ language: "en-US", startEpochMs: 0, ...got });
    s.write(pcm.subarray(0, PACKET));
    s.close();
    await sleep(400);
    assert.equal(stt.open.size, 0, "nothing left open on the server");
    assert.equal(provider.stats.connectsOpened, 0);
    assert.equal(got.results.length + got.errors.length, 0);
  } finally {
    stt.handshakeDelayMs = 0;
  }
  // 2. A server that accepts TCP and never answers: each connect times out; after maxAttempts, onError once.
  const mute = net.createServer(() => undefined);
  await new Promise<void>((r) => mute.listen(0, "127.0.0.1", () => r()));
  const port = (mute.address() as net.AddressInfo).port;
  try {
    const provider = new StreamTranscriptionProvider({ url: `ws://127.0.0.1:${port}`, connectTimeoutMs: 80, maxAttempts: 3, backoff: { baseMs: 20, maxMs: 40 } });
    const got = collect();
    provider.createStream({ language: "en-US", startEpochMs: 0, ...got });
    await eventually(() => got.errors.length === 1, 3000, "onError after maxAttempts");
    assert.match(got.errors[0]!.message, /unreachable after 3 attempts.*timed out/);
    await sleep(200);
    assert.equal(got.errors.length, 1);
    assert.equal(provider.stats.connectAttempts, 3);
    // And a timeout that happens after close(): nothing fires at all.
    const p2 = new StreamTranscriptionProvider({ url: `ws://127.0.0.1:${port}`, connectTimeoutMs: 50 });
    const got2 = collect();
    p2.createStream({ language: "en-US", startEpochMs: 0, ...got2 }).close();
    await sleep(150);
    assert.equal(got2.errors.length + got2.results.length, 0);
    assert.equal(p2.stats.connectAttempts, 1);
  } finally {
    mute.close();
  }
  assert.equal(unhandled, u0, "no unhandled rejection");
});

test("a refused handshake (HTTP 401) is fatal: onError once, no retry; bounded buffering while disconnected", async () => {
  stt.refuse = 401;
  try {
    const drops: Array<[string, number]> = [];
    const provider = new StreamTranscriptionProvider({ url: stt.url, maxBufferedMs: 200, frameMs: 0, onAudioDropped: (why, n) => void drops.push([why, n]) });
    const got = collect();
    const c0 = stt.connections;
    const s = provider.createStream({ language: "en-US", startEpochMs: 0, ...got });
    for (let i = 0; i < 20; i++) s.write(pcm.subarray(i * PACKET, (i + 1) * PACKET));
    assert.ok(s.bufferedBytes <= 200 * 32, `buffer bounded (${s.bufferedBytes} B)`);
    assert.ok(provider.stats.droppedBytes >= 20 * PACKET - 200 * 32);
    // Every dropped byte reached the hook the pod counts drops with.
    assert.ok(drops.length > 0 && drops.every(([why]) => why === "stt_disconnected"));
    assert.equal(drops.reduce((a, [, n]) => a + n, 0), provider.stats.droppedBytes);
    await eventually(() => got.errors.length === 1, 3000, "fatal error");
    assert.match(got.errors[0]!.message, /HTTP 401/);
    await sleep(300);
    assert.equal(stt.connections - c0, 1, "no retry after a 4xx");
    s.close();
  } finally {
    stt.refuse = 0;
  }
  assert.throws(() => new StreamTranscriptionProvider({ url: "http://nope" }), /ws:\/\//);
  assert.equal(streamProviderFromEnv({}), null);
  assert.equal(streamProviderFromEnv({ TRANSCRIPTION_PROVIDER: "energy" }), null);
  assert.throws(() => streamProviderFromEnv({ TRANSCRIPTION_PROVIDER: "stream" }), /STT_URL/);
  assert.equal(streamProviderFromEnv({ TRANSCRIPTION_PROVIDER: "stream", STT_URL: stt.url })?.name, "stream");
});

test("a pod with the streaming provider: phone audio over UDP → STT socket → transcript at the app; disposing the session closes its STT socket", async () => {
  const PKG = "com.test.stream";
  const KEY = "stream-key";
  const app = await new AppSim({ packageName: PKG, apiKey: KEY, subscriptions: ["transcription:en-US"], echo: "none" }).start();
  const provider = new StreamTranscriptionProvider({ url: stt.url });
  const tp = await startTestPod({ seed: appSeed(PKG, app.publicUrl, KEY), deps: { transcription: provider } });
  try {
    const phone = tp.phone("streamer@example.com");
    await phone.connect();
    await phone.registerUdp();
    assert.equal((await phone.startApp(PKG)).status, 200);
    const s = phone.streamPcm(pcm, { loop: false });
    await eventually(() => [...app.sessions.values()].some((x) => x.transcripts.some((t) => t.isFinal)), 8000, "a final transcript at the app");
    await s.done;
    const t = [...app.sessions.values()][0]!.transcripts;
    assert.ok(t.every((x) => x.provider === "stream"));
    assert.equal(provider.stats.streamsOpen, 1);
    assert.equal(stt.open.size, 1);
    await phone.dispose();
    tp.pod.sessions.disposeAll("test");
    assert.equal(provider.stats.streamsOpen, 0);
    await eventually(() => stt.open.size === 0, 3000, "STT socket closed");
  } finally {
    await tp.close();
    await app.stop();
  }
});

async function metricValue(url: string, name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  let total = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-z_]+)(\{[^}]*\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    if (Object.entries(labels).every(([k, v]) => (m[2] ?? "").includes(`${k}="${v}"`))) total += Number(m[3]);
  }
  return total;
}

test("a provider that refuses every stream (bad key): one attempt, then a cool-down on the session's clock instead of a connection per packet; transcripts once it works", async () => {
  const PKG = "com.test.stream.refused";
  const KEY = "refused-key";
  const app = await new AppSim({ packageName: PKG, apiKey: KEY, subscriptions: ["transcription:en-US"], echo: "none" }).start();
  const clock = new ManualClock(Date.now());
  const provider = new StreamTranscriptionProvider({ url: stt.url });
  const tp = await startTestPod({ seed: appSeed(PKG, app.publicUrl, KEY), deps: { transcription: provider, clock } });
  stt.refuse = 401;
  try {
    const phone = tp.phone("refused@example.com");
    await phone.connect();
    await phone.registerUdp();
    assert.equal((await phone.startApp(PKG)).status, 200);
    const c0 = stt.connections;
    // About 2 s of audio (50 packets) while the STT refuses: one connection, not fifty.
    await phone.streamPcm(pcm.subarray(0, 50 * PACKET), { loop: false }).done;
    await eventually(async () => (await metricValue(tp.httpUrl, "mentra_transcription_provider_errors_total")) === 1, 3000, "the refusal counted");
    await sleep(200);
    assert.equal(stt.connections - c0, 1, "one connection attempt during the cool-down");
    assert.ok((await metricValue(tp.httpUrl, "mentra_dropped_messages_total", { channel: "transcription", reason: "provider_backoff" })) > 10, "audio in the cool-down is counted as dropped");
    // Second failure in a row: the cool-down doubles (2 s, then 4 s).
    clock.advance(2000);
    await phone.streamPcm(pcm.subarray(0, 10 * PACKET), { loop: false }).done;
    await eventually(() => stt.connections - c0 === 2, 3000, "a second attempt after 2 s");
    await eventually(async () => (await metricValue(tp.httpUrl, "mentra_transcription_provider_errors_total")) === 2, 3000, "second refusal counted");
    clock.advance(3000);
    await phone.streamPcm(pcm.subarray(0, 10 * PACKET), { loop: false }).done;
    await sleep(200);
    assert.equal(stt.connections - c0, 2, "still cooling down 3 s later (4 s after the second failure)");
    // The provider is fixed: after the cool-down, transcripts flow; the app was never stopped.
    stt.refuse = 0;
    clock.advance(1500);
    await phone.streamPcm(pcm, { loop: false }).done;
    await eventually(() => [...app.sessions.values()].some((x) => x.transcripts.some((t) => t.isFinal)), 8000, "a final transcript at the app");
    assert.equal(app.sessions.size, 1);
    assert.equal(app.webhooks.filter((w) => w.type === "stop_request").length, 0);
  } finally {
    stt.refuse = 0;
    await tp.close();
    await app.stop();
  }
});

test("C14: the provider drops every stream after 1.5 s while audio flows: transcripts keep coming (gaps ≤ 3 s), the app is never stopped or unsubscribed, the drops are counted", async () => {
  const PKG = "com.test.stream.flaky";
  const KEY = "flaky-key";
  const app = await new AppSim({ packageName: PKG, apiKey: KEY, subscriptions: ["transcription:en-US"], echo: "none" }).start();
  const transient: Error[] = [];
  const provider = new StreamTranscriptionProvider({ url: stt.url, onTransientError: (e) => void transient.push(e) });
  const tp = await startTestPod({ seed: appSeed(PKG, app.publicUrl, KEY), deps: { transcription: provider } });
  stt.dropAfterMs = 1500; // C14 says every 25 s; 1.5 s puts several drops into one 3 s utterance loop
  try {
    const phone = tp.phone("flaky@example.com");
    await phone.connect();
    await phone.registerUdp();
    assert.equal((await phone.startApp(PKG)).status, 200);
    const at: number[] = [];
    app.on("transcription", () => void at.push(Date.now()));
    const c0 = stt.connections;
    const t0 = Date.now();
    // The clip's first 2 s (its one utterance and the silence that finalises it), looped: a
    // transcript pair every 2 s when nothing goes wrong.
    const s = phone.streamPcm(pcm.subarray(0, 50 * PACKET), { loop: true });
    await sleep(8000);
    s.stop();
    const end = Date.now();
    assert.ok(stt.connections - c0 >= 4, `the STT dropped the stream repeatedly (${stt.connections - c0} connections)`);
    assert.ok(transient.length >= 3, `drops reported as transient errors (${transient.length})`);
    assert.ok(at.length >= 6, `${at.length} transcripts (about 8 without drops)`);
    const gaps = [at[0]! - t0, ...at.slice(1).map((t, i) => t - at[i]!), end - at[at.length - 1]!];
    assert.ok(Math.max(...gaps) <= 3000, `largest transcript gap ${Math.max(...gaps)} ms`);
    // The app was never stopped or unsubscribed, and the session never gave up on the provider.
    const sess = [...app.sessions.values()];
    assert.equal(sess.length, 1);
    assert.equal(sess[0]!.closes.length, 0);
    assert.equal(app.webhooks.filter((w) => w.type === "stop_request").length, 0);
    assert.equal(await metricValue(tp.httpUrl, "mentra_transcription_provider_errors_total"), 0, "no fatal errors");
    assert.equal(await metricValue(tp.httpUrl, "mentra_dropped_messages_total", { channel: "transcription" }), 0, "no audio dropped");
  } finally {
    stt.dropAfterMs = 0;
    await tp.close();
    await app.stop();
  }
});
