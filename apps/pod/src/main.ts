/**
 * The pod process: configuration from the environment, the embedded directory (DIRECTORY_SEED),
 * JSON logs through a bounded sink, process-level fault counters, and SIGTERM/SIGINT handling.
 */
import pino from "pino";
import { describeDirectoryEnv, directoryFromEnv, type Directory } from "@mentra-cluster/directory";
import { PodMetrics } from "@mentra-cluster/metrics";
import { loadConfig, type PodConfig } from "./config.ts";
import { createPod, type Pod, type PodDeps } from "./server.ts";
import { BoundedLogSink } from "./util/logSink.ts";
import { streamProviderFromEnv } from "./transcription/stream.ts";
import { RedisAssignmentStore, RedisPodRegistry } from "@mentra-cluster/registry";

export interface RunningPod {
  pod: Pod;
  shutdown(code?: number): Promise<void>;
}

export async function runPod(config: PodConfig = loadConfig(), deps: PodDeps & { directory?: Directory } = {}): Promise<RunningPod> {
  const sink = new BoundedLogSink();
  const log = pino({ level: config.logLevel, base: { podId: config.podId }, redact: ["apiKey", "token", "authorization"] }, sink);
  const metrics = new PodMetrics({
    podId: config.podId,
    region: config.region,
    version: config.version,
    lagSampleIntervalMs: config.lagSampleIntervalMs,
    enabled: config.metricsEnabled,
    onLagWarning: (lagMs) => log.warn({ lagMs }, "event loop lag above 100 ms"),
  });
  sink.onDrop = (n) => metrics.logLineDropped(n);
  // MONGODB_URL → MongoDB, else REDIS_URL → Redis, else embedded (DIRECTORY_SEED); always behind the app cache.
  const dirEnv = { ...process.env, DIRECTORY_SEED: config.directorySeed ?? undefined, REDIS_URL: config.redisUrl ?? undefined, REDIS_PREFIX: config.redisPrefix };
  const directory =
    deps.directory ??
    directoryFromEnv(dirEnv, { onError: (err, what) => log.warn({ err: err instanceof Error ? err.message : String(err), what }, "directory") });
  log.info(describeDirectoryEnv(dirEnv), "directory");
  // REDIS_URL: join the cluster through Redis (registry + assignments) unless one was injected.
  const cluster =
    deps.cluster ??
    (config.redisUrl
      ? {
          registry: new RedisPodRegistry({ url: config.redisUrl, prefix: config.redisPrefix }),
          assignments: new RedisAssignmentStore({ url: config.redisUrl, prefix: config.redisPrefix }),
        }
      : undefined);
  // TRANSCRIPTION_PROVIDER=stream: one WebSocket per transcribing stream to STT_URL; else in-process energy.
  // Drops and failed connects are retried inside the provider; each still counts as a provider error.
  // An STT outage makes every stream report at once: one log line a second pod-wide, with how many
  // were folded into it (all of them are counted in the metric).
  let lastSttWarn = 0;
  let sttWarnsFolded = 0;
  const transcription =
    deps.transcription ??
    streamProviderFromEnv(process.env, {
      onTransientError: (err) => {
        metrics.transcriptionError("stream");
        const now = Date.now();
        if (now - lastSttWarn < 1000) return void sttWarnsFolded++;
        log.warn({ err: err.message, alsoSinceLastLine: sttWarnsFolded }, "transcription stream: transient error, reconnecting");
        lastSttWarn = now;
        sttWarnsFolded = 0;
      },
      // Audio the STT socket could not take (backlogged, or too long disconnected): counted, not logged per chunk.
      onAudioDropped: (reason) => metrics.droppedMessage("transcription", reason),
    }) ??
    undefined;
  // Host only: a vendor URL may carry credentials in its query string.
  if (transcription) log.info({ provider: transcription.name, host: safeHost(process.env.STT_URL) }, "transcription provider");
  let shutdown: (code?: number) => Promise<void> = async () => undefined;
  const pod = createPod(config, { ...deps, logger: log, metrics, directory, cluster, transcription, onDrained: () => void shutdown(0) });

  // Errors we cause are bugs: counted and logged, and the process keeps serving other users.
  process.on("unhandledRejection", (reason) => {
    metrics.unhandledRejection();
    log.error({ err: reason instanceof Error ? reason.message : String(reason) }, "unhandled rejection");
  });
  process.on("uncaughtException", (err) => {
    metrics.uncaughtException();
    log.error({ err: err.message, stack: err.stack }, "uncaught exception");
  });

  await pod.start();
  let stopping: Promise<void> | null = null;
  shutdown = (code = 0) =>
    (stopping ??= (async () => {
      log.info("shutting down");
      await pod.stop();
      if (!deps.directory) await directory.close().catch(() => undefined);
      await new Promise((r) => setTimeout(r, 50));
      process.exit(code);
    })());
  // SIGTERM drains (cluster mode) before exiting 0; a second SIGTERM shortens the deadline to 2 s.
  let terms = 0;
  process.on("SIGTERM", () => {
    terms++;
    if (terms > 1 && pod.drainer.active) {
      log.warn("second SIGTERM: drain deadline shortened");
      pod.drainer.shorten(2000);
      return;
    }
    if (!pod.ctx.cluster) return void shutdown(0);
    if (pod.drainer.active) return;
    void pod.drain({ deadlineMs: config.drainDeadlineMs, reason: "sigterm" }).then(() => shutdown(0));
  });
  process.on("SIGINT", () => void shutdown(0));
  return { pod, shutdown };
}

function safeHost(url: string | undefined): string | undefined {
  try {
    return url ? new URL(url).host : undefined;
  } catch {
    return undefined;
  }
}

/** Configuration and start-up errors: one clear line, exit 1 (no stack for a wrong setting). */
export function cannotStart(err: unknown): never {
  process.stderr.write(`pod: cannot start: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  await runPod().catch(cannotStart);
}
