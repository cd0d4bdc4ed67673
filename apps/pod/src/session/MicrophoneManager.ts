/**
 * Tells the phone whether to stream audio. Timings from protocol.md §3: subscription changes are
 * debounced 500 ms; the first state and any switch-on go out at once; switching off waits a 3 s
 * hold-down; while on, the state is re-sent every 10 s; after a reconnect it is re-sent at 100 ms.
 */
import type { Clock, TimerId } from "../util/clock.ts";

export interface MicSink {
  needsAudio(): boolean;
  sendMicState(enabled: boolean): void;
}

export class MicrophoneManager {
  enabled = false;
  private everSent = false;
  private debounce: TimerId | null = null;
  private holdDown: TimerId | null = null;
  private keepAlive: TimerId | null = null;
  private resync: TimerId | null = null;
  private disposed = false;

  constructor(private readonly clock: Clock, private readonly sink: MicSink) {}

  /** Subscriptions changed. */
  requestUpdate(): void {
    if (this.disposed) return;
    this.clock.clearTimeout(this.debounce);
    this.debounce = this.clock.setTimeout(() => {
      this.debounce = null;
      this.apply();
    }, 500);
  }

  /** The phone socket was replaced: re-send the current state shortly after. */
  onReconnect(): void {
    if (this.disposed) return;
    this.clock.clearTimeout(this.resync);
    this.resync = this.clock.setTimeout(() => {
      this.resync = null;
      if (this.everSent) this.sink.sendMicState(this.enabled);
      else this.apply();
    }, 100);
  }

  apply(): void {
    if (this.disposed) return;
    const want = this.sink.needsAudio();
    if (want) {
      this.clock.clearTimeout(this.holdDown);
      this.holdDown = null;
      if (!this.enabled || !this.everSent) this.set(true);
      return;
    }
    if (!this.everSent) return this.set(false);
    if (!this.enabled || this.holdDown) return;
    this.holdDown = this.clock.setTimeout(() => {
      this.holdDown = null;
      if (!this.sink.needsAudio()) this.set(false);
    }, 3000);
  }

  private set(on: boolean): void {
    this.enabled = on;
    this.everSent = true;
    this.sink.sendMicState(on);
    this.clock.clearInterval(this.keepAlive);
    this.keepAlive = on ? this.clock.setInterval(() => this.sink.sendMicState(true), 10_000) : null;
  }

  dispose(): void {
    this.disposed = true;
    for (const t of [this.debounce, this.holdDown, this.resync]) this.clock.clearTimeout(t);
    this.clock.clearInterval(this.keepAlive);
    this.debounce = this.holdDown = this.keepAlive = this.resync = null;
  }
}
