/**
 * Test harness: runs apps/loadtest-app/src/app.mjs (the real, published @mentra/sdk 2.1.29 AppServer)
 * as a child process and exposes its "@@EVENT {json}" stdout lines.
 *
 *   const app = await startSdkApp({ packageName: "com.test.x", features: ["transcription", "display"] });
 *   // register app.packageName / app.publicUrl / hashApiKey(app.apiKey) in the directory, start the app…
 *   await app.waitForEvent((e) => e.event === "session", 10_000);
 *   await app.kill();
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
export const SDK_APP_PATH = path.join(REPO_ROOT, "apps", "loadtest-app", "src", "app.mjs");

export interface AppEvent {
  event: string;
  /** epoch ms, stamped by the app when the line was written */
  t?: number;
  sessionId?: string;
  userId?: string;
  [key: string]: any;
}

export type EventPredicate = string | ((e: AppEvent) => boolean);

export interface StartSdkAppOptions {
  packageName?: string;
  apiKey?: string;
  /** default ["transcription", "display"]; add "audio" to count audio bytes */
  features?: string[];
  /** app's onStop deletes its per-user state entry (models a naive real-world app) */
  clearStateOnStop?: boolean;
  /** extra env for the child (e.g. ECHO_PREFIX) */
  env?: Record<string, string>;
  /** ms to wait for GET /health → 200 (default 15000) */
  startTimeoutMs?: number;
}

export interface SdkAppHandle {
  port: number;
  publicUrl: string;
  packageName: string;
  apiKey: string;
  pid: number;
  /** all parsed @@EVENT lines, in order */
  events: AppEvent[];
  /** ms from spawn until /health answered 200 */
  startupMs: number;
  /** resolves to the first event (already received or future) matching pred; rejects on timeout or app exit */
  waitForEvent(pred: EventPredicate, timeoutMs?: number): Promise<AppEvent>;
  /** number of events named `eventName` so far */
  count(eventName: string): number;
  /** GET /health → parsed JSON ({status, app, activeSessions}) */
  health(): Promise<any>;
  /** SIGTERM (default), wait for exit, SIGKILL after 5 s; idempotent; removes the temp cwd */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** null while running */
  exitInfo(): { code: number | null; signal: NodeJS.Signals | null } | null;
  /** last ~16 KB of the child's stderr */
  stderrTail(): string;
  /** last ~16 KB of the child's non-event stdout (the SDK's pino-pretty logs, ANSI stripped) */
  logTail(): string;
}

export function hashApiKey(key: string): string {
  return createHash("sha256").update(key).digest("hex");
}

/** Free TCP port: listen on port 0, read it, close. */
export function getFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => (port ? resolve(port) : reject(new Error("no port"))));
    });
  });
}

export interface HttpResult {
  status: number;
  body: any;
  text: string;
}

/** Minimal JSON-over-HTTP client without keep-alive (agent: false), so no sockets outlive a test. */
export function httpJson(
  method: string,
  url: string,
  body?: unknown,
  timeoutMs = 15_000,
): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const req = http.request(
      url,
      {
        method,
        agent: false,
        headers: {
          connection: "close",
          ...(payload ? { "content-type": "application/json", "content-length": String(payload.length) } : {}),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let parsed: any = undefined;
          try {
            parsed = text ? JSON.parse(text) : undefined;
          } catch {
            parsed = undefined;
          }
          resolve({ status: res.statusCode ?? 0, body: parsed, text });
        });
        res.on("error", reject);
      },
    );
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`${method} ${url} timed out after ${timeoutMs} ms`)));
    req.on("error", reject);
    if (payload) req.write(payload);
    req.end();
  });
}

/** POST JSON (e.g. the session_request / stop_request webhook to `${app.publicUrl}/webhook`). */
export function postJson(url: string, body: unknown, timeoutMs?: number): Promise<HttpResult> {
  return httpJson("POST", url, body, timeoutMs);
}

