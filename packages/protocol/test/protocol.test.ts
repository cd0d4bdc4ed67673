/**
 * Unit tests for @mentra-cluster/protocol: UDP codec (FNV-1a, header, PING, sequence wrap, size
 * limits, secretbox), core tokens, app session ids, subscription helpers and the WAV reader.
 */
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import nacl from "tweetnacl";
import {
  UDP_HEADER_BYTES,
  UDP_KEY_BYTES,
  UDP_MAX_DATAGRAM_BYTES,
  UDP_MIN_ENCRYPTED_BYTES,
  UDP_NONCE_BYTES,
  UDP_TAG_BYTES,
  appSessionId,
  decodeDatagram,
  decryptBody,
  encodeAudioPacket,
  encodePingPacket,
  extractToken,
  fnv1a32,
  generateUdpKey,
  isAudioStream,
  mintUserToken,
  normaliseStream,
  parseWav,
  readWav,
  signCoreToken,
  transcriptionLanguage,
  userIdFromAppSessionId,
  verifyCoreToken,
} from "@mentra-cluster/protocol";

const AUDIO_DIR = "/work/shared/data/audio";
const WAVS = ["hey-mira-16khz.wav", "short-test-16khz.wav", "what-time-is-it-16khz.wav"];
const SECRET = "unit-test-secret";

/** Deterministic PRNG (mulberry32) so failures reproduce. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
function randomBytes(r: () => number, n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(r() * 256);
  return b;
}

const b64url = (v: unknown) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url");
/** Builds a JWT with any header and claims, HMAC-signed with `secret`. */
function rawJwt(header: unknown, claims: unknown, secret = SECRET): string {
  const h = b64url(header);
  const b = b64url(claims);
  const sig = createHmac("sha256", secret).update(`${h}.${b}`).digest("base64url");
  return `${h}.${b}.${sig}`;
}

// ---------------------------------------------------------------- FNV-1a

test("fnv1a32: spec test vectors", () => {
  assert.equal(fnv1a32("a"), 0xe40c292c);
  assert.equal(fnv1a32("user@example.com"), 0xddaa05fb);
  assert.equal(fnv1a32("user@example.com"), 3718907387);
  // Offset basis for the empty string.
  assert.equal(fnv1a32(""), 0x811c9dc5);
});

test("fnv1a32: unsigned 32-bit, hashes UTF-8 bytes, case-sensitive", () => {
  const r = rng(1);
  for (let i = 0; i < 500; i++) {
    const s = randomBytes(r, 1 + Math.floor(r() * 40)).toString("latin1");
    const h = fnv1a32(s);
    assert.ok(Number.isInteger(h) && h >= 0 && h <= 0xffffffff, `hash ${h} out of range`);
  }
  // "é" is two UTF-8 bytes (c3 a9): the hash must walk bytes, not UTF-16 code units.
  let manual = 0x811c9dc5;
  for (const byte of [0xc3, 0xa9]) manual = Math.imul(manual ^ byte, 0x01000193) >>> 0;
  assert.equal(fnv1a32("é"), manual);
  assert.notEqual(fnv1a32("User@Example.com"), fnv1a32("user@example.com"));
});

// ---------------------------------------------------------------- packet codec

test("encode/decode round trip: hash, sequence, payload survive (plaintext)", () => {
  const r = rng(2);
  for (let i = 0; i < 300; i++) {
    const hash = Math.floor(r() * 0x100000000);
    const seq = Math.floor(r() * 65536);
    const payload = randomBytes(r, 1 + Math.floor(r() * (UDP_MAX_DATAGRAM_BYTES - UDP_HEADER_BYTES)));
    const pkt = encodeAudioPacket(hash, seq, payload);
    assert.equal(pkt.length, UDP_HEADER_BYTES + payload.length);
    assert.equal(pkt.readUInt32BE(0), hash);
    assert.equal(pkt.readUInt16BE(4), seq);
    const d = decodeDatagram(pkt);
    if (payload.length === 4 && payload.equals(Buffer.from("PING"))) continue; // indistinguishable by design
    assert.equal(d.kind, "audio");
    if (d.kind !== "audio") continue;
    assert.equal(d.userIdHash, hash);
    assert.equal(d.sequence, seq);
    assert.ok(d.body.equals(payload));
  }
});

