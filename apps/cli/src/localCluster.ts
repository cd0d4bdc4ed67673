/**
 * A whole cluster on one machine: gateway (proxying /p/<podId>/… like an ingress), N pods and,
 * optionally, the demo mini app. Without REDIS_URL everything runs in this process on an in-memory
 * registry; with it, the gateway and each pod are separate processes sharing that Redis.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { writeFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import pino from "pino";
import { EmbeddedDirectory, hashApiKey, type Directory, type SeedFile } from "@mentra-cluster/directory";
import { Gateway, loadGatewayConfig } from "@mentra-cluster/gateway";
import { MemoryAssignmentStore, MemoryPodRegistry } from "@mentra-cluster/registry";
import { createPod, loadConfig, type Pod } from "@mentra-cluster/pod";
import { POD_NODE_FLAGS } from "@mentra-cluster/pod/node-flags";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");

export interface LocalClusterOptions {
  pods?: number;
  gatewayPort?: number;
  /** First pod HTTP port; 0 = any free port. */
  podBasePort?: number;
  /** First pod UDP port; 0 = any free port. */
  udpBasePort?: number;
  redisUrl?: string | null;
  redisPrefix?: string;
  jwtSecret?: string;
  ticketKey?: string;
  adminToken?: string;
  seed?: SeedFile;
  directory?: Directory;
  logLevel?: string;
  heartbeatMs?: number;
  /** Extra env for pod processes (Redis mode). */
  podEnv?: Record<string, string>;
}

export interface LocalCluster {
  gatewayUrl: string;
  podIds: string[];
  /** In-process pods (empty in Redis mode). */
  pods: Pod[];
  gateway: Gateway | null;
  children: Map<string, ChildProcess>;
  /** Kills one pod (SIGKILL in Redis mode, abrupt stop in-process). */
  killPod(podId: string): Promise<void>;
  stop(): Promise<void>;
}

async function readJsonLine(child: ChildProcess, match: (j: Record<string, unknown>) => boolean, timeoutMs = 20_000): Promise<Record<string, unknown>> {
  return new Promise((resolveLine, reject) => {
    const rl = createInterface({ input: child.stdout! });
    const t = setTimeout(() => reject(new Error("process did not report in time")), timeoutMs);
    rl.on("line", (l) => {
      try {
        const j = JSON.parse(l);
        if (match(j)) {
          clearTimeout(t);
          resolveLine(j);
        }
      } catch {
        /* not JSON */
      }
    });
    child.once("exit", (c) => {
      clearTimeout(t);
      reject(new Error(`process exited early (${c})`));
    });
  });
}