const TAIL_BYTES = 16 * 1024;
const EVENT_MARK = "@@EVENT ";
// eslint-disable-next-line no-control-regex
const ANSI_RE = /\x1b\[[0-9;]*m/g;

class Tail {
  private s = "";
  push(chunk: string) {
    this.s += chunk;
    if (this.s.length > TAIL_BYTES * 2) this.s = this.s.slice(-TAIL_BYTES);
  }
  get(): string {
    return this.s.slice(-TAIL_BYTES);
  }
}

/** Children still running, killed hard if the test process exits without cleaning up. */
const liveChildren = new Set<ChildProcess>();
let exitHookInstalled = false;
function installExitHook() {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const c of liveChildren) {
      try {
        c.kill("SIGKILL");
      } catch {
        /* ignore */
      }
    }
  });
}

function describe(pred: EventPredicate): string {
  return typeof pred === "string" ? `event "${pred}"` : `predicate ${pred.toString().slice(0, 120)}`;
}

export async function startSdkApp(opts: StartSdkAppOptions = {}): Promise<SdkAppHandle> {
  let lastErr: unknown;
  // Retry only when the port picked by getFreePort() got taken in between (EADDRINUSE).
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      return await startOnce(opts, await getFreePort());
    } catch (err) {
      lastErr = err;
      if (!(err instanceof Error && /EADDRINUSE/.test(err.message))) throw err;
    }
  }
  throw lastErr;
}

