/** Child processes and /proc readings: spawning with a ready line, CPU of a pid, how busy the machine is. */
import { spawn, type ChildProcess, type SpawnOptions } from "node:child_process";
import { readFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import { createInterface } from "node:readline";

const CLK_TCK = 100; // USER_HZ on Linux

/** utime + stime of a process in ms, or null (gone, or not Linux). */
export function procCpuMs(pid: number): number | null {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, "utf8");
    const rest = f.slice(f.lastIndexOf(")") + 2).split(" ");
    return ((Number(rest[11]) + Number(rest[12])) * 1000) / CLK_TCK;
  } catch {
    return null;
  }
}

/** CPU rate (cores) of a set of pids between calls. */
export class CpuMeter {
  private last = new Map<number, { cpuMs: number; at: number }>();
  /** Cores used by pid since the previous call for it (null on the first call or when unreadable). */
  cores(pid: number | undefined): number | null {
    if (!pid) return null;
    const cpuMs = procCpuMs(pid);
    const at = performance.now();
    const prev = this.last.get(pid);
    if (cpuMs === null) return null;
    this.last.set(pid, { cpuMs, at });
    if (!prev || at <= prev.at) return null;
    return (cpuMs - prev.cpuMs) / (at - prev.at);
  }
}

/** Share (0..1) of all CPUs busy since the previous call, from /proc/stat; null off Linux or on the first call. */
export class HostMeter {
  private prev: { busy: number; total: number } | null = null;
  readonly cores = os.cpus().length;
  busy(): number | null {
    let line: string;
    try {
      line = readFileSync("/proc/stat", "utf8").split("\n")[0]!;
    } catch {
      return null;
    }
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    const idle = (v[3] ?? 0) + (v[4] ?? 0); // idle + iowait
    const total = v.slice(0, 8).reduce((a, b) => a + b, 0); // user..steal
    const cur = { busy: total - idle, total };
    const prev = this.prev;
    this.prev = cur;
    if (!prev || cur.total <= prev.total) return null;
    return (cur.busy - prev.busy) / (cur.total - prev.total);
  }
}

export function freePort(host = "127.0.0.1"): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once("error", reject);
    srv.listen(0, host, () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Every process the load test starts. They run in process groups of their own (a terminal's Ctrl-C
 * reaches only the driver, which stops them in order and still measures the last step), so the
 * driver must not leave them behind however it ends: whatever is still running when this process
 * exits (a crash, a second Ctrl-C, a closed pipe) is killed.
 */
const live = new Set<ChildProcess>();
let exitHook = false;
export function adoptChild(proc: ChildProcess): void {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  live.add(proc);
  proc.once("exit", () => live.delete(proc));
  if (exitHook) return;
  exitHook = true;
  process.on("exit", () => {
    for (const c of live) {
      try {
        c.kill("SIGKILL");
      } catch {
        // already gone
      }
    }
  });
}

export interface Child {
  name: string;
  proc: ChildProcess;
  pid: number;
  /** The last ~60 lines of output (stdout and stderr), for diagnostics. */
  tail(): string;
  /** SIGTERM (then SIGKILL after graceMs) and wait for exit. Idempotent. */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<void>;
  exited(): boolean;
}

/**
 * Spawns a process, keeps reading its output (a full pipe would stall it) and resolves once a
 * stdout line matches `ready` (a JSON line, or any line when `ready` gets the raw text).
 */
export async function spawnChild(
  name: string,
  cmd: string,
  args: string[],
  opts: SpawnOptions & { ready: (line: string, json: Record<string, unknown> | null) => boolean; timeoutMs?: number; onLine?: (line: string) => void },
): Promise<{ child: Child; readyLine: string; readyJson: Record<string, unknown> | null }> {
  const proc = spawn(cmd, args, { detached: true, ...opts, stdio: ["ignore", "pipe", "pipe"] });
  adoptChild(proc);
  const lines: string[] = [];
  const keep = (l: string) => {
    lines.push(l);
    if (lines.length > 60) lines.shift();
  };
  let resolveReady!: (v: { line: string; json: Record<string, unknown> | null }) => void;
  let rejectReady!: (e: Error) => void;
  const ready = new Promise<{ line: string; json: Record<string, unknown> | null }>((res, rej) => ((resolveReady = res), (rejectReady = rej)));
  let isReady = false;
  createInterface({ input: proc.stdout! }).on("line", (l) => {
    keep(l);
    opts.onLine?.(l);
    if (isReady) return;
    let json: Record<string, unknown> | null = null;
    if (l.startsWith("{")) {
      try {
        json = JSON.parse(l);
      } catch {
        json = null;
      }
    }
    if (opts.ready(l, json)) {
      isReady = true;
      resolveReady({ line: l, json });
    }
  });
  createInterface({ input: proc.stderr! }).on("line", keep);
  proc.once("error", (err) => rejectReady(new Error(`${name}: ${err.message}`)));
  proc.once("exit", (code, sig) => {
    if (!isReady) rejectReady(new Error(`${name} exited (${code ?? sig}) before it was ready:\n${lines.join("\n")}`));
  });
  const timer = setTimeout(() => rejectReady(new Error(`${name} was not ready within ${opts.timeoutMs ?? 30_000} ms:\n${lines.join("\n")}`)), opts.timeoutMs ?? 30_000);
  const exitedP = new Promise<void>((r) => proc.once("exit", () => r()));
  const child: Child = {
    name,
    proc,
    pid: proc.pid ?? 0,
    tail: () => lines.join("\n"),
    exited: () => proc.exitCode !== null || proc.signalCode !== null,
    async stop(signal = "SIGTERM", graceMs = 5000) {
      if (child.exited()) return;
      proc.kill(signal);
      const t = setTimeout(() => proc.kill("SIGKILL"), graceMs);
      await exitedP;
      clearTimeout(t);
    },
  };
  try {
    const r = await ready;
    return { child, readyLine: r.line, readyJson: r.json };
  } catch (err) {
    await child.stop("SIGKILL");
    throw err;
  } finally {
    clearTimeout(timer);
  }
}
