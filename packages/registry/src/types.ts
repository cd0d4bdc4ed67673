/** The pod registry and the assignment store: interfaces shared by the Redis and in-memory implementations. */

export type PodState = "starting" | "ready" | "draining";

export interface PodEndpoints {
  /** Public HTTP base for this pod's REST (and the base of its glasses-ws and app-ws URLs). */
  httpUrl: string;
  /** Public glasses-ws URL. */
  wsUrl: string;
  udpHost: string;
  udpPort: number;
  /** Address the gateway itself uses to reach the pod (proxying in a local cluster). */
  internalUrl: string;
}

export interface PodCapacity {
  maxSessions: number;
  lagP99CapMs: number;
  eluCap: number;
}

export interface DrainProgress {
  startedAt: number;
  deadline: number;
  sessionsAtStart: number;
  sessionsLeft: number;
}

/** What a pod writes about itself every heartbeat. Only the pod writes its own record. */
export interface PodRecord {
  podId: string;
  state: PodState;
  endpoints: PodEndpoints;
  sessions: number;
  lagP99Ms: number;
  elu: number;
  capacity: PodCapacity;
  startedAt: number;
  updatedAt: number;
  version?: string;
  drain?: DrainProgress;
}

/** Operator intent about a pod, written by the gateway's admin API, read by pods and gateways. */
export interface PodControl {
  cordoned: boolean;
  /** Set by `drain`; the pod starts its drain sequence when it sees it. */
  drainRequested: boolean;
  drainDeadlineMs?: number;
  drainRatePerS?: number;
  updatedAt: number;
}

export interface PodView extends PodRecord {
  control: PodControl;
}

export interface PodRegistry {
  /** Writes the pod's own record with a TTL; a pod that stops heartbeating disappears. */
  heartbeat(rec: PodRecord, ttlMs: number): Promise<void>;
  /** Removes the pod's record at once (clean exit). */
  remove(podId: string): Promise<void>;
  /** Every live pod with its operator control flags. */
  list(): Promise<PodView[]>;
  getControl(podId: string): Promise<PodControl>;
  setControl(podId: string, patch: Partial<Omit<PodControl, "updatedAt">>): Promise<PodControl>;
  close(): Promise<void>;
}

export interface Assignment {
  userId: string;
  podId: string;
  /** Fencing epoch: strictly increases with every change of owner for this user. */
  epoch: number;
}

export interface AssignmentStore {
  get(userId: string): Promise<Assignment | null>;
  getMany(userIds: string[]): Promise<(Assignment | null)[]>;
  /**
   * Atomically assigns the user to podId if the current assignment still equals `expected`
   * (null = no assignment). Returns the assignment in force afterwards and whether this call won.
   */
  claim(userId: string, podId: string, expected: Assignment | null): Promise<{ won: boolean; assignment: Assignment | null }>;
  /** Deletes the assignment only if it is still (podId, epoch). */
  release(userId: string, podId: string, epoch: number): Promise<boolean>;
  /** Called with (userId, newOwner) whenever an assignment changes owner (pub/sub in Redis). */
  onOwnerChange(fn: (a: Assignment) => void): () => void;
  close(): Promise<void>;
}

export const defaultControl = (): PodControl => ({ cordoned: false, drainRequested: false, updatedAt: 0 });