async function startOnce(opts: StartSdkAppOptions, port: number): Promise<SdkAppHandle> {
  installExitHook();
  const packageName = opts.packageName ?? "com.mentra.demo.transcribe";
  const apiKey = opts.apiKey ?? "demo-api-key";
  const features = opts.features ?? ["transcription", "display"];
  const startTimeoutMs = opts.startTimeoutMs ?? 15_000;

  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v === undefined) continue;
    if (k.startsWith("BETTERSTACK_")) continue; // never ship logs
    if (k === "NODE_TEST_CONTEXT") continue; // we are possibly inside node --test
    env[k] = v;
  }
  Object.assign(env, {
    PKG: packageName,
    API_KEY: apiKey,
    PORT: String(port),
    FEATURES: features.join(","),
    CLEAR_STATE_ON_STOP: opts.clearStateOnStop ? "1" : "0",
  });
  Object.assign(env, opts.env ?? {});

  // Clean cwd: the SDK calls dotenv.config(), which would pick up a .env in the cwd.
  const cwd = mkdtempSync(path.join(os.tmpdir(), "sdk-app-"));
  const t0 = Date.now();
  const child = spawn(process.execPath, [SDK_APP_PATH], { cwd, env, stdio: ["ignore", "pipe", "pipe"] });
  liveChildren.add(child);

  const events: AppEvent[] = [];
  const waiters = new Set<{ check: () => void }>();
  const stderr = new Tail();
  const logs = new Tail();
  let exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  let closed = false;
  const exited = new Promise<void>((resolve) => {
    child.once("exit", (code, signal) => {
      exit = { code, signal };
      liveChildren.delete(child);
      resolve();
    });
  });
  // 'close' = exited AND stdout/stderr drained, so every event line has been parsed.
  const closedP = new Promise<void>((resolve) => {
    child.once("close", () => {
      closed = true;
      resolve();
      for (const w of [...waiters]) w.check();
    });
  });
  child.once("error", (err) => {
    stderr.push(`spawn error: ${err.message}\n`);
  });

  const handleLine = (line: string) => {
    const i = line.indexOf(EVENT_MARK);
    if (i < 0) {
      logs.push(line.replace(ANSI_RE, "") + "\n");
      return;
    }
    if (i > 0) logs.push(line.slice(0, i).replace(ANSI_RE, "") + "\n");
    try {
      const ev = JSON.parse(line.slice(i + EVENT_MARK.length)) as AppEvent;
      if (ev && typeof ev.event === "string") {
        events.push(ev);
        for (const w of [...waiters]) w.check();
      }
    } catch {
      logs.push(`[unparseable event line] ${line}\n`);
    }
  };
  let buf = "";
  child.stdout!.setEncoding("utf8");
  child.stdout!.on("data", (chunk: string) => {
    buf += chunk;
    let nl: number;
    while ((nl = buf.indexOf("\n")) >= 0) {
      handleLine(buf.slice(0, nl));
      buf = buf.slice(nl + 1);
    }
  });
  child.stdout!.on("end", () => {
    if (buf) handleLine(buf);
    buf = "";
  });
  child.stderr!.setEncoding("utf8");
  child.stderr!.on("data", (chunk: string) => stderr.push(chunk));

  const matches = (pred: EventPredicate) => (typeof pred === "string" ? (e: AppEvent) => e.event === pred : pred);

  const waitForEvent = (pred: EventPredicate, timeoutMs = 10_000): Promise<AppEvent> => {
    const fn = matches(pred);
    return new Promise<AppEvent>((resolve, reject) => {
      let scanned = 0;
      const w = {
        check: () => {
          for (; scanned < events.length; scanned++) {
            const e = events[scanned]!;
            let ok = false;
            try {
              ok = fn(e);
            } catch {
              ok = false;
            }
            if (ok) {
              done();
              resolve(e);
              return;
            }
          }
          if (closed) {
            done();
            reject(
              new Error(
                `sdk app exited (${JSON.stringify(exit)}) while waiting for ${describe(pred)}\n--- stderr ---\n${stderr.get()}\n--- log tail ---\n${logs.get().slice(-4000)}`,
              ),
            );
          }
        },
      };
      const timer = setTimeout(() => {
        done();
        reject(
          new Error(
            `timeout after ${timeoutMs} ms waiting for ${describe(pred)}; events so far: ${events
              .map((e) => e.event)
              .join(",")}\n--- log tail ---\n${logs.get().slice(-4000)}`,
          ),
        );
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        waiters.delete(w);
      };
      waiters.add(w);
      w.check();
    });
  };

  let killing: Promise<void> | null = null;
  const kill = (signal: NodeJS.Signals = "SIGTERM"): Promise<void> => {
    if (!killing) {
      killing = (async () => {
        if (!exit) {
          try {
            child.kill(signal);
          } catch {
            /* already gone */
          }
          let hardTimer: NodeJS.Timeout | undefined;
          await Promise.race([
            exited,
            new Promise<void>((r) => {
              hardTimer = setTimeout(r, 5_000);
            }),
          ]);
          clearTimeout(hardTimer);
          if (!exit) {
            try {
              child.kill("SIGKILL");
            } catch {
              /* ignore */
            }
            await exited;
          }
        }
        // let the stdout/stderr pipes drain so the last events (stop/exit) are parsed
        let drainTimer: NodeJS.Timeout | undefined;
        await Promise.race([closedP, new Promise<void>((r) => (drainTimer = setTimeout(r, 2_000)))]);
        clearTimeout(drainTimer);
        rmSync(cwd, { recursive: true, force: true });
      })();
    }
    return killing;
  };

  const publicUrl = `http://127.0.0.1:${port}`;
  const health = async () => {
    const r = await httpJson("GET", `${publicUrl}/health`, undefined, 5_000);
    if (r.status !== 200) throw new Error(`/health → ${r.status} ${r.text}`);
    return r.body;
  };

  // Wait for GET /health → 200 (the express server is up before start() resolves).
  const deadline = t0 + startTimeoutMs;
  for (;;) {
    if (exit) {
      const fatal = events.find((e) => e.event === "fatal");
      await kill();
      throw new Error(
        `sdk app exited during startup (${JSON.stringify(exit)})${fatal ? ` ${fatal.code}: ${fatal.message}` : ""}\n--- stderr ---\n${stderr.get()}\n--- log tail ---\n${logs.get().slice(-4000)}`,
      );
    }
    try {
      const r = await httpJson("GET", `${publicUrl}/health`, undefined, 1_000);
      if (r.status === 200) break;
    } catch {
      /* not yet listening */
    }
    if (Date.now() > deadline) {
      await kill("SIGKILL");
      throw new Error(`sdk app not healthy after ${startTimeoutMs} ms\n--- stderr ---\n${stderr.get()}\n--- log tail ---\n${logs.get().slice(-4000)}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const startupMs = Date.now() - t0;

  return {
    port,
    publicUrl,
    packageName,
    apiKey,
    pid: child.pid!,
    events,
    startupMs,
    waitForEvent,
    count: (name: string) => events.reduce((n, e) => n + (e.event === name ? 1 : 0), 0),
    health,
    kill,
    exitInfo: () => exit,
    stderrTail: () => stderr.get(),
    logTail: () => logs.get(),
  };
}
