/** In-memory registry and assignment store for a single-process cluster and for tests. */
import type { Assignment, AssignmentStore, PodControl, PodRecord, PodRegistry, PodView } from "./types.ts";
import { defaultControl } from "./types.ts";

export class MemoryPodRegistry implements PodRegistry {
  private readonly pods = new Map<string, { rec: PodRecord; expiresAt: number }>();
  private readonly controls = new Map<string, PodControl>();
  constructor(private readonly now: () => number = Date.now) {}

  async heartbeat(rec: PodRecord, ttlMs: number): Promise<void> {
    this.pods.set(rec.podId, { rec: structuredClone(rec), expiresAt: this.now() + ttlMs });
  }
  async remove(podId: string): Promise<void> {
    this.pods.delete(podId);
  }
  async list(): Promise<PodView[]> {
    const now = this.now();
    const out: PodView[] = [];
    for (const [id, p] of this.pods) {
      if (p.expiresAt <= now) {
        this.pods.delete(id);
        continue;
      }
      out.push({ ...structuredClone(p.rec), control: { ...(this.controls.get(id) ?? defaultControl()) } });
    }
    return out.sort((a, b) => a.podId.localeCompare(b.podId));
  }
  async getControl(podId: string): Promise<PodControl> {
    return { ...(this.controls.get(podId) ?? defaultControl()) };
  }
  async setControl(podId: string, patch: Partial<Omit<PodControl, "updatedAt">>): Promise<PodControl> {
    const next = { ...(this.controls.get(podId) ?? defaultControl()), ...patch, updatedAt: this.now() };
    this.controls.set(podId, next);
    return { ...next };
  }
  async close(): Promise<void> {}
}

export class MemoryAssignmentStore implements AssignmentStore {
  private readonly map = new Map<string, Assignment>();
  /** One counter for all users, as in Redis: an epoch is never reused, even after a release. */
  private epoch = 0;
  private readonly listeners = new Set<(a: Assignment) => void>();

  async get(userId: string): Promise<Assignment | null> {
    const a = this.map.get(userId);
    return a ? { ...a } : null;
  }
  async getMany(userIds: string[]): Promise<(Assignment | null)[]> {
    return userIds.map((u) => {
      const a = this.map.get(u);
      return a ? { ...a } : null;
    });
  }
  async claim(userId: string, podId: string, expected: Assignment | null): Promise<{ won: boolean; assignment: Assignment | null }> {
    const cur = this.map.get(userId) ?? null;
    const same = cur === null ? expected === null : expected !== null && cur.podId === expected.podId && cur.epoch === expected.epoch;
    if (!same) return { won: false, assignment: cur ? { ...cur } : null };
    const next: Assignment = { userId, podId, epoch: ++this.epoch };
    this.map.set(userId, next);
    if (!cur || cur.podId !== podId) for (const l of this.listeners) queueMicrotask(() => l({ ...next }));
    return { won: true, assignment: { ...next } };
  }
  async release(userId: string, podId: string, epoch: number): Promise<boolean> {
    const cur = this.map.get(userId);
    if (!cur || cur.podId !== podId || cur.epoch !== epoch) return false;
    this.map.delete(userId);
    return true;
  }
  onOwnerChange(fn: (a: Assignment) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }
  async close(): Promise<void> {
    this.listeners.clear();
  }
}
