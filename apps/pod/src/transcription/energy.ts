/**
 * The default provider: offline, in-process and deterministic. It finds speech in the PCM by
 * frame energy and emits interim and final results with the real start/end times of each
 * utterance. The words are synthetic (there is no acoustic model), one per ~300 ms of speech.
 */
import type { TranscriptionData } from "@mentra-cluster/protocol";
import type { TranscriptionProvider, TranscriptionStream, TranscriptionStreamOptions } from "./provider.ts";

const SAMPLE_RATE = 16000;
const FRAME_SAMPLES = 320; // 20 ms
const FRAME_BYTES = FRAME_SAMPLES * 2;
const EMPTY = Buffer.alloc(0);
const WORDS = ["hey", "mira", "what", "time", "is", "it", "short", "test", "hello", "world", "glasses", "today"];

export interface EnergyProviderOptions {
  /** RMS threshold on int16 samples above which a frame counts as speech. */
  threshold?: number;
  /** Silence that ends an utterance. */
  hangoverMs?: number;
  /** Interval between interim results during an utterance. */
  interimEveryMs?: number;
}

export class EnergyTranscriptionProvider implements TranscriptionProvider {
  readonly name = "energy";
  constructor(private readonly opts: EnergyProviderOptions = {}) {}
  createStream(opts: TranscriptionStreamOptions): TranscriptionStream {
    return new EnergyStream(opts, this.opts);
  }
}

class EnergyStream implements TranscriptionStream {
  closed = false;
  private carry: Buffer = EMPTY;
  private samplesSeen = 0;
  private inSpeech = false;
  private speechStartSample = 0;
  private lastSpeechSample = 0;
  private lastInterimSample = 0;
  private utterance = 0;
  private readonly threshold: number;
  private readonly hangoverSamples: number;
  private readonly interimSamples: number;

  constructor(private readonly o: TranscriptionStreamOptions, p: EnergyProviderOptions) {
    this.threshold = p.threshold ?? 900;
    this.hangoverSamples = ((p.hangoverMs ?? 300) * SAMPLE_RATE) / 1000;
    this.interimSamples = ((p.interimEveryMs ?? 500) * SAMPLE_RATE) / 1000;
  }

  get bufferedBytes(): number {
    return this.carry.length;
  }

  write(pcm: Buffer): void {
    if (this.closed || pcm.length === 0) return;
    const buf = this.carry.length ? Buffer.concat([this.carry, pcm]) : pcm;
    const whole = buf.length - (buf.length % FRAME_BYTES);
    // Read samples through an Int16Array view when aligned (the common case: 40 ms packets).
    const view =
      (buf.byteOffset & 1) === 0
        ? new Int16Array(buf.buffer, buf.byteOffset, whole >> 1)
        : new Int16Array(Uint8Array.prototype.slice.call(buf, 0, whole).buffer);
    for (let off = 0; off < view.length; off += FRAME_SAMPLES) {
      this.frame(view, off);
      if (this.closed) return;
    }
    this.carry = whole === buf.length ? EMPTY : Buffer.from(buf.subarray(whole));
  }

  private frame(samples: Int16Array, off: number): void {
    let sum = 0;
    for (let i = off, end = off + FRAME_SAMPLES; i < end; i++) {
      const s = samples[i]!;
      sum += s * s;
    }
    const rms = Math.sqrt(sum / FRAME_SAMPLES);
    const frameStart = this.samplesSeen;
    this.samplesSeen += FRAME_SAMPLES;
    if (rms >= this.threshold) {
      if (!this.inSpeech) {
        this.inSpeech = true;
        this.utterance++;
        this.speechStartSample = frameStart;
        this.lastInterimSample = frameStart;
      }
      this.lastSpeechSample = this.samplesSeen;
      if (this.samplesSeen - this.lastInterimSample >= this.interimSamples) {
        this.lastInterimSample = this.samplesSeen;
        this.emit(false);
      }
    } else if (this.inSpeech && this.samplesSeen - this.lastSpeechSample >= this.hangoverSamples) {
      this.inSpeech = false;
      this.emit(true);
    }
  }

  private emit(isFinal: boolean): void {
    const endSample = isFinal ? this.lastSpeechSample : this.samplesSeen;
    const durMs = ((endSample - this.speechStartSample) * 1000) / SAMPLE_RATE;
    const nWords = Math.max(1, Math.round(durMs / 300));
    const words: string[] = [];
    for (let i = 0; i < nWords; i++) words.push(WORDS[(this.utterance * 7 + i * 3) % WORDS.length]!);
    const data: TranscriptionData = {
      type: "transcription",
      text: words.join(" "),
      isFinal,
      utteranceId: `u${this.utterance}`,
      speakerId: "0",
      startTime: Math.round(this.o.startEpochMs + (this.speechStartSample * 1000) / SAMPLE_RATE),
      endTime: Math.round(this.o.startEpochMs + (endSample * 1000) / SAMPLE_RATE),
      transcribeLanguage: this.o.language,
      provider: "energy",
    };
    try {
      this.o.onResult(data);
    } catch (err) {
      this.o.onError(err as Error);
    }
  }

  close(): void {
    if (this.closed) return;
    // An utterance still open at close is finalised so nothing already heard is lost.
    if (this.inSpeech) {
      this.inSpeech = false;
      this.emit(true);
    }
    this.closed = true;
    this.carry = Buffer.alloc(0);
  }
}
