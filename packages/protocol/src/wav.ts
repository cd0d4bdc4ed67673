/** Minimal RIFF/WAVE reader for the 16 kHz mono s16le speech files the simulated phone streams. */
import { readFileSync } from "node:fs";

export interface Pcm16 { sampleRate: number; channels: number; pcm: Buffer }

export function parseWav(buf: Buffer): Pcm16 {
  if (buf.length < 12 || buf.toString("ascii", 0, 4) !== "RIFF" || buf.toString("ascii", 8, 12) !== "WAVE") {
    throw new Error("not a RIFF/WAVE file");
  }
  let off = 12;
  let sampleRate = 0, channels = 0, bits = 0, format = 0;
  let pcm: Buffer | null = null;
  while (off + 8 <= buf.length) {
    const id = buf.toString("ascii", off, off + 4);
    const size = buf.readUInt32LE(off + 4);
    const body = buf.subarray(off + 8, Math.min(buf.length, off + 8 + size));
    if (id === "fmt ") {
      if (body.length < 16) throw new Error(`unsupported WAV (fmt chunk is ${body.length} bytes, expected at least 16)`);
      format = body.readUInt16LE(0);
      channels = body.readUInt16LE(2);
      sampleRate = body.readUInt32LE(4);
      bits = body.readUInt16LE(14);
    } else if (id === "data") {
      pcm = Buffer.from(body);
    }
    off += 8 + size + (size & 1);
  }
  if (!pcm || format !== 1 || bits !== 16) throw new Error(`unsupported WAV (format ${format}, ${bits} bits)`);
  return { sampleRate, channels, pcm };
}

export function readWav(path: string): Pcm16 {
  return parseWav(readFileSync(path));
}