test("encodeAudioPacket: negative / oversized hashes are taken as unsigned 32-bit", () => {
  const pkt = encodeAudioPacket(-1, 1, Buffer.from([1, 2]));
  assert.equal(pkt.readUInt32BE(0), 0xffffffff);
  const d = decodeDatagram(pkt);
  assert.ok(d.kind === "audio" && d.userIdHash === 0xffffffff);
});

test("sequence wraps at 65535 → 0 (big-endian uint16)", () => {
  const body = Buffer.from([9, 9]);
  const seqOf = (s: number) => {
    const d = decodeDatagram(encodeAudioPacket(0x1234, s, body));
    assert.equal(d.kind, "audio");
    return d.kind === "audio" ? d.sequence : -1;
  };
  assert.equal(seqOf(65534), 65534);
  assert.equal(seqOf(65535), 65535);
  assert.equal(seqOf(65536), 0);
  assert.equal(seqOf(65537), 1);
  assert.equal(seqOf(-1), 65535);
  const pkt = encodeAudioPacket(0x1234, 0x1ff02, body);
  assert.deepEqual([...pkt.subarray(4, 6)], [0xff, 0x02]);
});

test("PING: exactly header + 'PING' is a ping; PING bytes in audio of any other length are audio", () => {
  const hash = fnv1a32("user@example.com");
  const ping = encodePingPacket(hash);
  assert.equal(ping.length, UDP_HEADER_BYTES + 4);
  assert.equal(ping.readUInt16BE(4), 0);
  assert.equal(ping.subarray(6).toString("ascii"), "PING");
  assert.deepEqual(decodeDatagram(ping), { kind: "ping", userIdHash: hash });
  // A PING with a non-zero sequence is still a probe (detection is by length + bytes).
  const seqPing = Buffer.from(ping);
  seqPing.writeUInt16BE(77, 4);
  assert.equal(decodeDatagram(seqPing).kind, "ping");

  const P = Buffer.from("PING");
  const variants: Buffer[] = [
    Buffer.concat([P, Buffer.from([0])]), // PING + 1 byte
    Buffer.from("PIN"), // 3 bytes
    Buffer.from("PINGPING"),
    Buffer.concat([Buffer.from([0, 0]), P]), // PING not at offset 6
    Buffer.from("ping"), // lower case, same length
    Buffer.from("PINH"),
    Buffer.concat([P, Buffer.alloc(1274)]), // 1280-byte PCM chunk starting with PING
    Buffer.concat([Buffer.alloc(600), P, Buffer.alloc(676)]),
  ];
  for (const v of variants) {
    const d = decodeDatagram(encodeAudioPacket(hash, 3, v));
    if (v.length === 4 && v.equals(P)) continue;
    assert.equal(d.kind, "audio", `payload ${JSON.stringify(v.subarray(0, 12).toString("latin1"))} (${v.length} B) taken as ${d.kind}`);
  }
  // Random payloads of every length except 4 never decode as PING, even when they contain "PING".
  const r = rng(3);
  for (let len = 0; len <= 200; len++) {
    if (len === 4) continue;
    const body = randomBytes(r, len);
    if (len >= 4) P.copy(body, Math.floor(r() * (len - 3)));
    assert.notEqual(decodeDatagram(encodeAudioPacket(hash, 0, body)).kind, "ping", `len ${len}`);
  }
  // Encrypted "PING" audio never looks like a probe (nonce + tag make it ≥ 46 bytes).
  const key = generateUdpKey();
  assert.equal(decodeDatagram(encodeAudioPacket(hash, 0, P, key)).kind, "audio");
});

