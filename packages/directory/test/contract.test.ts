/**
 * The directory contract against every implementation available here: the embedded store, Redis
 * (two ioredis connections as the two pods), the cache over each (two caches as two pods), and
 * MongoDB when MONGODB_URL is set (see packages/directory/README.md).
 */
import { randomUUID } from "node:crypto";
import { after, before } from "node:test";
import {
  CachedDirectory,
  EmbeddedDirectory,
  InProcessAppChangeBus,
  MongoDirectory,
  RedisAppChangeBus,
  RedisDirectory,
} from "@mentra-cluster/directory";
import { startRedis, type RedisHandle } from "../../../test/helpers/redis.ts";
import { runDirectoryContract } from "./contract.ts";

let redis: RedisHandle;
before(async () => {
  redis = await startRedis();
});
after(async () => {
  await redis?.stop();
});

runDirectoryContract({
  name: "embedded (one store, two callers)",
  skip: false,
  async open() {
    const store = new EmbeddedDirectory();
    return { a: store, b: store, close: () => store.close() };
  },
});

runDirectoryContract({
  name: "redis (two connections)",
  skip: false,
  async open() {
    const prefix = `mentra:test:${randomUUID()}:dir:`;
    const a = new RedisDirectory({ url: redis.url, prefix });
    const b = new RedisDirectory({ url: redis.url, prefix });
    return { a, b, close: async () => void (await Promise.all([a.close(), b.close()])) };
  },
});

runDirectoryContract({
  name: "cache over embedded (two caches, in-process bus)",
  skip: false,
  async open() {
    const store = new EmbeddedDirectory();
    const bus = new InProcessAppChangeBus();
    const a = new CachedDirectory(store, { bus, ownsBus: false, ownsStore: false, refreshMs: 0 });
    const b = new CachedDirectory(store, { bus, ownsBus: false, ownsStore: false, refreshMs: 0 });
    return { a, b, close: async () => void (await Promise.all([a.close(), b.close(), bus.close()])) };
  },
});

runDirectoryContract({
  name: "cache over redis (two caches, two connections each, redis pub/sub)",
  skip: false,
  async open() {
    const prefix = `mentra:test:${randomUUID()}:dir:`;
    const mk = () =>
      new CachedDirectory(new RedisDirectory({ url: redis.url, prefix }), {
        bus: new RedisAppChangeBus({ url: redis.url, channel: `${prefix}app-changes` }),
        refreshMs: 0,
      });
    const a = mk();
    const b = mk();
    return { a, b, close: async () => void (await Promise.all([a.close(), b.close()])) };
  },
});

const MONGO_SKIP =
  "MONGODB_URL is not set: the MongoDB contract was not run (MongoDB is not installed here; see packages/directory/README.md to run it)";
if (!process.env.MONGODB_URL) console.log(`# ${MONGO_SKIP}`);

for (const cached of [false, true]) {
  runDirectoryContract({
    name: cached ? "cache over mongodb (two caches, two clients)" : "mongodb (two clients)",
    skip: process.env.MONGODB_URL ? false : MONGO_SKIP,
    async open() {
      const dbName = `mentra_contract_${Date.now()}_${Math.floor(Math.random() * 1e6)}`;
      const url = process.env.MONGODB_URL!;
      const ma = new MongoDirectory({ url, dbName });
      const mb = new MongoDirectory({ url, dbName });
      const bus = new InProcessAppChangeBus();
      const a = cached ? new CachedDirectory(ma, { bus, ownsBus: false, refreshMs: 0 }) : ma;
      const b = cached ? new CachedDirectory(mb, { bus, ownsBus: false, refreshMs: 0 }) : mb;
      return {
        a,
        b,
        async close() {
          await ma.ready().then(() => ma.db.dropDatabase()).catch(() => undefined);
          await Promise.all([a.close(), b.close()]);
        },
      };
    },
  });
}
