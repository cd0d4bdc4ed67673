/**
 * The gateway process of the load test's own cluster: apps/gateway/src/main.ts with the registry
 * snapshot interval given explicitly. (Gateway passes `snapshotIntervalMs: undefined` to its Router,
 * whose `{ snapshotIntervalMs: 1000, ...opts }` then re-reads Redis every ~1 ms: ~2,000 Redis
 * commands/s and about a third of a core at idle, which would be taken from the pods under test.
 * Once that is fixed, this file is just apps/gateway/src/main.ts.)
 */
import { Gateway, loadGatewayConfig } from "@mentra-cluster/gateway";
import { RedisAssignmentStore, RedisPodRegistry } from "@mentra-cluster/registry";

const config = loadGatewayConfig();
if (!config.redisUrl) {
  console.error("gateway: REDIS_URL is required");
  process.exit(2);
}
const gw = new Gateway(config, {
  registry: new RedisPodRegistry({ url: config.redisUrl, prefix: config.redisPrefix }),
  assignments: new RedisAssignmentStore({ url: config.redisUrl, prefix: config.redisPrefix }),
  snapshotIntervalMs: Number(process.env.GATEWAY_SNAPSHOT_INTERVAL_MS ?? 1000) || 1000,
});
await gw.start();
const stop = () => void gw.stop().then(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
