/** Transcription behind a provider interface; a session owns its streams and closes them on dispose. */
import type { TranscriptionData } from "@mentra-cluster/protocol";

export interface TranscriptionStreamOptions {
  language: string;
  /** Epoch ms of the first sample written, so results carry real timings. */
  startEpochMs: number;
  onResult(data: TranscriptionData): void;
  onError(err: Error): void;
}

export interface TranscriptionStream {
  /** PCM s16le mono 16 kHz. */
  write(pcm: Buffer): void;
  /** Idempotent; after close no callback fires. */
  close(): void;
  readonly closed: boolean;
  /** Bytes buffered inside the stream (for the per-session memory view). */
  readonly bufferedBytes: number;
}

export interface TranscriptionProvider {
  readonly name: string;
  createStream(opts: TranscriptionStreamOptions): TranscriptionStream;
}
