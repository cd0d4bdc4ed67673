/**
 * The load test's own cluster, when no --gateway is given: every part a separate process so each
 * one's CPU can be measured on its own.
 *
 *   redis-server (free port, no persistence)   registry, assignments and the directory the pods share
 *   STT emulator (stt-emulator.ts)             only with transcription "stream"
 *   gateway      (apps/gateway/src/main.ts)    REDIS_URL; phones route through it
 *   pods         (pod-process.ts = runPod)     REDIS_URL, TRANSCRIPTION_PROVIDER, STT_URL
 *
 * startLocalCluster({ redisUrl }) from apps/cli does much the same for gateway and pods, but it
 * starts no STT emulator, keeps the pods' admission caps, and it sends every
 * phone and app socket through the gateway's proxy (the gateway's CPU would then compete with the
 * pod's on a small machine). Here each pod advertises its own address (PUBLIC_URL, the
 * "host per pod" URL scheme); `podUrls: "gateway"` keeps the same-origin proxy instead.
 *
 * The pods' admission caps (sessions, lag, ELU, new sessions per second) are lifted, so a run can
 * go past the knee to the breaking point; lag is sampled every 250 ms for finer step figures.
 */
import { appendFileSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { POD_NODE_FLAGS } from "@mentra-cluster/pod/node-flags";
import { freePort, spawnChild, type Child } from "./proc.ts";

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const HERE = path.dirname(fileURLToPath(import.meta.url));

export interface OwnClusterOptions {
  pods: number;
  transcription: "stream" | "energy";
  jwtSecret: string;
  adminToken: string;
  ticketKey?: string;
  podLagSampleMs: number;
  logLevel: string;
  sttFrameMs?: number;
  podUrls?: "direct" | "gateway";
  /** Extra env for every pod (wins over the defaults above). */
  podEnv?: Record<string, string>;
}

export interface PodProcess {
  podId: string;
  httpUrl: string;
  pid: number;
  child: Child;
}

export interface OwnCluster {
  gatewayUrl: string;
  redisUrl: string;
  sttUrl: string | null;
  pods: PodProcess[];
  /** Every process of the cluster by role, for CPU accounting. */
  processes: { role: string; pid: number }[];
  podEnv: Record<string, string>;
  stop(): Promise<void>;
}

const tsx = ["--import", "tsx"];

export async function startRedis(): Promise<{ url: string; child: Child; dir: string }> {
  const bin = process.env.REDIS_SERVER ?? "redis-server";
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const dir = mkdtempSync(path.join(tmpdir(), "loadtest-redis-"));
    try {
      const { child } = await spawnChild("redis-server", bin, ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir], {
        ready: (l) => /Ready to accept connections/i.test(l),
        timeoutMs: 10_000,
      });
      return { url: `redis://127.0.0.1:${port}`, child, dir };
    } catch (err) {
      rmSync(dir, { recursive: true, force: true });
      if (attempt >= 3 || !/Address already in use/i.test((err as Error).message)) {
        if ((err as Error).message.includes("ENOENT")) throw new Error(`${bin} was not found: the load test's own cluster needs a redis-server binary (apt-get install redis-server), or give --gateway`);
        throw err;
      }
    }
  }
}

