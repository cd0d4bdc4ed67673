/**
 * A pino destination with a bounded queue: when stdout cannot keep up, lines beyond the bound are
 * dropped and counted instead of growing the heap (failure case C15).
 */
import type { Writable } from "node:stream";

export class BoundedLogSink {
  private queue: string[] = [];
  private queuedBytes = 0;
  private writing = false;
  dropped = 0;
  onDrop: ((n: number) => void) | null = null;

  constructor(private readonly out: Writable = process.stdout, private readonly maxBytes = 4 * 1024 * 1024) {}

  /** pino calls write() with one serialised line. */
  write(line: string): boolean {
    if (this.queuedBytes + line.length > this.maxBytes) {
      this.dropped++;
      this.onDrop?.(1);
      return true;
    }
    this.queue.push(line);
    this.queuedBytes += line.length;
    if (!this.writing) this.pump();
    return true;
  }

  get queued(): number {
    return this.queue.length;
  }

  private pump(): void {
    this.writing = true;
    while (this.queue.length > 0) {
      const batch = this.queue.join("");
      this.queue = [];
      this.queuedBytes = 0;
      if (!this.out.write(batch)) {
        this.out.once("drain", () => this.pump());
        return;
      }
    }
    this.writing = false;
  }
}
