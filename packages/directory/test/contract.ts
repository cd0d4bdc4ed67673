/**
 * The directory contract: one suite, run against every implementation (contract.test.ts).
 * Each target opens two writers ("pods") over one fresh, isolated store; everything one writes, the
 * other must see. App reads through a cache may lag a write on another pod by at most 1 s (the
 * cross-pod invalidation budget); user reads may not lag at all.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { hashApiKey, verifyApiKey, type AppRecord, type Directory } from "@mentra-cluster/directory";

export interface ContractPair {
  a: Directory;
  b: Directory;
  close(): Promise<void>;
}

export interface ContractTarget {
  name: string;
  /** A reason to skip (printed), or false. */
  skip: string | false;
  open(): Promise<ContractPair>;
}

/** Polls until fn is truthy; throws after `ms`. Returns the elapsed time. */
export async function within(ms: number, what: string, fn: () => Promise<boolean>): Promise<number> {
  const start = performance.now();
  for (;;) {
    if (await fn()) return performance.now() - start;
    if (performance.now() - start > ms) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

export function app(pkg: string, url: string, key: string, extra: Partial<AppRecord> = {}): AppRecord {
  return { packageName: pkg, name: pkg, publicUrl: url, hashedApiKey: hashApiKey(key), type: "standard", permissions: [], ...extra };
}

const sorted = (xs: string[]) => [...xs].sort();
let seq = 0;
const uid = (tag: string) => `${tag}-${process.pid}-${Date.now().toString(36)}-${seq++}@Example.COM`;

export function runDirectoryContract(target: ContractTarget): void {
  describe(`directory contract: ${target.name}`, { skip: target.skip }, () => {
    let pair: ContractPair;
    before(async () => {
      pair = await target.open();
      await Promise.all([pair.a.ready(), pair.b.ready()]);
    });
    after(async () => {
      await pair?.close();
    });

    test("a user is created on first sight with a lower-cased id, the same record for both pods", async () => {
      const { a, b } = pair;
      const id = uid("New");
      const u = await a.getOrCreateUser(id);
      assert.deepEqual(u, { id: id.toLowerCase(), installedApps: [], runningApps: [], settings: {} });
      assert.deepEqual(await b.getOrCreateUser(id.toUpperCase()), u);
      assert.deepEqual(await a.getOrCreateUser(id), u, "getOrCreateUser is idempotent");
    });

    test("apps: upsert, read, list, replace URL and key, delete; the other pod sees each within 1 s", async () => {
      const { a, b } = pair;
      const pkg = `com.contract.${process.pid}.${seq++}`;
      assert.equal(await a.getApp(pkg), null);
      await a.upsertApp(app(pkg, "http://127.0.0.1:7010///", "key-1", { name: "Contract", type: "background", permissions: ["MICROPHONE"] }));
      const want = { packageName: pkg, name: "Contract", publicUrl: "http://127.0.0.1:7010", hashedApiKey: hashApiKey("key-1"), type: "background", permissions: ["MICROPHONE"] };
      assert.deepEqual(await a.getApp(pkg), want, "trailing slashes are trimmed");
      await within(1000, "b sees the new app", async () => (await b.getApp(pkg))?.publicUrl === want.publicUrl);
      assert.deepEqual(await b.getApp(pkg), want);
      assert.ok((await b.listApps()).some((x) => x.packageName === pkg));
      assert.ok(verifyApiKey("key-1", (await b.getApp(pkg))!.hashedApiKey));
      assert.ok(!verifyApiKey("key-2", (await b.getApp(pkg))!.hashedApiKey));

      await b.upsertApp(app(pkg, "http://10.0.0.2:9000", "key-2"));
      const ms = await within(1000, "a sees the new URL and key", async () => {
        const r = await a.getApp(pkg);
        return r?.publicUrl === "http://10.0.0.2:9000" && verifyApiKey("key-2", r.hashedApiKey);
      });
      assert.ok(ms <= 1000);
      const replaced = await a.getApp(pkg);
      assert.deepEqual(replaced!.permissions, [], "an upsert replaces the whole record");
      assert.equal(replaced!.type, "standard");

      await a.deleteApp(pkg);
      assert.equal(await a.getApp(pkg), null);
      await within(1000, "b sees the delete", async () => (await b.getApp(pkg)) === null);
      assert.ok(!(await b.listApps()).some((x) => x.packageName === pkg));
    });

    test("records handed out cannot change the store", async () => {
      const { a } = pair;
      const pkg = `com.contract.copy.${seq++}`;
      await a.upsertApp(app(pkg, "http://h:1", "k"));
      const r = await a.getApp(pkg);
      try {
        r!.permissions.push("X");
        r!.publicUrl = "http://evil";
      } catch {
        // frozen records (the cache) refuse outright; copies (stores) accept and forget
      }
      assert.deepEqual((await a.getApp(pkg))!.permissions, []);
      assert.equal((await a.getApp(pkg))!.publicUrl, "http://h:1");
      const id = uid("copy");
      const u = await a.getOrCreateUser(id);
      u.runningApps.push("x");
      u.settings.x = 1;
      assert.deepEqual(await a.getOrCreateUser(id), { id: id.toLowerCase(), installedApps: [], runningApps: [], settings: {} });
    });

    test("an app record needs a SHA-256 hex key hash", async () => {
      await assert.rejects(pair.a.upsertApp({ ...app("com.bad", "http://h", "k"), hashedApiKey: "plain-key" }));
    });

    test("installed apps: idempotent adds, visible to the other pod at once", async () => {
      const { a, b } = pair;
      const id = uid("inst");
      await a.installApp(id, "com.one");
      await b.installApp(id, "com.one");
      await b.installApp(id.toUpperCase(), "com.two");
      assert.deepEqual(sorted((await a.getOrCreateUser(id)).installedApps), ["com.one", "com.two"]);
    });

    test("running-app intent: every pod sees it at once; only an explicit remove takes an entry out", async () => {
      const { a, b } = pair;
      const id = uid("intent");
      await a.addRunningApp(id, "com.x");
      await a.addRunningApp(id, "com.x");
      await a.addRunningApp(id, "com.y");
      // The user moves to pod b: b must know what was running, with no delay.
      assert.deepEqual(sorted((await b.getOrCreateUser(id)).runningApps), ["com.x", "com.y"]);
      await b.removeRunningApp(id, "com.x");
      await b.removeRunningApp(id, "com.never");
      assert.deepEqual((await a.getOrCreateUser(id)).runningApps, ["com.y"]);
      // Removing from a user never seen is harmless.
      await a.removeRunningApp(uid("ghost"), "com.x");
    });

    test("settings: a patch sets its keys atomically and leaves the others alone; JSON values round-trip", async () => {
      const { a, b } = pair;
      const id = uid("settings");
      await a.setUserSettings(id, { brightness: 50, language: "en-US" });
      await b.setUserSettings(id, { brightness: 70, nested: { a: [1, 2, { b: null }] }, flag: false, nothing: null });
      await a.setUserSettings(id, { "dotted.key": 1, $dollar: "x", "": "empty" });
      await a.setUserSettings(id, {});
      assert.deepEqual((await b.getOrCreateUser(id)).settings, {
        brightness: 70,
        language: "en-US",
        nested: { a: [1, 2, { b: null }] },
        flag: false,
        nothing: null,
        "dotted.key": 1,
        $dollar: "x",
        "": "empty",
      });
    });

    test("two pods, 50 parallel updates each to one user (settings, start, stop): zero lost updates", async () => {
      const { a, b } = pair;
      const id = uid("race");
      const writers = [a, b] as const;
      const N = 50;
      // What the user had running before: each writer will stop its own 50 of these.
      for (let w = 0; w < 2; w++) for (let i = 0; i < N; i++) await a.addRunningApp(id, `com.stop.w${w}.${i}`);
      await a.setUserSettings(id, { untouched: "yes" });
      await a.installApp(id, "com.pre");

      const ops: Promise<void>[] = [];
      for (let i = 0; i < N; i++) {
        for (let w = 0; w < 2; w++) {
          const d = writers[w]!;
          ops.push(d.setUserSettings(id, { [`w${w}_k${i}`]: i, [`shared_${i}`]: w }));
          ops.push(d.addRunningApp(id, `com.start.w${w}.${i}`));
          ops.push(d.removeRunningApp(id, `com.stop.w${w}.${i}`));
          ops.push(d.installApp(id, `com.inst.w${w}.${i}`));
        }
      }
      await Promise.all(ops);

      const u = await b.getOrCreateUser(id);
      const wantRunning = [0, 1].flatMap((w) => Array.from({ length: N }, (_, i) => `com.start.w${w}.${i}`));
      const wantSettings = [0, 1].flatMap((w) => Array.from({ length: N }, (_, i) => `w${w}_k${i}`));
      const lost =
        wantRunning.filter((p) => !u.runningApps.includes(p)).length +
        u.runningApps.filter((p) => p.startsWith("com.stop.")).length +
        wantSettings.filter((k) => !(k in u.settings)).length +
        [0, 1].flatMap((w) => Array.from({ length: N }, (_, i) => `com.inst.w${w}.${i}`)).filter((p) => !u.installedApps.includes(p)).length;
      assert.equal(lost, 0, `lost updates: ${lost}`);
      assert.deepEqual(sorted(u.runningApps), sorted(wantRunning));
      assert.equal(u.settings.untouched, "yes");
      for (let w = 0; w < 2; w++) for (let i = 0; i < N; i++) assert.equal(u.settings[`w${w}_k${i}`], i);
      for (let i = 0; i < N; i++) assert.ok(u.settings[`shared_${i}`] === 0 || u.settings[`shared_${i}`] === 1);
      assert.equal(u.installedApps.length, 1 + 2 * N);
      // Both pods see the same final document.
      assert.deepEqual(
        { ...(await a.getOrCreateUser(id)), runningApps: sorted(u.runningApps), installedApps: sorted(u.installedApps) },
        { ...u, runningApps: sorted(u.runningApps), installedApps: sorted(u.installedApps) },
      );
    });
  });
}