test("size limits: < 6 bytes too_small, > 1472 too_large, 6 and 1472 accepted", () => {
  for (let n = 0; n < UDP_HEADER_BYTES; n++) assert.deepEqual(decodeDatagram(Buffer.alloc(n)), { kind: "invalid", reason: "too_small" }, `len ${n}`);
  const six = decodeDatagram(Buffer.alloc(6));
  assert.equal(six.kind, "audio");
  assert.ok(six.kind === "audio" && six.body.length === 0);
  assert.equal(decodeDatagram(Buffer.alloc(UDP_MAX_DATAGRAM_BYTES)).kind, "audio");
  assert.deepEqual(decodeDatagram(Buffer.alloc(UDP_MAX_DATAGRAM_BYTES + 1)), { kind: "invalid", reason: "too_large" });
  assert.deepEqual(decodeDatagram(Buffer.alloc(65_507)), { kind: "invalid", reason: "too_large" });
  assert.equal(UDP_MAX_DATAGRAM_BYTES, 1472);
  assert.equal(UDP_MIN_ENCRYPTED_BYTES, 46);
});

// ---------------------------------------------------------------- encryption

test("encryption round trip: nonce + secretbox, compatible with tweetnacl secretbox", () => {
  const key = generateUdpKey();
  assert.equal(key.length, UDP_KEY_BYTES);
  assert.ok(!key.equals(generateUdpKey()), "keys are random");
  const r = rng(4);
  for (const len of [0, 1, 2, 40, 978, 1280, UDP_MAX_DATAGRAM_BYTES - UDP_MIN_ENCRYPTED_BYTES]) {
    const payload = randomBytes(r, len);
    const pkt = encodeAudioPacket(0xabcdef01, 42, payload, key);
    assert.equal(pkt.length, UDP_MIN_ENCRYPTED_BYTES + len);
    assert.ok(pkt.length <= UDP_MAX_DATAGRAM_BYTES);
    const d = decodeDatagram(pkt);
    assert.equal(d.kind, "audio");
    if (d.kind !== "audio") continue;
    assert.equal(d.sequence, 42);
    const opened = decryptBody(d.body, key);
    assert.ok(opened, `len ${len} did not open`);
    assert.ok(opened.equals(payload));
    // Same as libsodium crypto_secretbox_easy / tweetnacl.secretbox.open on the raw parts.
    const nonce = d.body.subarray(0, UDP_NONCE_BYTES);
    const viaNacl = nacl.secretbox.open(d.body.subarray(UDP_NONCE_BYTES), nonce, key);
    assert.ok(viaNacl && Buffer.from(viaNacl).equals(payload));
  }
  // A fresh nonce per packet: the same payload never encrypts the same way twice.
  const a = encodeAudioPacket(1, 1, Buffer.alloc(32), key);
  const b = encodeAudioPacket(1, 1, Buffer.alloc(32), key);
  assert.ok(!a.equals(b));
});

test("decryptBody: null on any flipped bit, a wrong key, a short body", () => {
  const key = generateUdpKey();
  const payload = Buffer.from("hello audio payload that is not that short");
  const pkt = encodeAudioPacket(7, 9, payload, key);
  const body = pkt.subarray(UDP_HEADER_BYTES);
  assert.ok(decryptBody(body, key)?.equals(payload));
  for (let bit = 0; bit < body.length * 8; bit++) {
    const t = Buffer.from(body);
    t[bit >> 3]! ^= 1 << (bit & 7);
    assert.equal(decryptBody(t, key), null, `flipped bit ${bit} still authenticated`);
  }
  const wrong = Buffer.from(key);
  wrong[0]! ^= 0x01;
  assert.equal(decryptBody(body, wrong), null);
  assert.equal(decryptBody(body, generateUdpKey()), null);
  for (let n = 0; n < UDP_NONCE_BYTES + UDP_TAG_BYTES; n++) assert.equal(decryptBody(body.subarray(0, n), key), null, `short body ${n}`);
  assert.equal(decryptBody(Buffer.alloc(0), key), null);
  // Truncated by one byte, or one extra byte appended.
  assert.equal(decryptBody(body.subarray(0, body.length - 1), key), null);
  assert.equal(decryptBody(Buffer.concat([body, Buffer.from([0])]), key), null);
  // Random garbage of a valid size never authenticates.
  const r = rng(5);
  for (let i = 0; i < 200; i++) assert.equal(decryptBody(randomBytes(r, 40 + Math.floor(r() * 200)), key), null);
});

