/**
 * The real mini app (apps/loadtest-app: the published @mentra/sdk AppServer) as a child process for
 * the load test's sample of real-SDK users. Reads its "@@EVENT {json}" lines: sessions, transcripts
 * and their receive times, so the driver can time app → phone for those users too.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { REPO_ROOT } from "./cluster.ts";
import { spawnChild, type Child } from "./proc.ts";
import type { Feature } from "./types.ts";

export interface SdkAppProcess {
  publicUrl: string;
  pid: number;
  sessions: Set<string>;
  transcripts: number;
  errors: number;
  /** When the app received a transcript with this text, per user (recent ones only). */
  receivedAt(userId: string, text: string, before: number): number | null;
  stop(): Promise<void>;
  child: Child;
}

export async function startSdkApp(o: { packageName: string; apiKey: string; features: Feature[] }): Promise<SdkAppProcess> {
  // The SDK calls dotenv.config(): run it from an empty folder.
  const cwd = mkdtempSync(path.join(tmpdir(), "loadtest-sdk-app-"));
  const sessions = new Set<string>();
  const recent = new Map<string, { text: string; t: number }[]>();
  const state = { transcripts: 0, errors: 0 };
  const features = o.features.filter((f) => f === "transcription" || f === "display" || f === "audio");
  const { child, readyLine } = await spawnChild("sdk-app", process.execPath, [path.join(REPO_ROOT, "apps/loadtest-app/src/app.mjs")], {
    cwd,
    env: { ...process.env, PKG: o.packageName, API_KEY: o.apiKey, PORT: "0", FEATURES: features.join(","), ECHO_PREFIX: "", NODE_ENV: "development" },
    ready: (l) => l.includes("@@EVENT ") && l.includes('"event":"listening"'),
    timeoutMs: 30_000,
    onLine: (l) => {
      const i = l.indexOf("@@EVENT ");
      if (i < 0) return;
      let e: { event?: string; userId?: string; sessionId?: string; text?: string; t?: number };
      try {
        e = JSON.parse(l.slice(i + 8));
      } catch {
        return;
      }
      if (e.event === "session" && e.sessionId) sessions.add(e.sessionId);
      else if (e.event === "stop" && e.sessionId) sessions.delete(e.sessionId);
      else if (e.event === "error") state.errors++;
      else if (e.event === "transcription" && e.userId && typeof e.text === "string") {
        state.transcripts++;
        const list = recent.get(e.userId) ?? [];
        list.push({ text: e.text, t: e.t ?? Date.now() });
        if (list.length > 64) list.shift();
        recent.set(e.userId, list);
      }
    },
  });
  const ev = JSON.parse(readyLine.slice(readyLine.indexOf("@@EVENT ") + 8)) as { port: number };
  return {
    publicUrl: `http://127.0.0.1:${ev.port}`,
    pid: child.pid,
    sessions,
    get transcripts() {
      return state.transcripts;
    },
    get errors() {
      return state.errors;
    },
    receivedAt(userId, text, before) {
      const list = recent.get(userId);
      if (!list) return null;
      for (let i = list.length - 1; i >= 0; i--) if (list[i]!.text === text && list[i]!.t <= before) return list[i]!.t;
      return null;
    },
    async stop() {
      await child.stop("SIGTERM", 5000);
      rmSync(cwd, { recursive: true, force: true });
    },
    child,
  };
}
