// Mini MentraOS app built on the published @mentra/sdk 2.1.29 AppServer.
// Plain ESM JavaScript: run with `node apps/loadtest-app/src/app.mjs` (no tsx).
//
// Machine-readable output: every event is ONE stdout line "@@EVENT <json>\n" (see README.md).
// The SDK's own pino-pretty logs go to stdout as well (from a worker thread); parsers should
// look for "@@EVENT " anywhere in a line.
import http from "node:http";

// Never ship logs anywhere: the SDK reads this at import time.
delete process.env.BETTERSTACK_SOURCE_TOKEN;
delete process.env.BETTERSTACK_ENDPOINT;

const { AppServer } = await import("@mentra/sdk");

const PKG = process.env.PKG || "com.mentra.demo.transcribe";
const API_KEY = process.env.API_KEY || "demo-api-key";
const PORT = process.env.PORT === undefined || process.env.PORT === "" ? 7010 : Number(process.env.PORT);
const FEATURES = new Set(
  (process.env.FEATURES ?? "transcription,display")
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean),
);
const CLEAR_STATE_ON_STOP = process.env.CLEAR_STATE_ON_STOP === "1";
const ECHO_PREFIX = process.env.ECHO_PREFIX ?? "";
const AUDIO_EVENT_INTERVAL_MS = 1000;

if (!Number.isInteger(PORT) || PORT < 0 || PORT > 65535) {
  console.error(`invalid PORT ${process.env.PORT}`);
  process.exit(2);
}

/** Write one event line. process.stdout is synchronous for pipes/files on Linux, and each line is a
 *  single write (< PIPE_BUF for normal payloads), so it is never split by the logger's writes. */
function emit(event, fields = {}) {
  const line = "@@EVENT " + JSON.stringify({ event, ...fields, t: Date.now() }) + "\n";
  process.stdout.write(line);
}

function errMessage(err) {
  if (err instanceof Error) return err.message;
  if (typeof err === "string") return err;
  try {
    return JSON.stringify(err);
  } catch {
    return String(err);
  }
}

/** Per-user app state, like a typical app keeps it (keyed by userId, NOT by sessionId). With
 *  CLEAR_STATE_ON_STOP=1 onStop deletes the entry unconditionally, so a stale stop for an old
 *  session of the same user wipes the state of the user's current session. */
const userState = new Map(); // userId -> { sessionId, transcripts, startedAt }

/** Audio byte counters per session. */
const audio = new Map(); // sessionId -> { bytes, chunks, lastEmit, timer }

function audioFlush(sessionId) {
  const a = audio.get(sessionId);
  if (!a) return;
  if (a.timer) {
    clearTimeout(a.timer);
    a.timer = null;
  }
  a.lastEmit = Date.now();
  emit("audio", { sessionId, bytes: a.bytes, chunks: a.chunks });
}

function audioAdd(sessionId, n) {
  let a = audio.get(sessionId);
  if (!a) {
    a = { bytes: 0, chunks: 0, lastEmit: 0, timer: null };
    audio.set(sessionId, a);
  }
  a.bytes += n;
  a.chunks += 1;
  const since = Date.now() - a.lastEmit;
  if (since >= AUDIO_EVENT_INTERVAL_MS) {
    audioFlush(sessionId);
  } else if (!a.timer) {
    // trailing report so the final total always shows up (still <= 1 event/s/session)
    a.timer = setTimeout(() => audioFlush(sessionId), AUDIO_EVENT_INTERVAL_MS - since);
    a.timer.unref();
  }
}

class LoadtestApp extends AppServer {
  async onSession(session, sessionId, userId) {
    userState.set(userId, { sessionId, transcripts: 0, startedAt: Date.now() });

    if (FEATURES.has("transcription")) {
      session.events.onTranscription((data) => {
        const text = typeof data?.text === "string" ? data.text : "";
        emit("transcription", { sessionId, userId, text, isFinal: data?.isFinal === true });
        const st = userState.get(userId);
        if (CLEAR_STATE_ON_STOP && !st) {
          // What a real app with per-user state would do: it is broken for this user now.
          emit("state_missing", { sessionId, userId, text });
          return;
        }
        if (st) st.transcripts += 1;
        if (FEATURES.has("display")) {
          try {
            session.layouts.showTextWall(ECHO_PREFIX + text);
          } catch (err) {
            emit("error", { sessionId, userId, scope: "display", message: errMessage(err) });
          }
        }
      });
    }

    if (FEATURES.has("audio")) {
      session.events.onAudioChunk((chunk) => {
        const n = chunk?.arrayBuffer?.byteLength ?? 0;
        audioAdd(sessionId, n);
      });
    }

    session.events.onError((err) => {
      emit("error", { sessionId, userId, scope: "session", message: errMessage(err) });
    });
    session.events.onDisconnected((info) => {
      if (typeof info === "string") {
        emit("disconnected", { sessionId, userId, message: info });
      } else {
        emit("disconnected", {
          sessionId,
          userId,
          code: info?.code,
          reason: info?.reason ?? "",
          permanent: info?.permanent === true,
          sessionEnded: info?.sessionEnded === true,
        });
      }
    });
    // Registered after the first ack, so it only fires for reconnects.
    session.events.onConnected(() => emit("reconnected", { sessionId, userId }));

    emit("session", { sessionId, userId, features: [...FEATURES] });
  }

  async onStop(sessionId, userId, reason) {
    let clearedState = false;
    let clearedOtherSession = false;
    if (CLEAR_STATE_ON_STOP) {
      const st = userState.get(userId);
      if (st) {
        clearedState = true;
        clearedOtherSession = st.sessionId !== sessionId;
        userState.delete(userId);
      }
    }
    if (audio.has(sessionId)) {
      audioFlush(sessionId);
      audio.delete(sessionId);
    }
    emit("stop", { sessionId, userId, reason, clearedState, clearedOtherSession });
    await super.onStop(sessionId, userId, reason);
  }
}

const app = new LoadtestApp({ packageName: PKG, apiKey: API_KEY, port: PORT });

// AppServer.start() calls expressApp.listen() and drops the http.Server; capture it so we can
// report the real port (PORT=0 works) and fail loudly on EADDRINUSE instead of an uncaught 'error'.
let httpServer = null;
const expressApp = app.getExpressApp();
expressApp.listen = function listen(...args) {
  const server = http.createServer(expressApp);
  httpServer = server;
  server.on("error", (err) => {
    emit("fatal", { scope: "listen", code: err?.code, message: errMessage(err) });
    process.exit(3);
  });
  return server.listen(...args);
};

process.on("uncaughtException", (err) => {
  emit("error", { scope: "process", message: errMessage(err), stack: err?.stack });
  process.exit(1);
});
process.on("unhandledRejection", (err) => {
  emit("error", { scope: "unhandledRejection", message: errMessage(err) });
});
process.on("exit", (code) => {
  emit("exit", { code });
});

const t0 = Date.now();
await app.start(); // resolves after the SDK's version check (GET api.mentra.glass, <= 3 s)
const addr = httpServer?.address();
const port = addr && typeof addr === "object" ? addr.port : PORT;
emit("listening", { port, packageName: PKG, features: [...FEATURES], startMs: Date.now() - t0, pid: process.pid });