test("decryptBody: an empty plaintext (exactly nonce + tag) opens to an empty buffer", () => {
  const key = generateUdpKey();
  const pkt = encodeAudioPacket(1, 1, Buffer.alloc(0), key);
  assert.equal(pkt.length, UDP_MIN_ENCRYPTED_BYTES);
  const opened = decryptBody(pkt.subarray(UDP_HEADER_BYTES), key);
  assert.ok(opened);
  assert.equal(opened.length, 0);
});

// ---------------------------------------------------------------- core tokens

test("core token: sign/verify, userId = lower-cased trimmed email (not sub)", () => {
  const tok = mintUserToken("Alice.Smith@Example.COM", SECRET);
  const res = verifyCoreToken(tok, SECRET);
  assert.equal(res.ok, true);
  if (!res.ok) return;
  assert.equal(res.userId, "alice.smith@example.com");
  assert.equal(res.claims.sub, "Alice.Smith@Example.COM");
  assert.equal(typeof res.claims.iat, "number");
  const other = verifyCoreToken(signCoreToken({ sub: "someone-else", email: "  Bob@X.io " }, SECRET), SECRET);
  assert.ok(other.ok && other.userId === "bob@x.io");
});

test("core token: wrong secret, tampered body or signature → invalid", () => {
  const tok = mintUserToken("user@example.com", SECRET);
  assert.deepEqual(verifyCoreToken(tok, "other-secret"), { ok: false, reason: "invalid" });
  const [h, b, s] = tok.split(".") as [string, string, string];
  const evilBody = b64url({ email: "admin@example.com", iat: 1 });
  assert.deepEqual(verifyCoreToken(`${h}.${evilBody}.${s}`, SECRET), { ok: false, reason: "invalid" });
  const flipped = (s[0] === "A" ? "B" : "A") + s.slice(1);
  assert.deepEqual(verifyCoreToken(`${h}.${b}.${flipped}`, SECRET), { ok: false, reason: "invalid" });
  assert.deepEqual(verifyCoreToken(`${h}.${b}.`, SECRET), { ok: false, reason: "invalid" });
  assert.deepEqual(verifyCoreToken(`${h}.${b}.${s}x`, SECRET), { ok: false, reason: "invalid" });
});

test("core token: only the canonical base64url spelling of the signature is accepted", () => {
  const tok = mintUserToken("user@example.com", SECRET);
  const [h, b, s] = tok.split(".") as [string, string, string];
  assert.equal(verifyCoreToken(tok, SECRET).ok, true);
  // Node's base64url decoder ignores padding and foreign characters; none of these may verify.
  for (const sig of [`${s}=`, `${s}==`, `${s}!`, `!${s}`, `${s.slice(0, 10)} ${s.slice(10)}`, `${s}\n`, Buffer.from(s, "base64url").toString("base64")]) {
    if (sig === s) continue;
    assert.deepEqual(verifyCoreToken(`${h}.${b}.${sig}`, SECRET), { ok: false, reason: "invalid" }, JSON.stringify(sig));
  }
  // 32 bytes in 43 characters leave 2 unused bits in the last one: its 3 aliases are refused too.
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  let aliases = 0;
  for (const c of alphabet) {
    if (c === s.at(-1)) continue;
    if (verifyCoreToken(`${h}.${b}.${s.slice(0, -1)}${c}`, SECRET).ok) aliases++;
  }
  assert.equal(aliases, 0);
});

test("core token: alg none and RS256 headers are refused even when the HMAC would match", () => {
  const claims = { email: "user@example.com", iat: 1 };
  const none = `${b64url({ alg: "none", typ: "JWT" })}.${b64url(claims)}.`;
  assert.deepEqual(verifyCoreToken(none, SECRET), { ok: false, reason: "invalid" });
  // Signed with the right secret but declaring another algorithm: refused on the header alone.
  assert.deepEqual(verifyCoreToken(rawJwt({ alg: "none" }, claims), SECRET), { ok: false, reason: "invalid" });
  assert.deepEqual(verifyCoreToken(rawJwt({ alg: "RS256", typ: "JWT" }, claims), SECRET), { ok: false, reason: "invalid" });
  assert.deepEqual(verifyCoreToken(rawJwt({ alg: "hs256" }, claims), SECRET), { ok: false, reason: "invalid" });
  assert.deepEqual(verifyCoreToken(rawJwt({ typ: "JWT" }, claims), SECRET), { ok: false, reason: "invalid" });
  // The same token with an HS256 header is accepted (control).
  assert.equal(verifyCoreToken(rawJwt({ alg: "HS256", typ: "JWT" }, claims), SECRET).ok, true);
});

