/**
 * The seeding command: creates test users and apps in whichever store the environment selects
 * (MONGODB_URL → MongoDB, else REDIS_URL → Redis, else the embedded store, which lives only as long
 * as this process: use --out to write a DIRECTORY_SEED file for it instead).
 *
 *   npm run seed -- --users 500 --prefix loadtest --app com.x=http://127.0.0.1:7010=secret-key [--app …]
 *   npm run seed -- --file seed.json
 *
 * Options:
 *   --users N            generate N users <prefix>-<i>@<domain>, i = 0 … N-1, with every --app installed
 *   --prefix P           user id prefix (default loadtest)
 *   --domain D           user id domain (default example.com)
 *   --app pkg=url=key    create or update an app (the key is stored as its SHA-256 hash only)
 *   --running pkg[,pkg]  also put these packages in every generated user's running-app intent
 *   --file seed.json     a seed file ({"apps":[…],"users":[…]}); combined with the options above
 *   --out seed.json      also write the combined seed as a file (for DIRECTORY_SEED)
 *   --json               print the summary as one JSON line
 * App changes go out on the app-change bus, so running pods see them within a second.
 */
import { writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { directoryFromEnv, describeDirectoryEnv } from "./env.ts";
import { readSeedFile, seedAppRecord, type SeedFile } from "./index.ts";
import { buildSeed, parseAppArg, seedDirectory, type SeedSummary } from "./seeding.ts";

export interface SeedCliResult {
  store: string;
  bus: string;
  summary: SeedSummary;
}

export async function runSeedCli(argv: string[], env: NodeJS.ProcessEnv = process.env, out: (line: string) => void = console.log): Promise<SeedCliResult> {
  const { values } = parseArgs({
    args: argv,
    options: {
      users: { type: "string" },
      prefix: { type: "string", default: "loadtest" },
      domain: { type: "string", default: "example.com" },
      app: { type: "string", multiple: true, default: [] },
      running: { type: "string", multiple: true, default: [] },
      file: { type: "string" },
      out: { type: "string" },
      json: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  });
  if (values.help) {
    out("usage: npm run seed -- [--users N] [--prefix P] [--domain D] [--app pkg=url=apiKey …] [--running pkg,…] [--file seed.json] [--out seed.json] [--json]");
    return { store: "", bus: "", summary: { apps: [], users: 0, firstUser: null, lastUser: null, runningIntents: 0, settings: 0 } };
  }
  const users = values.users === undefined ? 0 : Number(values.users);
  if (!Number.isInteger(users) || users < 0) throw new Error(`--users must be a whole number >= 0, got ${values.users}`);
  const apps = values.app.map(parseAppArg);
  const running = values.running.flatMap((r) => r.split(",")).map((s) => s.trim()).filter(Boolean);
  const generated = buildSeed({ users, prefix: values.prefix, domain: values.domain, apps, running });
  const fromFile: SeedFile = values.file ? readSeedFile(values.file) : {};
  const seed: SeedFile = { apps: [...(fromFile.apps ?? []), ...(generated.apps ?? [])], users: [...(fromFile.users ?? []), ...(generated.users ?? [])] };
  if ((seed.apps?.length ?? 0) + (seed.users?.length ?? 0) === 0) throw new Error("nothing to seed: give --users, --app or --file (see --help)");

  const { DIRECTORY_SEED: _ignored, ...rest } = env;
  const where = describeDirectoryEnv(rest);
  const dir = directoryFromEnv(rest, { refreshMs: 0 });
  try {
    await withTimeout(dir.ready(), 15_000, `the ${where.store} directory did not become ready within 15 s`);
    const summary = await seedDirectory(dir, seed);
    // The file keeps key hashes only, never the plain keys given on the command line.
    if (values.out) writeFileSync(values.out, JSON.stringify({ apps: (seed.apps ?? []).map(seedAppRecord), users: seed.users ?? [] }, null, 2) + "\n");
    if (values.json) {
      out(JSON.stringify({ store: where.store, bus: where.bus, ...summary, ...(values.out ? { out: values.out } : {}) }));
    } else {
      out(`seeded the ${where.store} directory (app changes announced over the ${where.bus} bus)`);
      for (const a of summary.apps) out(`  app   ${a.packageName} → ${a.publicUrl}`);
      if (summary.users > 0) {
        out(`  users ${summary.users}: ${summary.firstUser}${summary.users > 1 ? ` … ${summary.lastUser}` : ""}`);
        if (summary.runningIntents) out(`  running-app intents ${summary.runningIntents}`);
        if (summary.settings) out(`  users with settings ${summary.settings}`);
      }
      if (values.out) out(`  wrote ${values.out} (usable as DIRECTORY_SEED)`);
      if (where.store === "embedded") out("  note: the embedded store lives only in this process; set REDIS_URL or MONGODB_URL, or use --out for DIRECTORY_SEED");
    }
    return { store: where.store, bus: where.bus, summary };
  } finally {
    await dir.close();
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([p, new Promise<never>((_, reject) => (t = setTimeout(() => reject(new Error(message)), ms)))]).finally(() => clearTimeout(t));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  runSeedCli(process.argv.slice(2)).then(
    () => process.exit(0),
    (err: Error) => {
      console.error(`seed: ${err.message}`);
      process.exit(1);
    },
  );
}
