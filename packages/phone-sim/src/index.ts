export {
  PhoneSim,
  UpgradeRefusedError,
  ClosedBeforeAckError,
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_UDP_REGISTER_TIMEOUT_MS,
  DEFAULT_WAIT_FOR_TIMEOUT_MS,
  DEFAULT_GLASSES_MODEL,
  UDP_PING_COUNT,
  UDP_PING_INTERVAL_MS,
  UDP_REGISTER_RETRY_MS,
  type PhoneSimOptions,
  type PhoneSimEvents,
  type PhoneSimStats,
  type StreamOptions,
  type StreamResult,
  type AudioStream,
  type CloseRecord,
  type RestResponse,
} from "./phoneSim.ts";
export { backoffDelay, DEFAULT_BACKOFF, type BackoffOptions } from "./backoff.ts";
export { pcmChunker } from "./pcmChunker.ts";
export { AppSim, type AppSimOptions, type AppSimSession } from "./appSim.ts";
export { route, gatewayResolver, RouteError, type RouteAnswer } from "./gateway.ts";
