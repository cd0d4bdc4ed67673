export * from "./localCluster.ts";