test("core token: malformed inputs → missing / invalid, never a throw", () => {
  assert.deepEqual(verifyCoreToken(undefined, SECRET), { ok: false, reason: "missing" });
  assert.deepEqual(verifyCoreToken(null, SECRET), { ok: false, reason: "missing" });
  assert.deepEqual(verifyCoreToken("", SECRET), { ok: false, reason: "missing" });
  const bad = [
    "abc",
    "a.b",
    "a.b.c.d",
    "..",
    "...",
    "not-base64!.also not.sig",
    `${b64url("not json")}.${b64url({ email: "a@b.c" })}.x`,
    `${b64url({ alg: "HS256" })}.${b64url("not json")}.x`,
    `${b64url("null")}.${b64url({ email: "a@b.c" })}.x`,
    `${b64url({ alg: "HS256" })}.${b64url("null")}.x`,
    `${b64url("123")}.${b64url("456")}.x`,
  ];
  for (const t of bad) assert.deepEqual(verifyCoreToken(t, SECRET), { ok: false, reason: "invalid" }, t);
  // Correctly signed, but the claims are not an object.
  assert.deepEqual(verifyCoreToken(rawJwt({ alg: "HS256" }, null), SECRET), { ok: false, reason: "invalid" });
  assert.deepEqual(verifyCoreToken(rawJwt({ alg: "HS256" }, "just a string"), SECRET), { ok: false, reason: "invalid" });
  const r = rng(6);
  for (let i = 0; i < 300; i++) {
    const t = randomBytes(r, Math.floor(r() * 80)).toString("latin1");
    const res = verifyCoreToken(t, SECRET);
    assert.equal(res.ok, false);
  }
});

test("core token: expired exp refused, future exp and no exp accepted", () => {
  const now = 1_700_000_000_000;
  const past = signCoreToken({ email: "u@x.io", exp: Math.floor(now / 1000) - 10 }, SECRET);
  assert.deepEqual(verifyCoreToken(past, SECRET, now), { ok: false, reason: "invalid" });
  const future = signCoreToken({ email: "u@x.io", exp: Math.floor(now / 1000) + 3600 }, SECRET);
  assert.equal(verifyCoreToken(future, SECRET, now).ok, true);
  const noExp = signCoreToken({ email: "u@x.io" }, SECRET);
  assert.equal(verifyCoreToken(noExp, SECRET, now).ok, true);
  // The real clock: an exp an hour ago is refused.
  const stale = signCoreToken({ email: "u@x.io", exp: Math.floor(Date.now() / 1000) - 3600 }, SECRET);
  assert.deepEqual(verifyCoreToken(stale, SECRET), { ok: false, reason: "invalid" });
});

test("core token: missing / empty / non-string email → no_user_id (sub is not used)", () => {
  for (const claims of [{ sub: "user@example.com" }, { email: "" }, { email: "   " }, { email: 42 }, { email: null }, { email: ["a@b.c"] }]) {
    assert.deepEqual(verifyCoreToken(signCoreToken(claims as never, SECRET), SECRET), { ok: false, reason: "no_user_id" }, JSON.stringify(claims));
  }
});

test("extractToken: Authorization Bearer header wins over ?token=", () => {
  assert.equal(extractToken("Bearer header-tok", "query-tok"), "header-tok");
  assert.equal(extractToken("bearer   header-tok  ", "query-tok"), "header-tok");
  assert.equal(extractToken(undefined, "query-tok"), "query-tok");
  assert.equal(extractToken("", "query-tok"), "query-tok");
  assert.equal(extractToken("Basic abc", "query-tok"), "query-tok", "a non-Bearer header is not a core token");
  assert.equal(extractToken(undefined, undefined), undefined);
  assert.equal(extractToken(undefined, ""), undefined);
  assert.equal(extractToken(undefined, ["a", "b"]), undefined, "repeated query params are not a token");
  assert.equal(extractToken(undefined, 123), undefined);
});

