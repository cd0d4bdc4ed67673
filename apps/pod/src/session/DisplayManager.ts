/**
 * Decides what the glasses show. Keeps the latest view per app, sends at most one main-view
 * display per throttle window (later requests replace earlier ones, nothing is dropped silently),
 * holds app displays during an app's boot window, and only sends while the phone is connected and
 * glasses are reported connected; held displays go out when they are.
 */
import type { DisplayEvent } from "@mentra-cluster/protocol";
import type { Clock, TimerId } from "../util/clock.ts";

export const SYSTEM_DASHBOARD = "system.augmentos.dashboard";

export interface DisplaySink {
  canDisplay(): boolean;
  sendDisplay(ev: DisplayEvent): void;
}

export class DisplayManager {
  /** Latest view requested by each app (what the glasses would show for it). */
  readonly latest = new Map<string, DisplayEvent>();
  private readonly pending = new Map<string, DisplayEvent>();
  private readonly bootUntil = new Map<string, number>();
  private lastSentAt = -Infinity;
  private timer: TimerId | null = null;
  private timerAt = 0;
  private disposed = false;
  sent = 0;

  constructor(
    private readonly clock: Clock,
    private readonly sink: DisplaySink,
    private readonly throttleMs: number,
    private readonly bootMs: number,
  ) {}

  /** Shows the boot screen for an app being started. */
  boot(pkg: string, appName: string): void {
    this.bootUntil.set(pkg, this.clock.now() + this.bootMs);
    this.pending.delete(pkg);
    this.enqueue({
      type: "display_event",
      packageName: SYSTEM_DASHBOARD,
      view: "main",
      layout: { layoutType: "reference_card", title: "// MentraOS - Starting App", text: appName },
      sessionId: "",
      timestamp: new Date(this.clock.now()).toISOString(),
    });
    this.schedule(this.clock.now() + this.bootMs);
  }

  request(ev: DisplayEvent): void {
    if (this.disposed) return;
    this.latest.set(ev.packageName, ev);
    if (ev.view === "dashboard") {
      if (this.sink.canDisplay()) this.sink.sendDisplay(ev);
      else this.pending.set(`dashboard:${ev.packageName}`, ev); // held, sent when glasses connect
      return;
    }
    this.enqueue(ev);
  }

  /** Called when the phone (re)attaches or glasses report connected. */
  flush(): void {
    this.pump();
  }

  /** An app that stopped leaves nothing queued behind. */
  forget(pkg: string): void {
    this.latest.delete(pkg);
    this.pending.delete(pkg);
    this.bootUntil.delete(pkg);
  }

  get queued(): number {
    return this.pending.size;
  }

  private enqueue(ev: DisplayEvent): void {
    this.pending.delete(ev.packageName); // re-insert so the newest request goes last
    this.pending.set(ev.packageName, ev);
    this.pump();
  }

  private pump(): void {
    if (this.disposed || !this.sink.canDisplay()) return;
    const now = this.clock.now();
    // Boot windows that ended with no app display clear the boot card.
    for (const [pkg, until] of this.bootUntil) {
      if (until > now) continue;
      this.bootUntil.delete(pkg);
      // A boot card never shown is stale now: drop it; otherwise clear it unless the app shows something.
      if (this.pending.get(SYSTEM_DASHBOARD)?.layout.layoutType === "reference_card") this.pending.delete(SYSTEM_DASHBOARD);
      else if (!this.pending.has(pkg) && this.latest.get(pkg)?.view !== "main") {
        this.pending.set(SYSTEM_DASHBOARD, {
          type: "display_event",
          packageName: SYSTEM_DASHBOARD,
          view: "main",
          layout: { layoutType: "text_wall", text: "" },
          durationMs: 0,
          sessionId: "",
          timestamp: new Date(now).toISOString(),
        });
      }
    }
    if (now - this.lastSentAt < this.throttleMs) return this.schedule(this.lastSentAt + this.throttleMs);
    for (const [pkg, ev] of this.pending) {
      const until = this.bootUntil.get(pkg);
      if (until !== undefined && until > now) continue;
      this.pending.delete(pkg);
      this.lastSentAt = now;
      this.sent++;
      this.sink.sendDisplay({ ...ev, timestamp: ev.timestamp ?? new Date(now).toISOString() });
      if (this.pending.size > 0) this.schedule(now + this.throttleMs);
      return;
    }
    // Everything left is waiting for a boot window.
    let next = Infinity;
    for (const pkg of this.pending.keys()) next = Math.min(next, this.bootUntil.get(pkg) ?? Infinity);
    if (next !== Infinity) this.schedule(next);
  }

  private schedule(at: number): void {
    if (this.disposed) return;
    if (this.timer && this.timerAt <= at) return;
    this.clock.clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = this.clock.setTimeout(() => {
      this.timer = null;
      this.pump();
    }, Math.max(0, at - this.clock.now()));
  }

  dispose(): void {
    this.disposed = true;
    this.clock.clearTimeout(this.timer);
    this.timer = null;
    this.pending.clear();
    this.latest.clear();
    this.bootUntil.clear();
  }
}