export async function startOwnCluster(o: OwnClusterOptions): Promise<OwnCluster> {
  const started: Child[] = [];
  const ticketKey = o.ticketKey ?? "loadtest-ticket-key";
  let redisDir = "";
  const stopAll = async () => {
    // Pods first (SIGINT: shut down at once, no drain), then the gateway, STT and Redis.
    const pods = started.filter((c) => c.name.startsWith("pod-"));
    await Promise.all(pods.map((c) => c.stop("SIGINT", 5000)));
    for (const c of started.filter((x) => !x.name.startsWith("pod-")).reverse()) await c.stop("SIGTERM", 3000);
    if (redisDir) rmSync(redisDir, { recursive: true, force: true });
  };
  try {
    const redis = await startRedis();
    started.push(redis.child);
    redisDir = redis.dir;
    const base = { ...process.env, REDIS_URL: redis.url, REDIS_PREFIX: "loadtest:", JWT_SECRET: o.jwtSecret, ROUTE_TICKET_KEY: ticketKey, ADMIN_TOKEN: o.adminToken, NODE_ENV: "development" };
    delete (base as Record<string, unknown>).MONGODB_URL;

    const sttP =
      o.transcription === "stream"
        ? spawnChild("stt-emulator", process.execPath, [...tsx, path.join(HERE, "stt-emulator.ts"), "--port", "0"], {
            cwd: REPO_ROOT,
            env: { ...process.env, NODE_ENV: "development" },
            ready: (_l, j) => j?.msg === "stt listening",
          })
        : null;
    const gwP = spawnChild("gateway", process.execPath, [...tsx, path.join(REPO_ROOT, "apps/gateway/src/main.ts")], {
      cwd: REPO_ROOT,
      env: { ...base, PORT: "0", PROXY_PODS: o.podUrls === "gateway" ? "true" : "false", LOG_LEVEL: "info" },
      ready: (_l, j) => j?.msg === "gateway listening",
    });
    const [stt, gw] = await Promise.all([sttP, gwP]);
    if (stt) started.push(stt.child);
    started.push(gw.child);
    const gatewayUrl = String(gw.readyJson!.url);
    const sttUrl = stt ? String(stt.readyJson!.url) : null;

    const podEnv: Record<string, string> = {
      LAG_SAMPLE_INTERVAL_MS: String(o.podLagSampleMs),
      MAX_SESSIONS: "1000000",
      PLACEMENT_LAG_P99_CAP_MS: "600000",
      READY_LAG_P99_CAP_MS: "600000",
      ELU_CAP: "100",
      MAX_NEW_SESSIONS_PER_S: "100000",
      TRANSCRIPTION_PROVIDER: o.transcription,
      ...(sttUrl ? { STT_URL: sttUrl } : {}),
      ...(sttUrl && o.sttFrameMs !== undefined ? { STT_FRAME_MS: String(o.sttFrameMs) } : {}),
      LOG_LEVEL: o.logLevel,
      ...o.podEnv,
    };
    const pods = await Promise.all(
      Array.from({ length: o.pods }, async (_, i) => {
        const podId = `pod-${i}`;
        const port = await freePort();
        const { child, readyJson } = await spawnChild(podId, process.execPath, [...tsx, ...podNodeArgs(), path.join(HERE, "pod-process.ts")], {
          cwd: REPO_ROOT,
          env: {
            ...base,
            ...podEnv,
            POD_ID: podId,
            PORT: String(port),
            UDP_PORT: "0",
            ...(o.podUrls === "gateway" ? { PUBLIC_URL_TEMPLATE: `${gatewayUrl}/p/{podId}` } : { PUBLIC_URL: `http://127.0.0.1:${port}` }),
          },
          ready: (_l, j) => j?.msg === "loadtest pod ready",
          timeoutMs: 30_000,
          ...podLogTo(podId),
        });
        started.push(child);
        return { podId, httpUrl: String(readyJson!.httpUrl), pid: child.pid, child };
      }),
    );
    // The gateway places users only on pods it has seen ready.
    const deadline = Date.now() + 15_000;
    for (;;) {
      const r = await fetch(`${gatewayUrl}/admin/pods`, { headers: { authorization: `Bearer ${o.adminToken}` } })
        .then((x) => x.json() as Promise<{ pods: { state: string }[] }>)
        .catch(() => ({ pods: [] as { state: string }[] }));
      if (r.pods.filter((p) => p.state === "ready").length >= o.pods) break;
      if (Date.now() > deadline) throw new Error(`the gateway did not see ${o.pods} ready pod(s) within 15 s`);
      await new Promise((res) => setTimeout(res, 100));
    }
    return {
      gatewayUrl,
      redisUrl: redis.url,
      sttUrl,
      pods,
      processes: [
        ...pods.map((p) => ({ role: p.podId, pid: p.pid })),
        { role: "gateway", pid: gw.child.pid },
        ...(stt ? [{ role: "stt", pid: stt.child.pid }] : []),
        { role: "redis", pid: redis.child.pid },
      ],
      podEnv,
      stop: stopAll,
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}

/**
 * Node arguments for the pod processes: the pods' own (POD_NODE_FLAGS), then, for looking inside a run:
 * LOADTEST_POD_CPU_PROF=<dir> writes each pod's .cpuprofile there; LOADTEST_POD_NODE_ARGS adds
 * arguments as they are (space-separated, e.g. "--trace-gc" or "--max-semi-space-size=32");
 * LOADTEST_POD_LOG_DIR=<dir> keeps each pod's whole stdout (its pino log, --trace-gc lines) in
 * <dir>/<podId>.log (otherwise only the last lines are kept, for start-up errors).
 */
function podNodeArgs(env: NodeJS.ProcessEnv = process.env): string[] {
  const args = [...POD_NODE_FLAGS, ...(env.LOADTEST_POD_CPU_PROF ? ["--cpu-prof", "--cpu-prof-dir", env.LOADTEST_POD_CPU_PROF] : [])];
  if (env.LOADTEST_POD_NODE_ARGS) args.push(...env.LOADTEST_POD_NODE_ARGS.split(/\s+/).filter(Boolean));
  return args;
}

function podLogTo(podId: string, env: NodeJS.ProcessEnv = process.env): { onLine?: (line: string) => void } {
  const dir = env.LOADTEST_POD_LOG_DIR;
  if (!dir) return {};
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${podId}.log`);
  return { onLine: (line) => appendFileSync(file, line + "\n") };
}
