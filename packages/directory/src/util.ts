/** Helpers shared by every directory implementation (no store-specific code here). */
import { createHash, timingSafeEqual } from "node:crypto";
import type { AppRecord, AppType } from "./index.ts";

export function hashApiKey(apiKey: string): string {
  return createHash("sha256").update(apiKey, "utf8").digest("hex");
}

/** Constant-time comparison of a presented API key against the stored SHA-256 hex hash. */
export function verifyApiKey(apiKey: unknown, hashedApiKey: string): boolean {
  if (typeof apiKey !== "string" || apiKey.length === 0) return false;
  const given = createHash("sha256").update(apiKey, "utf8").digest();
  const stored = Buffer.from(hashedApiKey, "hex");
  return stored.length === given.length && timingSafeEqual(given, stored);
}

/** User ids are lower-cased e-mail addresses everywhere (the cloud's rule). */
export function normalizeUserId(userId: string): string {
  if (typeof userId !== "string" || userId.length === 0) throw new TypeError("userId must be a non-empty string");
  return userId.toLowerCase();
}

export function normalizePublicUrl(url: string): string {
  return url.replace(/\/+$/, "");
}

const APP_TYPES: ReadonlySet<string> = new Set(["standard", "background", "system"]);

/** A complete, normalized copy of an app record (trailing slashes off the URL, defaults filled in). */
export function normalizeApp(app: AppRecord): AppRecord {
  if (!app || typeof app.packageName !== "string" || !app.packageName) throw new TypeError("app.packageName must be a non-empty string");
  if (typeof app.hashedApiKey !== "string" || !/^[0-9a-f]{64}$/i.test(app.hashedApiKey)) {
    throw new TypeError(`app ${app.packageName}: hashedApiKey must be a SHA-256 hex digest`);
  }
  return {
    packageName: app.packageName,
    name: app.name || app.packageName,
    publicUrl: normalizePublicUrl(String(app.publicUrl ?? "")),
    hashedApiKey: app.hashedApiKey.toLowerCase(),
    type: APP_TYPES.has(app.type) ? app.type : ("standard" as AppType),
    permissions: [...(app.permissions ?? [])],
  };
}

export function copyApp(a: AppRecord): AppRecord {
  return { ...a, permissions: [...a.permissions] };
}

/** A deep-frozen app record: safe to hand out from a cache without copying. */
export function freezeApp(a: AppRecord): Readonly<AppRecord> {
  const c = copyApp(a);
  Object.freeze(c.permissions);
  return Object.freeze(c);
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
