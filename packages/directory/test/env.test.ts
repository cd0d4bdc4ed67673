/** directoryFromEnv: which store and bus the environment selects; the seeding command on each store. */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import {
  CachedDirectory,
  DelayedDirectory,
  RedisAppChangeBus,
  RedisDirectory,
  directoryFromEnv,
  seedUserId,
  verifyApiKey,
} from "@mentra-cluster/directory";
import { runSeedCli } from "../src/seed.ts";
import { startRedis, type RedisHandle } from "../../../test/helpers/redis.ts";
import { within } from "./contract.ts";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
let redis: RedisHandle;
let tmp: string;
before(async () => {
  redis = await startRedis();
  tmp = mkdtempSync(join(tmpdir(), "dir-env-"));
});
after(async () => {
  await redis?.stop();
  rmSync(tmp, { recursive: true, force: true });
});

test("no MONGODB_URL or REDIS_URL: the embedded store (with DIRECTORY_SEED), cached", async () => {
  const seedFile = join(tmp, "seed.json");
  writeFileSync(seedFile, JSON.stringify({ apps: [{ packageName: "com.seeded", publicUrl: "http://s:1/", apiKey: "k" }], users: [{ id: "A@B.C", runningApps: ["com.seeded"] }] }));
  const dir = directoryFromEnv({ DIRECTORY_SEED: seedFile });
  try {
    assert.ok(dir instanceof CachedDirectory);
    assert.equal(dir.kind, "cached:embedded");
    await dir.ready();
    assert.equal((await dir.getApp("com.seeded"))?.publicUrl, "http://s:1");
    assert.deepEqual((await dir.getOrCreateUser("a@b.c")).runningApps, ["com.seeded"]);
  } finally {
    await dir.close();
  }
});

test("MONGODB_URL selects MongoDB (even with REDIS_URL, which then carries the cache invalidations)", async () => {
  const dir = directoryFromEnv({ MONGODB_URL: "mongodb://127.0.0.1:1/mentra_x", REDIS_URL: redis.url });
  assert.equal(dir.kind, "cached:mongodb");
  assert.ok(dir.bus instanceof RedisAppChangeBus);
  await dir.close(); // never connected: nothing to wait for
});

test("REDIS_URL alone selects the Redis directory; DIRECTORY_LATENCY_MS and the refresh period apply", async () => {
  const prefix = `mentra:test:${randomUUID()}:dir:`;
  const dir = directoryFromEnv({ REDIS_URL: redis.url, DIRECTORY_REDIS_PREFIX: prefix, DIRECTORY_LATENCY_MS: "5", DIRECTORY_CACHE_REFRESH_MS: "0" });
  try {
    assert.equal(dir.kind, "cached:redis");
    assert.ok(dir.store instanceof DelayedDirectory);
    assert.ok(dir.bus instanceof RedisAppChangeBus);
    await dir.ready();
    await dir.addRunningApp("x@y.z", "com.a");
    const raw = new RedisDirectory({ url: redis.url, prefix });
    assert.deepEqual((await raw.getOrCreateUser("x@y.z")).runningApps, ["com.a"]);
    await raw.close();
  } finally {
    await dir.close();
  }
  assert.throws(() => directoryFromEnv({ DIRECTORY_CACHE_REFRESH_MS: "soon" }), /DIRECTORY_CACHE_REFRESH_MS/);
  // Without DIRECTORY_REDIS_PREFIX the directory lives under the cluster's REDIS_PREFIX.
  const clusterPrefix = `mentra:test:${randomUUID()}:`;
  const under = directoryFromEnv({ REDIS_URL: redis.url, REDIS_PREFIX: clusterPrefix });
  try {
    await under.ready();
    await under.addRunningApp("p@q.r", "com.b");
    const raw = new RedisDirectory({ url: redis.url, prefix: `${clusterPrefix}dir:` });
    assert.deepEqual((await raw.getOrCreateUser("p@q.r")).runningApps, ["com.b"]);
    await raw.close();
  } finally {
    await under.close();
  }
});

test("a shared store gets DIRECTORY_SEED's apps and installs at warm-up, but never its running-app intent", async () => {
  const prefix = `mentra:test:${randomUUID()}:dir:`;
  const seedFile = join(tmp, "shared-seed.json");
  writeFileSync(seedFile, JSON.stringify({ apps: [{ packageName: "com.demo", publicUrl: "http://demo:7010", apiKey: "demo" }], users: [{ id: "demo@mentra.glass", installedApps: ["com.demo"], runningApps: ["com.demo"] }] }));
  const env = { REDIS_URL: redis.url, DIRECTORY_REDIS_PREFIX: prefix, DIRECTORY_SEED: seedFile };
  const pod1 = directoryFromEnv(env);
  const pod2 = directoryFromEnv(env);
  try {
    await Promise.all([pod1.ready(), pod2.ready()]);
    assert.ok(verifyApiKey("demo", (await pod2.getApp("com.demo"))!.hashedApiKey));
    const u = await pod1.getOrCreateUser("demo@mentra.glass");
    assert.deepEqual(u.installedApps, ["com.demo"]);
    assert.deepEqual(u.runningApps, []);
  } finally {
    await Promise.all([pod1.close(), pod2.close()]);
  }
});