// ---------------------------------------------------------------- app sessions and streams

test("appSessionId / userIdFromAppSessionId: strips the known package suffix, copes with dashed emails", () => {
  const pkg = "com.acme.app";
  for (const email of ["user@example.com", "alice-smith@ex-ample.com", "a-b-c@d-e-f.co", "x@y.z"]) {
    const sid = appSessionId(email, pkg);
    assert.equal(sid, `${email}-${pkg}`);
    assert.equal(userIdFromAppSessionId(sid, pkg), email);
  }
  assert.equal(userIdFromAppSessionId("Alice-Smith@Example.com-com.acme.app", pkg), "alice-smith@example.com");
  // Dashed package names too.
  assert.equal(userIdFromAppSessionId("a-b@c.d-com.my-app.x", "com.my-app.x"), "a-b@c.d");
  // Wrong package, nothing before the suffix, or no dash separator → null.
  assert.equal(userIdFromAppSessionId("user@example.com-com.other.app", pkg), null);
  assert.equal(userIdFromAppSessionId(`-${pkg}`, pkg), null);
  assert.equal(userIdFromAppSessionId(pkg, pkg), null);
  assert.equal(userIdFromAppSessionId(`user@example.com${pkg}`, pkg), null);
  assert.equal(userIdFromAppSessionId("", pkg), null);
});

test("transcriptionLanguage: bare → en-US, query stripped, non-transcription → null", () => {
  assert.equal(transcriptionLanguage("transcription"), "en-US");
  assert.equal(transcriptionLanguage("transcription:en-US"), "en-US");
  assert.equal(transcriptionLanguage("transcription:fr-FR"), "fr-FR");
  assert.equal(transcriptionLanguage("transcription:en-US?hints=a,b"), "en-US");
  assert.equal(transcriptionLanguage("transcription:de-DE?no-language-identification=true&hints=x"), "de-DE");
  assert.equal(transcriptionLanguage("transcription:"), null);
  assert.equal(transcriptionLanguage("transcription:?hints=a"), null);
  assert.equal(transcriptionLanguage("translation:en-US-to-fr-FR"), null);
  assert.equal(transcriptionLanguage("transcriptions"), null);
  assert.equal(transcriptionLanguage("audio_chunk"), null);
  assert.equal(transcriptionLanguage(""), null);
});

test("normaliseStream / isAudioStream", () => {
  assert.equal(normaliseStream("transcription:en-US?hints=a"), "transcription:en-US?hints=a");
  assert.equal(normaliseStream({ stream: "location_stream", rate: "1s" }), "location_stream");
  assert.equal(normaliseStream({ stream: 5 } as never), null);
  assert.equal(normaliseStream(null as never), null);
  assert.equal(normaliseStream(42 as never), null);
  for (const s of ["audio_chunk", "VAD", "all", "*", "transcription", "transcription:en-US", "translation:all-to-en-US"]) assert.equal(isAudioStream(s), true, s);
  for (const s of ["head_position", "button_press", "location_update", "touch_event", "glasses_connection_state", ""]) assert.equal(isAudioStream(s), false, s);
});

// ---------------------------------------------------------------- WAV

test("parseWav / readWav: the real 16 kHz mono speech files", () => {
  for (const name of WAVS) {
    const path = `${AUDIO_DIR}/${name}`;
    const w = readWav(path);
    assert.equal(w.sampleRate, 16000, name);
    assert.equal(w.channels, 1, name);
    assert.ok(w.pcm.length > 16000, `${name}: at least 0.5 s of audio`);
    assert.equal(w.pcm.length % 2, 0, `${name}: whole s16 samples`);
    // The data chunk is the tail of the file (after fmt/LIST), and is not silence.
    const file = readFileSync(path);
    const dataAt = file.indexOf("data");
    assert.ok(dataAt > 0);
    assert.equal(w.pcm.length, Math.min(file.readUInt32LE(dataAt + 4), file.length - dataAt - 8));
    let peak = 0;
    for (let i = 0; i + 1 < w.pcm.length; i += 2) peak = Math.max(peak, Math.abs(w.pcm.readInt16LE(i)));
    assert.ok(peak > 1000, `${name}: peak ${peak}`);
    assert.deepEqual(parseWav(file).pcm, w.pcm);
  }
});

