import type { WebSocket } from "ws";

/** Sends JSON if the socket is open; returns whether it was sent. */
export function sendJson(ws: WebSocket | null | undefined, msg: unknown): boolean {
  if (!ws || ws.readyState !== 1) return false;
  ws.send(JSON.stringify(msg));
  return true;
}

export function safeClose(ws: WebSocket | null | undefined, code: number, reason: string): void {
  if (!ws || ws.readyState >= 2) return;
  try {
    ws.close(code, reason);
  } catch {
    ws.terminate();
  }
}