test("seeding command: users and apps in the Redis store; a running pod's cache sees the new app within a second", async () => {
  const prefix = `mentra:test:${randomUUID()}:dir:`;
  const env = { REDIS_URL: redis.url, DIRECTORY_REDIS_PREFIX: prefix };
  const pod = directoryFromEnv(env, { refreshMs: 0 });
  await pod.ready();
  const lines: string[] = [];
  const out = join(tmp, "out.json");
  const t0 = performance.now();
  const r = await runSeedCli(
    ["--users", "25", "--prefix", "loadtest", "--app", "com.lt.one=http://127.0.0.1:7010/path?a=b=key-one", "--app", "com.lt.two=http://127.0.0.1:7011=key-two", "--running", "com.lt.one", "--out", out],
    env,
    (l) => lines.push(l),
  );
  try {
    assert.equal(r.store, "redis");
    assert.equal(r.summary.users, 25);
    assert.match(lines.join("\n"), /seeded the redis directory/);
    assert.match(lines.join("\n"), /loadtest-0@example\.com … loadtest-24@example\.com/);
    const seen = await within(1000, "pod cache has the seeded app", async () => pod.peekApp("com.lt.two")?.publicUrl === "http://127.0.0.1:7011");
    console.log(`# seeded app visible to a running pod ${seen.toFixed(0)} ms after the command returned (${(performance.now() - t0).toFixed(0)} ms in all)`);
    const one = await pod.getApp("com.lt.one");
    assert.equal(one?.publicUrl, "http://127.0.0.1:7010/path?a=b");
    assert.ok(verifyApiKey("key-one", one!.hashedApiKey));
    const u = await pod.getOrCreateUser(seedUserId("loadtest", 24));
    assert.deepEqual(u.installedApps.sort(), ["com.lt.one", "com.lt.two"]);
    assert.deepEqual(u.runningApps, ["com.lt.one"]);
    const written = JSON.parse(readFileSync(out, "utf8"));
    assert.equal(written.users.length, 25);
    assert.ok(!readFileSync(out, "utf8").includes("key-one"), "the --out file holds key hashes only");
    assert.ok(verifyApiKey("key-one", written.apps[0].hashedApiKey));
    assert.ok(!JSON.stringify(await pod.listApps()).includes("key-one"), "plain keys are never stored");
  } finally {
    await pod.close();
  }
});

test("seeding command as a process: `npm run seed` entry point, --file, --json", async () => {
  const prefix = `mentra:test:${randomUUID()}:dir:`;
  const file = join(tmp, "cli-seed.json");
  writeFileSync(file, JSON.stringify({ apps: [{ packageName: "com.file", publicUrl: "http://f:1", apiKey: "fk" }], users: [{ id: "File@Example.com", settings: { theme: "dark" } }] }));
  const { stdout } = await promisify(execFile)(process.execPath, ["--import", "tsx", "packages/directory/src/seed.ts", "--file", file, "--users", "3", "--app", "com.cli=http://c:2=ck", "--json"], {
    cwd: ROOT,
    env: { ...process.env, REDIS_URL: redis.url, DIRECTORY_REDIS_PREFIX: prefix, MONGODB_URL: "" },
    timeout: 20_000,
  });
  const summary = JSON.parse(stdout.trim().split("\n").pop()!);
  assert.equal(summary.store, "redis");
  assert.equal(summary.users, 4);
  assert.deepEqual(summary.apps.map((a: { packageName: string }) => a.packageName), ["com.file", "com.cli"]);
  const raw = new RedisDirectory({ url: redis.url, prefix });
  try {
    assert.deepEqual((await raw.getOrCreateUser("file@example.com")).settings, { theme: "dark" });
    assert.deepEqual((await raw.getOrCreateUser("loadtest-2@example.com")).installedApps, ["com.cli"]);
  } finally {
    await raw.close();
  }
  // Bad arguments fail clearly.
  await assert.rejects(
    promisify(execFile)(process.execPath, ["--import", "tsx", "packages/directory/src/seed.ts", "--app", "nonsense"], { cwd: ROOT, env: { ...process.env, REDIS_URL: "", MONGODB_URL: "" }, timeout: 20_000 }),
    (err: { stderr: string; code: number }) => err.code === 1 && /pkg=url=apiKey/.test(err.stderr),
  );
});
