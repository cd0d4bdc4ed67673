/** UDP audio: registration and PING, drop reasons, C25 key rotation, C26 hash collisions, C27 datagram sizes. */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { AppSim } from "@mentra-cluster/phone-sim";
import { encodeAudioPacket, encodePingPacket, fnv1a32 } from "@mentra-cluster/protocol";
import { appSeed, eventually, sleep, startTestPod, type TestPod } from "../../../test/helpers/pod.ts";

const PKG = "com.test.udp";
const KEY = "udp-key";
let tp: TestPod;
let app: AppSim;
let raw: dgram.Socket;

before(async () => {
  app = await new AppSim({ packageName: PKG, apiKey: KEY, subscriptions: ["audio_chunk", "transcription:en-US"] }).start();
  tp = await startTestPod({ seed: appSeed(PKG, app.publicUrl, KEY) });
  raw = dgram.createSocket("udp4");
});
after(async () => {
  raw.close();
  await tp.close();
  await app.stop();
});

const send = (buf: Buffer) => new Promise<void>((r) => raw.send(buf, tp.pod.addresses.udpPort, "127.0.0.1", () => r()));
const drops = () => ({ ...tp.pod.udp.drops });

test("udp_register + PING is answered with udp_ping_ack over the WebSocket; unknown hashes and bad sizes are counted drops", async () => {
  const p = tp.phone("udp1@example.com");
  await p.connect();
  await p.registerUdp();
  assert.equal(tp.pod.udp.registered, 1);
  const d0 = drops();
  const h0 = tp.pod.metrics.health().udp;
  await send(Buffer.alloc(5)); // too small
  await send(Buffer.alloc(1473)); // over one MTU
  await send(encodePingPacket(fnv1a32("stranger@example.com")));
  await send(encodeAudioPacket(fnv1a32("stranger@example.com"), 1, Buffer.alloc(640)));
  await send(encodeAudioPacket(fnv1a32("udp1@example.com"), 1, Buffer.alloc(0))); // header only
  await eventually(() => tp.pod.udp.drops.empty === d0.empty + 1, 3000, "drops");
  const d1 = drops();
  assert.equal(d1.too_small, d0.too_small + 1);
  assert.equal(d1.too_large, d0.too_large + 1);
  assert.equal(d1.unknown_hash, d0.unknown_hash + 2);
  const h1 = tp.pod.metrics.health().udp;
  assert.equal(h1.received, h0.received + 5);
  assert.equal(h1.dropped, h0.dropped + 5);
  assert.equal(h1.pings, h0.pings + 1);
  // A phone that claims someone else's hash is refused.
  p.send({ type: "udp_register", userIdHash: fnv1a32("someone-else@example.com") });
  const err = await p.waitFor<{ code: string }>((m) => (m as { type: string }).type === "udp_register_error", 3000);
  assert.equal(err.code, "HASH_MISMATCH");
});

test("C27: 1,500 40 ms PCM datagrams (1,286 B) arrive ≥ 99.9 % intact; the simulated phone never sends > 1,472 B", async () => {
  const user = "stream@example.com";
  const p = tp.phone(user);
  await p.connect();
  await p.registerUdp();
  const session = tp.pod.sessions.get(user)!;
  const start = session.audioBytesIn;
  const chunk = Buffer.alloc(1280, 7);
  for (let i = 0; i < 1500; i++) {
    p.sendUdpAudio(chunk);
    if (i % 10 === 9) await sleep(4);
  }
  await eventually(() => session.audioBytesIn - start >= 1500 * 1280 * 0.999, 10_000, "delivery");
  assert.throws(() => p.sendUdpAudio(Buffer.alloc(1467)));
});

test("C25: after a reconnect with a new key, old-key packets are dropped and counted; no garbage reaches the app; audio resumes at once", async () => {
  const user = "rotate@example.com";
  const p1 = tp.phone(user, { udpEncryption: true });
  const ack1 = await p1.connect();
  await p1.registerUdp();
  assert.equal((await p1.startApp(PKG)).status, 200);
  const s = app.sessions.get(`${user}-${PKG}`)!;
  await eventually(() => tp.pod.sessions.get(user)!.subscriptions.audioChunkApps().length === 1, 3000);
  const pcm = Buffer.alloc(1280, 3);
  p1.sendUdpAudio(pcm);
  await eventually(() => s.audioBytes === 1280, 3000, "first packet");
  const oldKey = Buffer.from(ack1.udpEncryption!.key, "base64");
  await p1.dispose();
  const p2 = tp.phone(user, { udpEncryption: true });
  const ack2 = await p2.connect();
  assert.notEqual(ack2.udpEncryption!.key, ack1.udpEncryption!.key, "a new key per connection");
  await p2.registerUdp();
  const failsBefore = tp.pod.udp.drops.decrypt_failed;
  for (let i = 0; i < 10; i++) p2.sendUdpAudio(pcm, { key: oldKey });
  await eventually(() => tp.pod.udp.drops.decrypt_failed === failsBefore + 10, 3000, "old-key drops");
  assert.equal(s.audioBytes, 1280, "zero garbage bytes reached the app");
  p2.sendUdpAudio(pcm);
  await eventually(() => s.audioBytes === 2560, 3000, "audio resumes on the first new-key packet");
  assert.ok(tp.pod.metrics.health().udp.decryptionFailures >= 10);
});

test("C26: a 32-bit hash collision never overwrites another user's registration", async () => {
  // Find two user ids with the same FNV-1a hash (birthday search, ~80k tries).
  const seen = new Map<number, string>();
  let pair: [string, string] | null = null;
  for (let i = 0; !pair; i++) {
    const id = `c${i}@collide.io`;
    const h = fnv1a32(id);
    const prev = seen.get(h);
    if (prev) pair = [prev, id];
    else seen.set(h, id);
  }
  const [a, b] = pair;
  const pa = tp.phone(a);
  await pa.connect();
  await pa.registerUdp();
  const pb = tp.phone(b);
  await pb.connect();
  pb.send({ type: "udp_register", userIdHash: fnv1a32(b) });
  const err = await pb.waitFor<{ code: string }>((m) => (m as { type: string }).type === "udp_register_error", 3000);
  assert.equal(err.code, "HASH_COLLISION");
  const sa = tp.pod.sessions.get(a)!;
  const before = sa.audioBytesIn;
  pa.sendUdpAudio(Buffer.alloc(640, 1));
  await eventually(() => sa.audioBytesIn === before + 640, 3000, "a still owns the hash");
  // b still has audio: the WebSocket fallback.
  const sb = tp.pod.sessions.get(b)!;
  pb.sendRaw(Buffer.alloc(640, 2));
  await eventually(() => sb.audioBytesIn === 640, 3000, "b's WebSocket audio");
});
