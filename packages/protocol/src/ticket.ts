/**
 * Route tickets: the gateway's short-lived, signed statement "user U belongs on pod P at epoch E
 * until T". Pods verify them on /glasses-ws; HMAC-SHA256 with a key shared by gateway and pods.
 */
import { createHmac, timingSafeEqual } from "node:crypto";

export interface RouteTicket {
  userId: string;
  podId: string;
  epoch: number;
  /** Epoch ms. */
  expiresAt: number;
}

export function signRouteTicket(t: RouteTicket, key: string): string {
  const body = Buffer.from(JSON.stringify({ u: t.userId, p: t.podId, e: t.epoch, x: t.expiresAt })).toString("base64url");
  const sig = createHmac("sha256", key).update(body).digest("base64url");
  return `${body}.${sig}`;
}

export type TicketCheck =
  | { ok: true; ticket: RouteTicket }
  | { ok: false; reason: "malformed" | "bad_signature" | "expired" | "wrong_user" | "wrong_pod" };

export function verifyRouteTicket(token: string, key: string, expect: { userId: string; podId: string; now: number }): TicketCheck {
  const dot = token.indexOf(".");
  if (dot <= 0) return { ok: false, reason: "malformed" };
  const body = token.slice(0, dot);
  const given = Buffer.from(token.slice(dot + 1), "base64url");
  const want = createHmac("sha256", key).update(body).digest();
  if (given.length !== want.length || !timingSafeEqual(given, want)) return { ok: false, reason: "bad_signature" };
  let raw: { u?: unknown; p?: unknown; e?: unknown; x?: unknown };
  try {
    raw = JSON.parse(Buffer.from(body, "base64url").toString("utf8"));
  } catch {
    return { ok: false, reason: "malformed" };
  }
  if (typeof raw.u !== "string" || typeof raw.p !== "string" || typeof raw.e !== "number" || typeof raw.x !== "number") return { ok: false, reason: "malformed" };
  const ticket: RouteTicket = { userId: raw.u, podId: raw.p, epoch: raw.e, expiresAt: raw.x };
  if (ticket.expiresAt < expect.now) return { ok: false, reason: "expired" };
  if (ticket.userId !== expect.userId) return { ok: false, reason: "wrong_user" };
  if (ticket.podId !== expect.podId) return { ok: false, reason: "wrong_pod" };
  return { ok: true, ticket };
}