export async function startLocalCluster(o: LocalClusterOptions = {}): Promise<LocalCluster> {
  const n = o.pods ?? 3;
  const jwtSecret = o.jwtSecret ?? process.env.JWT_SECRET ?? "dev-only-secret";
  const ticketKey = o.ticketKey ?? process.env.ROUTE_TICKET_KEY ?? "dev-only-ticket-key";
  const adminToken = o.adminToken ?? process.env.ADMIN_TOKEN ?? "dev-admin-token";
  const logLevel = o.logLevel ?? process.env.LOG_LEVEL ?? "info";
  const podIds = Array.from({ length: n }, (_, i) => `pod-${i}`);
  const port = (base: number | undefined, i: number) => (base ? base + i : 0);

  if (!o.redisUrl) {
    const registry = new MemoryPodRegistry();
    const assignments = new MemoryAssignmentStore();
    const gateway = new Gateway(
      { ...loadGatewayConfig({ NODE_ENV: "development" }), port: o.gatewayPort ?? 7000, jwtSecret, ticketKey, adminToken, proxyPods: true, logLevel },
      { registry, assignments, snapshotIntervalMs: 500, logger: pino({ level: logLevel, base: { gatewayId: "gateway-0" } }) },
    );
    const gatewayUrl = await gateway.start();
    const directory = o.directory ?? new EmbeddedDirectory({ seed: o.seed });
    const pods: Pod[] = [];
    for (let i = 0; i < n; i++) {
      const config = {
        ...loadConfig({ NODE_ENV: "development", POD_ID: podIds[i], JWT_SECRET: jwtSecret, ROUTE_TICKET_KEY: ticketKey, ADMIN_TOKEN: adminToken, LOG_LEVEL: logLevel }),
        port: port(o.podBasePort, i),
        udpPort: port(o.udpBasePort, i),
        publicUrlTemplate: `${gatewayUrl}/p/{podId}`,
        // One process, one event loop shared by every pod: a per-pod lag cap would only measure
        // the neighbours, so it is loose here (separate processes keep the real cap).
        placementLagP99CapMs: 1000,
        readyLagP99CapMs: 2000,
        eluCap: 1.01,
      };
      const pod: Pod = createPod(config, {
        onDrained: () => void pod.stop(),
        directory,
        cluster: { registry, assignments },
        heartbeatMs: o.heartbeatMs,
        logger: pino({ level: logLevel, base: { podId: config.podId } }),
      });
      await pod.start();
      pods.push(pod);
    }
    await gateway.router.refresh();
    return {
      gatewayUrl,
      podIds,
      pods,
      gateway,
      children: new Map(),
      async killPod(podId) {
        const pod = pods.find((p) => p.config.podId === podId);
        if (!pod) throw new Error(`no pod ${podId}`);
        // Simulate a crash: stop heartbeating and drop every socket without a goodbye.
        await pod.crash();
      },
      async stop() {
        for (const p of pods) await p.stop().catch(() => undefined);
        await gateway.stop();
      },
    };
  }

  // Redis mode: separate processes.
  const children = new Map<string, ChildProcess>();
  const baseEnv = {
    ...process.env,
    REDIS_URL: o.redisUrl,
    REDIS_PREFIX: o.redisPrefix ?? (process.env.REDIS_PREFIX || "mentra:"),
    JWT_SECRET: jwtSecret,
    ROUTE_TICKET_KEY: ticketKey,
    ADMIN_TOKEN: adminToken,
    LOG_LEVEL: logLevel,
  };
  const gw = spawn(process.execPath, ["--import", "tsx", resolve(ROOT, "apps/gateway/src/main.ts")], {
    cwd: ROOT,
    env: { ...baseEnv, PORT: String(o.gatewayPort ?? 7000), PROXY_PODS: "true", LOG_LEVEL: "info" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  children.set("gateway", gw);
  const gwLine = await readJsonLine(gw, (j) => j.msg === "gateway listening");
  const gatewayUrl = gwLine.url as string;
  let seedFile: string | undefined;
  if (o.seed) {
    seedFile = resolve(mkdtempSync(resolve(tmpdir(), "mentra-seed-")), "seed.json");
    writeFileSync(seedFile, JSON.stringify(o.seed));
  }
  await Promise.all(
    podIds.map(async (podId, i) => {
      const child = spawn(process.execPath, [...POD_NODE_FLAGS, "--import", "tsx", resolve(ROOT, "apps/pod/src/main.ts")], {
        cwd: ROOT,
        env: {
          ...baseEnv,
          ...o.podEnv,
          POD_ID: podId,
          PORT: String(port(o.podBasePort, i)),
          UDP_PORT: String(port(o.udpBasePort, i)),
          PUBLIC_URL_TEMPLATE: `${gatewayUrl}/p/{podId}`,
          LOG_LEVEL: "info",
          ...(seedFile ? { DIRECTORY_SEED: seedFile } : {}),
        },
        stdio: ["ignore", "pipe", "inherit"],
      });
      children.set(podId, child);
      await readJsonLine(child, (j) => j.msg === "pod listening");
    }),
  );
  // Wait until the gateway sees every pod ready.
  const deadline = Date.now() + 10_000;
  for (;;) {
    const r = await fetch(`${gatewayUrl}/admin/pods`, { headers: { authorization: `Bearer ${adminToken}` } }).then((x) => x.json()).catch(() => ({ pods: [] }));
    if ((r.pods as { state: string }[]).filter((p) => p.state === "ready").length === n) break;
    if (Date.now() > deadline) throw new Error("pods did not become ready in the gateway's view");
    await new Promise((r2) => setTimeout(r2, 100));
  }
  const exit = (c: ChildProcess, sig: NodeJS.Signals) =>
    new Promise<void>((r) => {
      if (c.exitCode !== null || c.signalCode !== null) return r();
      c.once("exit", () => r());
      c.kill(sig);
    });
  return {
    gatewayUrl,
    podIds,
    pods: [],
    gateway: null,
    children,
    async killPod(podId) {
      const c = children.get(podId);
      if (!c) throw new Error(`no pod ${podId}`);
      await exit(c, "SIGKILL");
    },
    async stop() {
      await Promise.all([...children.entries()].filter(([k]) => k !== "gateway").map(([, c]) => exit(c, "SIGTERM")));
      await exit(gw, "SIGTERM");
    },
  };
}

/** The demo seed: one user and the demo transcription app. */
export function demoSeed(appPort: number, user = "demo@mentra.glass", pkg = "com.mentra.demo.transcribe", apiKey = "demo-api-key"): SeedFile {
  return {
    apps: [{ packageName: pkg, name: "Demo transcriber", publicUrl: `http://127.0.0.1:${appPort}`, hashedApiKey: hashApiKey(apiKey) }],
    users: [{ id: user, installedApps: [pkg] }],
  };
}
