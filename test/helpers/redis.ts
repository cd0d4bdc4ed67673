/**
 * A throw-away `redis-server` for a test: a free port on 127.0.0.1, no persistence, killed when the
 * test calls stop() (and, as a last resort, when the test process exits).
 *
 *   const redis = await startRedis();
 *   after(() => redis.stop());
 *   redis.url        // redis://127.0.0.1:<port>
 *   redis.kill()     // SIGKILL now: clients see the connection drop (an outage)
 *   await redis.restart()  // back on the same port, empty (no persistence)
 *
 * Needs the `redis-server` binary on PATH (REDIS_SERVER overrides the path). Uses no Redis client
 * library: readiness is checked with a raw PING.
 */
import { spawn, type ChildProcess } from "node:child_process";
import net from "node:net";

export interface RedisHandle {
  url: string;
  port: number;
  /** Stops the server (SIGTERM, SIGKILL after 2 s) and waits for it to exit. Idempotent. */
  stop(): Promise<void>;
  /** SIGKILL at once, without waiting: an abrupt outage. restart() brings it back. */
  kill(): void;
  /** (Re)starts the server on the same port, stopping it first if it is running. Data is gone. */
  restart(): Promise<void>;
}

export interface StartRedisOptions {
  /** Extra redis-server arguments, e.g. ["--maxmemory", "10mb"]. */
  args?: string[];
  /** How long to wait for the first PONG. Default 5 s. */
  readyTimeoutMs?: number;
  /** A fixed port (e.g. one that clients were already given before the server existed). Default: a free one. */
  port?: number;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    for (const p of live) {
      try {
        p.kill("SIGKILL");
      } catch {
        // already gone
      }
    }
  });
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/** One raw PING over TCP; resolves true on +PONG. */
function ping(port: number, timeoutMs = 300): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ host: "127.0.0.1", port });
    let buf = "";
    const done = (ok: boolean) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    sock.once("connect", () => sock.write("PING\r\n"));
    sock.on("data", (d) => {
      buf += d.toString();
      if (buf.includes("\r\n")) done(buf.startsWith("+PONG"));
    });
    sock.once("error", () => done(false));
  });
}

function waitExit(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve();
  return new Promise((r) => p.once("exit", () => r()));
}

class PortInUseError extends Error {}

export async function startRedis(opts: StartRedisOptions = {}): Promise<RedisHandle> {
  installExitHook();
  const bin = process.env.REDIS_SERVER ?? "redis-server";
  const readyTimeoutMs = opts.readyTimeoutMs ?? 5_000;
  let proc: ChildProcess | null = null;
  /** The last process started, even after kill(): restart() waits for it to be gone. */
  let last: ChildProcess | null = null;
  let port = 0;

  const spawnOn = async (p: number): Promise<void> => {
    const child = spawn(bin, ["--port", String(p), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", ...(opts.args ?? [])], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout!.on("data", (d) => (output = (output + d.toString()).slice(-4000)));
    child.stderr!.on("data", (d) => (output = (output + d.toString()).slice(-4000)));
    let spawnError: Error | null = null;
    child.once("error", (err) => (spawnError = err));
    live.add(child);
    child.once("exit", () => live.delete(child));
    const end = Date.now() + readyTimeoutMs;
    for (;;) {
      if (spawnError) throw new Error(`could not start ${bin}: ${(spawnError as Error).message}`);
      if (child.exitCode !== null || child.signalCode !== null) {
        if (/Address already in use/i.test(output)) throw new PortInUseError(`port ${p} is in use`);
        throw new Error(`redis-server on port ${p} exited with ${child.exitCode ?? child.signalCode}:\n${output}`);
      }
      if (await ping(p)) {
        proc = last = child;
        return;
      }
      if (Date.now() > end) {
        child.kill("SIGKILL");
        throw new Error(`redis-server on port ${p} did not answer PING within ${readyTimeoutMs} ms:\n${output}`);
      }
      await new Promise((r) => setTimeout(r, 25));
    }
  };

  const stop = async (): Promise<void> => {
    const p = proc;
    proc = null;
    if (p && p.exitCode === null && p.signalCode === null) {
      p.kill("SIGTERM");
      const t = setTimeout(() => p.kill("SIGKILL"), 2_000);
      await waitExit(p);
      clearTimeout(t);
    }
    if (last) await waitExit(last);
  };

  // A port found free can be taken before redis binds it: try another a few times.
  for (let attempt = 0; ; attempt++) {
    if (opts.port !== undefined && attempt > 0) throw new Error(`port ${opts.port} is in use`);
    port = opts.port ?? (await freePort());
    try {
      await spawnOn(port);
      break;
    } catch (err) {
      if (!(err instanceof PortInUseError) || attempt >= 4) throw err;
    }
  }

  return {
    get url() {
      return `redis://127.0.0.1:${port}`;
    },
    get port() {
      return port;
    },
    stop,
    kill() {
      const p = proc;
      proc = null;
      if (p && p.exitCode === null && p.signalCode === null) p.kill("SIGKILL");
    },
    async restart() {
      await stop();
      // Same port, so clients reconnect to the address they know; wait out a short TIME_WAIT clash.
      for (let i = 0; ; i++) {
        try {
          await spawnOn(port);
          return;
        } catch (err) {
          if (!(err instanceof PortInUseError) || i >= 40) throw err;
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    },
  };
}
