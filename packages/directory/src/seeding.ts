/** Creating test users and apps in any Directory (the seeding command and DIRECTORY_SEED use this). */
import { seedAppRecord, type Directory, type SeedApp, type SeedFile } from "./index.ts";
import { normalizeUserId } from "./util.ts";

export interface SeedSummary {
  apps: { packageName: string; publicUrl: string }[];
  users: number;
  firstUser: string | null;
  lastUser: string | null;
  runningIntents: number;
  settings: number;
}

/**
 * Applies a seed with idempotent atomic operations only (upsertApp, installApp, addRunningApp,
 * setUserSettings): running it twice, or on several pods at once, gives the same result.
 */
export async function seedDirectory(dir: Directory, seed: SeedFile, opts: { concurrency?: number } = {}): Promise<SeedSummary> {
  const summary: SeedSummary = { apps: [], users: 0, firstUser: null, lastUser: null, runningIntents: 0, settings: 0 };
  for (const a of seed.apps ?? []) {
    const rec = seedAppRecord(a);
    await dir.upsertApp(rec);
    summary.apps.push({ packageName: rec.packageName, publicUrl: rec.publicUrl });
  }
  const users = seed.users ?? [];
  const concurrency = Math.max(1, opts.concurrency ?? 32);
  let next = 0;
  const worker = async () => {
    while (next < users.length) {
      const u = users[next++]!;
      const id = normalizeUserId(u.id);
      await dir.getOrCreateUser(id);
      for (const pkg of u.installedApps ?? []) await dir.installApp(id, pkg);
      for (const pkg of u.runningApps ?? []) {
        await dir.addRunningApp(id, pkg);
        summary.runningIntents++;
      }
      if (u.settings && Object.keys(u.settings).length > 0) {
        await dir.setUserSettings(id, u.settings);
        summary.settings++;
      }
      summary.users++;
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, users.length) }, worker));
  if (users.length > 0) {
    summary.firstUser = normalizeUserId(users[0]!.id);
    summary.lastUser = normalizeUserId(users[users.length - 1]!.id);
  }
  return summary;
}

export interface BuildSeedOptions {
  /** Number of generated users: `<prefix>-<i>@<domain>`, i from 0. */
  users?: number;
  prefix?: string;
  domain?: string;
  /** Apps to create; every generated user gets them installed. */
  apps?: SeedApp[];
  /** Packages every generated user has in its running-app intent. */
  running?: string[];
}

/** The user id the seeding command gives generated user `i`. */
export function seedUserId(prefix: string, i: number, domain = "example.com"): string {
  return `${prefix}-${i}@${domain}`.toLowerCase();
}

export function buildSeed(o: BuildSeedOptions): SeedFile {
  const prefix = o.prefix ?? "loadtest";
  const apps = o.apps ?? [];
  const installed = apps.map((a) => a.packageName);
  const running = o.running ?? [];
  return {
    apps,
    users: Array.from({ length: o.users ?? 0 }, (_, i) => ({
      id: seedUserId(prefix, i, o.domain),
      installedApps: [...new Set([...installed, ...running])],
      ...(running.length ? { runningApps: [...running] } : {}),
    })),
  };
}

/** Parses `pkg=url=apiKey` (the URL may itself contain `=`: the first and last `=` split). */
export function parseAppArg(arg: string): SeedApp {
  const first = arg.indexOf("=");
  const last = arg.lastIndexOf("=");
  if (first <= 0 || last === first || last === arg.length - 1) throw new Error(`--app expects pkg=url=apiKey, got ${JSON.stringify(arg)}`);
  const publicUrl = arg.slice(first + 1, last);
  if (!/^https?:\/\//.test(publicUrl)) throw new Error(`--app ${arg}: the URL must start with http:// or https://`);
  return { packageName: arg.slice(0, first), publicUrl, apiKey: arg.slice(last + 1) };
}
