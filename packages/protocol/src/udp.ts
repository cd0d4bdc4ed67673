/**
 * UDP audio packet codec (protocol.md §2.5). Big-endian header:
 *   0-3 userIdHash (FNV-1a 32 over the UTF-8 user id), 4-5 sequence (uint16), 6.. payload.
 * PING probes carry ASCII "PING" at bytes 6-9 and are never encrypted.
 * Encrypted payloads: 24-byte nonce then tweetnacl secretbox (16-byte tag + ciphertext).
 */
import nacl from "tweetnacl";

export const UDP_HEADER_BYTES = 6;
/** Largest datagram that fits one Ethernet MTU without IP fragmentation (1500 - 20 IP - 8 UDP). */
export const UDP_MAX_DATAGRAM_BYTES = 1472;
/** The phone caps its own packets at 1024 bytes. */
export const UDP_PHONE_MAX_PACKET_BYTES = 1024;
export const UDP_NONCE_BYTES = 24;
export const UDP_TAG_BYTES = 16;
export const UDP_MIN_ENCRYPTED_BYTES = UDP_HEADER_BYTES + UDP_NONCE_BYTES + UDP_TAG_BYTES;
export const UDP_KEY_BYTES = 32;
export const UDP_ENCRYPTION_ALGORITHM = "xsalsa20-poly1305";
const PING = Buffer.from("PING", "ascii");

/** FNV-1a 32-bit hash over the UTF-8 bytes of the user id (unsigned). */
export function fnv1a32(userId: string): number {
  const bytes = Buffer.from(userId, "utf8");
  let hash = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) {
    hash ^= bytes[i]!;
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}

export function encodeAudioPacket(userIdHash: number, sequence: number, payload: Uint8Array, key?: Uint8Array): Buffer {
  const header = Buffer.allocUnsafe(UDP_HEADER_BYTES);
  header.writeUInt32BE(userIdHash >>> 0, 0);
  header.writeUInt16BE(sequence & 0xffff, 4);
  if (!key) return Buffer.concat([header, payload]);
  const nonce = nacl.randomBytes(UDP_NONCE_BYTES);
  const boxed = nacl.secretbox(payload, nonce, key);
  return Buffer.concat([header, nonce, boxed]);
}

export function encodePingPacket(userIdHash: number): Buffer {
  const buf = Buffer.alloc(UDP_HEADER_BYTES + PING.length);
  buf.writeUInt32BE(userIdHash >>> 0, 0);
  buf.writeUInt16BE(0, 4);
  PING.copy(buf, UDP_HEADER_BYTES);
  return buf;
}

export type UdpDropReason =
  | "too_small"
  | "too_large"
  | "unknown_hash"
  | "decrypt_failed"
  | "empty"
  | "late"
  | "buffer_overflow"
  | "not_owner";

export type DecodedDatagram =
  | { kind: "ping"; userIdHash: number }
  | { kind: "audio"; userIdHash: number; sequence: number; body: Buffer }
  | { kind: "invalid"; reason: "too_small" | "too_large" };

/** Parses the header only; decryption needs the session's key and happens after lookup. */
export function decodeDatagram(msg: Buffer): DecodedDatagram {
  if (msg.length > UDP_MAX_DATAGRAM_BYTES) return { kind: "invalid", reason: "too_large" };
  if (msg.length < UDP_HEADER_BYTES) return { kind: "invalid", reason: "too_small" };
  const userIdHash = msg.readUInt32BE(0);
  if (msg.length === UDP_HEADER_BYTES + PING.length && msg.subarray(UDP_HEADER_BYTES).equals(PING)) {
    return { kind: "ping", userIdHash };
  }
  return { kind: "audio", userIdHash, sequence: msg.readUInt16BE(4), body: msg.subarray(UDP_HEADER_BYTES) };
}

/** Opens an encrypted body (nonce + secretbox). Returns null when it does not authenticate. */
export function decryptBody(body: Uint8Array, key: Uint8Array): Buffer | null {
  if (body.length < UDP_NONCE_BYTES + UDP_TAG_BYTES) return null;
  const nonce = body.subarray(0, UDP_NONCE_BYTES);
  const opened = nacl.secretbox.open(body.subarray(UDP_NONCE_BYTES), nonce, key);
  return opened ? Buffer.from(opened.buffer, opened.byteOffset, opened.byteLength) : null;
}

export function generateUdpKey(): Buffer {
  return Buffer.from(nacl.randomBytes(UDP_KEY_BYTES));
}
