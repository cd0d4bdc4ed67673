/**
 * Wraps any Directory, adds a fixed latency to every call and counts the calls: rehearses a distant
 * database (failure case C16: "300 ms added to every directory call") against any store, and lets
 * tests count round trips on the underlying store.
 */
import type { AppRecord, Directory, UserRecord } from "./index.ts";

export interface DelayedDirectoryOptions {
  latencyMs: number;
  /** Close the wrapped store on close() (default true). */
  ownsInner?: boolean;
}

export class DelayedDirectory implements Directory {
  readonly kind: string;
  /** Calls served (ready() and close() are not counted). */
  calls = 0;
  readonly callsByMethod: Record<string, number> = {};
  private readonly latencyMs: number;
  private readonly ownsInner: boolean;

  constructor(readonly inner: Directory, opts: DelayedDirectoryOptions) {
    this.kind = inner.kind;
    this.latencyMs = Math.max(0, opts.latencyMs);
    this.ownsInner = opts.ownsInner ?? true;
  }

  private async rt<T>(method: string, f: () => Promise<T>): Promise<T> {
    this.calls++;
    this.callsByMethod[method] = (this.callsByMethod[method] ?? 0) + 1;
    if (this.latencyMs > 0) await new Promise((r) => setTimeout(r, this.latencyMs));
    return f();
  }

  ready(): Promise<void> {
    return this.inner.ready();
  }
  getOrCreateUser(userId: string): Promise<UserRecord> {
    return this.rt("getOrCreateUser", () => this.inner.getOrCreateUser(userId));
  }
  getApp(packageName: string): Promise<AppRecord | null> {
    return this.rt("getApp", () => this.inner.getApp(packageName));
  }
  listApps(): Promise<AppRecord[]> {
    return this.rt("listApps", () => this.inner.listApps());
  }
  upsertApp(app: AppRecord): Promise<void> {
    return this.rt("upsertApp", () => this.inner.upsertApp(app));
  }
  deleteApp(packageName: string): Promise<void> {
    return this.rt("deleteApp", () => this.inner.deleteApp(packageName));
  }
  installApp(userId: string, packageName: string): Promise<void> {
    return this.rt("installApp", () => this.inner.installApp(userId, packageName));
  }
  addRunningApp(userId: string, packageName: string): Promise<void> {
    return this.rt("addRunningApp", () => this.inner.addRunningApp(userId, packageName));
  }
  removeRunningApp(userId: string, packageName: string): Promise<void> {
    return this.rt("removeRunningApp", () => this.inner.removeRunningApp(userId, packageName));
  }
  setUserSettings(userId: string, patch: Record<string, unknown>): Promise<void> {
    return this.rt("setUserSettings", () => this.inner.setUserSettings(userId, patch));
  }
  async close(): Promise<void> {
    if (this.ownsInner) await this.inner.close();
  }
}
