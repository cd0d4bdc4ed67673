/** Errors a client can cause, each with a code and an HTTP status (one catalogue, like fastify's FST_ERR_*). */
export const PodError = {
  NO_TOKEN: { status: 401, message: "No core token provided" },
  INVALID_TOKEN: { status: 401, message: "Invalid core token" },
  NO_USER_ID: { status: 401, message: "Invalid core token - no user ID" },
  NO_ACTIVE_SESSION: { status: 503, message: "No active session for this user on this pod; connect /glasses-ws first" },
  APP_NOT_FOUND: { status: 404, message: "App is not registered" },
  TIMEOUT: { status: 504, message: "App did not connect in time" },
  WEBHOOK_FAILED: { status: 502, message: "App webhook failed" },
  SESSION_ENDED: { status: 409, message: "User session ended while starting the app" },
  STOPPED: { status: 409, message: "App was stopped while starting" },
  UNSUPPORTED_FORMAT: { status: 422, message: "LC3 decoding is not available on this pod yet; configure format \"pcm\" (s16le, 16 kHz, mono)" },
  INVALID_REQUEST: { status: 400, message: "Invalid request body" },
  NOT_FOUND: { status: 404, message: "No such route" },
  METHOD_NOT_ALLOWED: { status: 405, message: "Method not allowed" },
  UNAUTHORIZED: { status: 401, message: "Missing or wrong admin token" },
  SHUTTING_DOWN: { status: 503, message: "Server is shutting down" },
  INTERNAL: { status: 500, message: "Internal error" },
} as const;
export type PodErrorCode = keyof typeof PodError;

export function errorBody(code: PodErrorCode, message?: string) {
  return { success: false, error: code.toLowerCase(), message: message ?? PodError[code].message };
}