test("parseWav: a clear error on garbage, never a RangeError", () => {
  const r = rng(7);
  const garbage = [Buffer.alloc(0), Buffer.from("hello"), Buffer.from("RIFF"), randomBytes(r, 100), Buffer.from("RIFF\0\0\0\0WAVX")];
  for (const g of garbage) assert.throws(() => parseWav(g), /not a RIFF\/WAVE file/);
  const riff = (chunks: Buffer[]) => {
    const body = Buffer.concat([Buffer.from("WAVE"), ...chunks]);
    const head = Buffer.alloc(8);
    head.write("RIFF", 0, "ascii");
    head.writeUInt32LE(body.length, 4);
    return Buffer.concat([head, body]);
  };
  const chunk = (id: string, body: Buffer) => {
    const h = Buffer.alloc(8);
    h.write(id, 0, "ascii");
    h.writeUInt32LE(body.length, 4);
    return Buffer.concat([h, body, body.length & 1 ? Buffer.alloc(1) : Buffer.alloc(0)]);
  };
  const fmt = (format: number, channels: number, rate: number, bits: number) => {
    const b = Buffer.alloc(16);
    b.writeUInt16LE(format, 0);
    b.writeUInt16LE(channels, 2);
    b.writeUInt32LE(rate, 4);
    b.writeUInt32LE(rate * channels * (bits / 8), 8);
    b.writeUInt16LE(channels * (bits / 8), 12);
    b.writeUInt16LE(bits, 14);
    return b;
  };
  // RIFF/WAVE without chunks, without data, float, 8-bit: unsupported, with a message.
  assert.throws(() => parseWav(riff([])), /unsupported WAV/);
  assert.throws(() => parseWav(riff([chunk("fmt ", fmt(1, 1, 16000, 16))])), /unsupported WAV/);
  assert.throws(() => parseWav(riff([chunk("data", Buffer.alloc(10))])), /unsupported WAV/);
  assert.throws(() => parseWav(riff([chunk("fmt ", fmt(3, 1, 16000, 32)), chunk("data", Buffer.alloc(8))])), /unsupported WAV/);
  assert.throws(() => parseWav(riff([chunk("fmt ", fmt(1, 1, 16000, 8)), chunk("data", Buffer.alloc(8))])), /unsupported WAV/);
  // A truncated fmt chunk is a clear error, not "RangeError: offset out of range".
  for (const n of [0, 2, 8, 14]) {
    assert.throws(
      () => parseWav(riff([chunk("fmt ", Buffer.alloc(n)), chunk("data", Buffer.alloc(8))])),
      (err: unknown) => err instanceof Error && !(err instanceof RangeError) && /WAV/.test(err.message),
      `fmt chunk of ${n} bytes`,
    );
  }
  // A minimal valid file parses; chunk order does not matter; odd chunks are padded.
  const ok = parseWav(riff([chunk("LIST", Buffer.alloc(3)), chunk("fmt ", fmt(1, 1, 16000, 16)), chunk("data", Buffer.from([1, 0, 2, 0]))]));
  assert.deepEqual(ok, { sampleRate: 16000, channels: 1, pcm: Buffer.from([1, 0, 2, 0]) });
  // Random corruption of a real file either parses or throws an Error with a message; never hangs.
  const real = readFileSync(`${AUDIO_DIR}/hey-mira-16khz.wav`);
  for (let i = 0; i < 200; i++) {
    const bad = Buffer.from(real.subarray(0, 12 + Math.floor(r() * 200)));
    for (let k = 0; k < 4; k++) bad[12 + Math.floor(r() * (bad.length - 12))] = Math.floor(r() * 256);
    try {
      parseWav(bad);
    } catch (err) {
      assert.ok(err instanceof Error && err.message.length > 0);
    }
  }
});
