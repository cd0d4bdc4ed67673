export { Gateway, type GatewayDeps } from "./server.ts";
export { loadGatewayConfig, type GatewayConfig } from "./config.ts";
