export * from "./types.ts";
export { MemoryPodRegistry, MemoryAssignmentStore } from "./memory.ts";
export { RedisPodRegistry, RedisAssignmentStore, redisClient, type RedisStoreOptions } from "./redis.ts";
export { admits, keeps, loadScore, pickPod, PlacementLedger, Router, type RouteDecision, type RouterOptions } from "./placement.ts";
