/**
 * Core tokens: JWT HS256 with an `email` claim; user id = lower-cased email (protocol.md §2.1).
 * Implemented on node:crypto to keep the dependency list short; only HS256 is accepted.
 */
import { createHmac, timingSafeEqual } from "node:crypto";

const b64url = (buf: Buffer | string) => Buffer.from(buf).toString("base64url");

export interface CoreTokenClaims {
  sub?: string;
  email?: string;
  organizations?: string[];
  defaultOrg?: string;
  iat?: number;
  exp?: number;
  [k: string]: unknown;
}

export function signCoreToken(claims: CoreTokenClaims, secret: string): string {
  const header = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64url(JSON.stringify({ iat: Math.floor(Date.now() / 1000), ...claims }));
  const sig = createHmac("sha256", secret).update(`${header}.${body}`).digest("base64url");
  return `${header}.${body}.${sig}`;
}

export function mintUserToken(email: string, secret: string): string {
  return signCoreToken({ sub: email, email, organizations: [], defaultOrg: "" }, secret);
}

export type TokenResult =
  | { ok: true; userId: string; claims: CoreTokenClaims }
  | { ok: false; reason: "missing" | "invalid" | "no_user_id" };

export function verifyCoreToken(token: string | undefined | null, secret: string, nowMs = Date.now()): TokenResult {
  if (!token) return { ok: false, reason: "missing" };
  const parts = token.split(".");
  if (parts.length !== 3) return { ok: false, reason: "invalid" };
  const [h, b, s] = parts as [string, string, string];
  let header: { alg?: string };
  let claims: CoreTokenClaims;
  try {
    header = JSON.parse(Buffer.from(h, "base64url").toString("utf8"));
    claims = JSON.parse(Buffer.from(b, "base64url").toString("utf8"));
  } catch {
    return { ok: false, reason: "invalid" };
  }
  if (!header || header.alg !== "HS256" || !claims || typeof claims !== "object") return { ok: false, reason: "invalid" };
  // Compared as canonical base64url text: decoding first would accept non-canonical spellings of
  // the same signature (trailing "=", ignored characters, unused low bits in the last character).
  const expected = Buffer.from(createHmac("sha256", secret).update(`${h}.${b}`).digest("base64url"), "ascii");
  const given = Buffer.from(s, "utf8");
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return { ok: false, reason: "invalid" };
  if (typeof claims.exp === "number" && claims.exp * 1000 < nowMs) return { ok: false, reason: "invalid" };
  if (typeof claims.email !== "string" || claims.email.trim() === "") return { ok: false, reason: "no_user_id" };
  return { ok: true, userId: claims.email.trim().toLowerCase(), claims };
}

/** Header wins over the query parameter. */
export function extractToken(authorization: string | undefined, queryToken: unknown): string | undefined {
  if (authorization && /^Bearer\s+/i.test(authorization)) return authorization.replace(/^Bearer\s+/i, "").trim() || undefined;
  return typeof queryToken === "string" && queryToken ? queryToken : undefined;
}
