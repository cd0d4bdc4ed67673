/**
 * Audio for many simulated phones from one timer: the speech WAVs are cut once into 40 ms packets,
 * each phone plays them in a loop from its own offset, and a pacer sends every phone's packets on a
 * drift-free 40 ms schedule with its own phase (spread over 8 slots of 5 ms), so a thousand phones
 * cost 200 timer callbacks a second instead of 25,000. Packets that fell due during a stall go out
 * at once (like a phone's mic buffer), up to one second's worth; older ones are dropped and counted.
 */
import { performance } from "node:perf_hooks";
import { readWav } from "@mentra-cluster/protocol";
import { Histogram } from "./stats.ts";

export const PACKET_MS = 40;
export const SAMPLE_RATE = 16_000;
export const PACKET_BYTES = (SAMPLE_RATE * PACKET_MS * 2) / 1000; // 1280
const SLOTS = 8;
const SLOT_MS = PACKET_MS / SLOTS;
/** Catch-up limit per phone per pass: 1 s of audio. */
const MAX_CATCH_UP = 25;

/** The clips back to back, each followed by 600 ms of silence so every utterance is finalised; cut into packets. */
export function loadPackets(paths: readonly string[]): Buffer[] {
  const parts: Buffer[] = [];
  for (const p of paths) {
    const wav = readWav(p);
    if (wav.channels !== 1 || wav.sampleRate !== SAMPLE_RATE) throw new Error(`${p}: need 16 kHz mono PCM, got ${wav.sampleRate} Hz × ${wav.channels}`);
    parts.push(wav.pcm.subarray(0, wav.pcm.length - (wav.pcm.length % 2)), Buffer.alloc(SAMPLE_RATE * 2 * 0.6));
  }
  const all = Buffer.concat(parts);
  const usable = all.length - (all.length % PACKET_BYTES);
  const packets: Buffer[] = [];
  for (let off = 0; off < usable; off += PACKET_BYTES) packets.push(all.subarray(off, off + PACKET_BYTES));
  if (packets.length === 0) throw new Error("no audio in the given WAV files");
  return packets;
}

export interface AudioSink {
  /** Send one packet; false when the phone cannot send right now (offline: counted, not retried). */
  sendAudio(packet: Buffer): boolean;
}

interface Entry {
  sink: AudioSink;
  slot: number;
  cursor: number;
  nextDue: number;
}

export class AudioPacer {
  private readonly slots: Set<Entry>[] = Array.from({ length: SLOTS }, () => new Set());
  private timer: NodeJS.Timeout | null = null;
  private base = 0;
  private tick = 0;
  private nextSlotAt = 0;
  private rr = 0;
  sent = 0;
  offline = 0;
  lateDropped = 0;
  readonly lateness = new Histogram();

  constructor(private readonly packets: Buffer[]) {}

  get size(): number {
    return this.slots.reduce((a, s) => a + s.size, 0);
  }

  /** Starts pacing a phone from a random place in the clip; returns a handle for remove(). */
  add(sink: AudioSink, random: () => number = Math.random): object {
    const slot = this.rr++ % SLOTS;
    const e: Entry = { sink, slot, cursor: Math.floor(random() * this.packets.length), nextDue: 0 };
    // First packet at this slot's next turn, so phones keep the phase they were given.
    const now = performance.now();
    const cycleStart = this.base + Math.ceil((now - this.base) / PACKET_MS) * PACKET_MS;
    e.nextDue = cycleStart + slot * SLOT_MS;
    this.slots[slot]!.add(e);
    this.start();
    return e;
  }

  remove(handle: object): void {
    const e = handle as Entry;
    this.slots[e.slot]?.delete(e);
  }

  private start(): void {
    if (this.timer) return;
    this.base = performance.now();
    this.tick = 0;
    this.nextSlotAt = this.base;
    this.schedule();
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    for (const s of this.slots) s.clear();
  }

  private schedule(): void {
    this.timer = setTimeout(() => this.run(), Math.max(0, this.nextSlotAt - performance.now()));
  }

  private run(): void {
    const now = performance.now();
    // Every slot whose turn has come (more than one after a stall).
    while (this.nextSlotAt <= now) {
      this.pass(this.slots[this.tick % SLOTS]!, now);
      this.tick++;
      this.nextSlotAt = this.base + this.tick * SLOT_MS;
    }
    this.schedule();
  }

  private pass(entries: Set<Entry>, now: number): void {
    for (const e of entries) {
      let n = 0;
      if (e.nextDue <= now) this.lateness.add(now - e.nextDue);
      while (e.nextDue <= now) {
        if (n >= MAX_CATCH_UP) {
          const skip = Math.floor((now - e.nextDue) / PACKET_MS) + 1;
          this.lateDropped += skip;
          e.nextDue += skip * PACKET_MS;
          e.cursor = (e.cursor + skip) % this.packets.length;
          break;
        }
        const packet = this.packets[e.cursor]!;
        e.cursor = (e.cursor + 1) % this.packets.length;
        e.nextDue += PACKET_MS;
        n++;
        if (e.sink.sendAudio(packet)) this.sent++;
        else this.offline++;
      }
    }
  }
}
