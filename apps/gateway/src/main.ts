/** The gateway process. A separate gateway needs REDIS_URL (the registry it shares with the pods). */
import { RedisAssignmentStore, RedisPodRegistry } from "@mentra-cluster/registry";
import { loadGatewayConfig } from "./config.ts";
import { Gateway } from "./server.ts";

const config = loadGatewayConfig();
if (!config.redisUrl) {
  console.error("gateway: REDIS_URL is required for a separate gateway process (use `npm start` for a one-process local cluster)");
  process.exit(2);
}
const registry = new RedisPodRegistry({ url: config.redisUrl, prefix: config.redisPrefix });
const assignments = new RedisAssignmentStore({ url: config.redisUrl, prefix: config.redisPrefix });
const gw = new Gateway(config, { registry, assignments });
await gw.start();
const stop = () =>
  void gw
    .stop()
    .then(() => Promise.all([registry.close(), assignments.close()]))
    .then(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
