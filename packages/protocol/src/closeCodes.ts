/**
 * WebSocket close codes used on both channels. 1000/1001 are terminal for 2.x apps (onStop);
 * 1008 stops SDK retries without onStop; anything else makes the SDK reconnect (protocol.md §1.5).
 */
export const CloseCode = {
  NORMAL: 1000,
  GOING_AWAY: 1001,
  POLICY_VIOLATION: 1008,
  MESSAGE_TOO_BIG: 1009,
  INTERNAL_ERROR: 1011,
  /** Phone: this socket was replaced by a newer one for the same user. */
  REPLACED: 4000,
  /** Phone: reconnect through the gateway (drain, wrong pod, lost ownership). */
  RECONNECT_VIA_GATEWAY: 4001,
  /** Phone/app: a frame could not be parsed too many times in a row. */
  MALFORMED: 4002,
} as const;
export type CloseCodeValue = (typeof CloseCode)[keyof typeof CloseCode];

export const CloseReason = {
  USER_SESSION_ENDED: "User session ended",
  APP_STOPPED: "App stopped",
  SERVER_SHUTTING_DOWN: "Server shutting down",
} as const;
