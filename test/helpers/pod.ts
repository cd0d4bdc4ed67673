/** Starts a real session pod on free ports (HTTP port 0, UDP port 0) for a test. */
import pino from "pino";
import { EmbeddedDirectory, hashApiKey, type SeedFile } from "@mentra-cluster/directory";
import { mintUserToken } from "@mentra-cluster/protocol";
import { PhoneSim, type PhoneSimOptions } from "@mentra-cluster/phone-sim";
import { createPod, loadConfig, type Pod, type PodDeps, type PodConfig } from "@mentra-cluster/pod";

export const TEST_SECRET = "test-secret";
export const ADMIN_TOKEN = "test-admin-token";

export interface TestPod {
  pod: Pod;
  directory: EmbeddedDirectory;
  httpUrl: string;
  wsUrl: string;
  token(email: string): string;
  phone(email: string, opts?: Partial<PhoneSimOptions>): PhoneSim;
  close(): Promise<void>;
}

export async function startTestPod(
  opts: { seed?: SeedFile; deps?: PodDeps; config?: Partial<PodConfig>; podId?: string; logLevel?: string } = {},
): Promise<TestPod> {
  const directory = (opts.deps?.directory as EmbeddedDirectory | undefined) ?? new EmbeddedDirectory({ seed: opts.seed });
  const config = {
    ...loadConfig({ NODE_ENV: "test", POD_ID: opts.podId ?? "pod-test", PORT: "0", UDP_PORT: "0", JWT_SECRET: TEST_SECRET, ADMIN_TOKEN }),
    ...opts.config,
  };
  const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? opts.logLevel ?? "silent", base: { podId: config.podId } });
  const pod = createPod(config, { logger, ...opts.deps, directory });
  const addrs = await pod.start();
  const phones: PhoneSim[] = [];
  return {
    pod,
    directory,
    httpUrl: addrs.httpUrl,
    wsUrl: addrs.wsUrl,
    token: (email) => mintUserToken(email, TEST_SECRET),
    phone(email, po = {}) {
      const p = new PhoneSim({
        wsUrl: addrs.wsUrl,
        restBase: addrs.httpUrl,
        token: mintUserToken(email, TEST_SECRET),
        userId: email.toLowerCase(),
        ...po,
      });
      phones.push(p);
      return p;
    },
    async close() {
      await Promise.all(phones.map((p) => p.dispose().catch(() => undefined)));
      await pod.stop();
    },
  };
}

export function appSeed(pkg: string, publicUrl: string, apiKey: string, users: string[] = []): SeedFile {
  return {
    apps: [{ packageName: pkg, name: pkg, publicUrl, hashedApiKey: hashApiKey(apiKey) }],
    users: users.map((id) => ({ id, installedApps: [pkg] })),
  };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls until fn returns truthy or the timeout passes. */
export async function eventually<T>(fn: () => T | Promise<T>, timeoutMs = 5000, what = "condition"): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ""}`);
    await sleep(20);
  }
}
