import type { WebSocket } from "ws";

/** Sends JSON if the socket is open; returns whether it was sent. */
export function sendJson(ws: WebSocket | null | undefined, msg: unknown): boolean {
  if (!ws || ws.readyState !== 1) return false;
  let text: string;
  try {
    text = JSON.stringify(msg);
  } catch {
    // A client-supplied value that cannot be serialised: not sent (frames are depth-checked on arrival).
    return false;
  }
  ws.send(text);
  return true;
}

/** Largest nesting depth accepted in a client frame; deeper frames are refused as malformed. */
export const MAX_JSON_DEPTH = 32;

/** Depth of a parsed JSON value, stopping early past the limit. */
export function jsonDepth(v: unknown, limit = MAX_JSON_DEPTH, d = 0): number {
  if (d > limit || v === null || typeof v !== "object") return d;
  let max = d + 1;
  for (const k in v as Record<string, unknown>) {
    max = Math.max(max, jsonDepth((v as Record<string, unknown>)[k], limit, d + 1));
    if (max > limit) return max;
  }
  return max;
}

export function safeClose(ws: WebSocket | null | undefined, code: number, reason: string): void {
  if (!ws || ws.readyState >= 2) return;
  try {
    ws.close(code, reason);
  } catch {
    ws.terminate();
  }
}
