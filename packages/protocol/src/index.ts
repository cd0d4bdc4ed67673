export * from "./messages.ts";
export * from "./udp.ts";
export * from "./closeCodes.ts";
export * from "./token.ts";
export * from "./wav.ts";
export * from "./ticket.ts";
