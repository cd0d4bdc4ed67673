/**
 * `npm run demo`: one simulated phone against a running pod. Connects, registers UDP, starts the
 * transcription demo app over REST, streams a speech WAV once, prints each display as it arrives,
 * stops the app and prints a summary.
 *
 *   npm run demo -- [--url http://127.0.0.1:7002] [--token <coreToken>] [--app <pkg>] [--wav <file>]
 *
 * Env fallbacks: POD_URL, CORE_TOKEN, DEMO_APP, DEMO_WAV; JWT_SECRET for the minted token.
 */
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { existsSync } from "node:fs";
import { mintUserToken, type DisplayEvent, type Layout, type MicrophoneStateChange } from "@mentra-cluster/protocol";
import { gatewayResolver, PhoneSim, UpgradeRefusedError } from "./index.ts";

const DEMO_EMAIL = "demo@mentra.glass";
const DEFAULT_WAV = resolve(dirname(fileURLToPath(import.meta.url)), "../../../../shared/data/audio/short-test-16khz.wav");
const SETTLE_AFTER_STREAM_MS = 3_000;
const MIC_WAIT_MS = 5_000;

class DemoError extends Error {}

function options() {
  const { values } = parseArgs({
    options: {
      url: { type: "string" },
      gateway: { type: "string" },
      token: { type: "string" },
      app: { type: "string" },
      wav: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
  });
  if (values.help) {
    console.log("usage: npm run demo -- [--gateway http://127.0.0.1:7000 | --url <pod http base>] [--token <coreToken>] [--app <pkg>] [--wav <file>]");
    process.exit(0);
  }
  // Through the gateway by default (the local cluster of `npm start`); --url talks to one pod directly.
  const direct = values.url ?? process.env.POD_URL;
  const gateway = direct ? null : (values.gateway ?? process.env.MENTRA_GATEWAY ?? "http://127.0.0.1:7000").replace(/\/+$/, "");
  const url = (direct ?? gateway!).replace(/\/+$/, "");
  const token = values.token ?? process.env.CORE_TOKEN ?? mintUserToken(DEMO_EMAIL, process.env.JWT_SECRET ?? "dev-only-secret");
  const app = values.app ?? process.env.DEMO_APP ?? "com.mentra.demo.transcribe";
  const wav = resolve(values.wav ?? process.env.DEMO_WAV ?? DEFAULT_WAV);
  return { url, gateway, token, app, wav };
}

/** The UDP header needs the user id; read the (unverified) email claim of the token. */
function userIdFromToken(token: string): string {
  try {
    const claims = JSON.parse(Buffer.from(token.split(".")[1] ?? "", "base64url").toString("utf8")) as { email?: unknown };
    if (typeof claims.email === "string" && claims.email) return claims.email.trim().toLowerCase();
  } catch {
    // fall through
  }
  throw new DemoError("the token has no email claim; pass a core token minted for a user");
}

function wsUrlFor(httpBase: string): string {
  const u = new URL(httpBase);
  u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  u.pathname = `${u.pathname.replace(/\/+$/, "")}/glasses-ws`;
  return u.toString();
}

function layoutText(layout: Layout): string | null {
  switch (layout.layoutType) {
    case "text_wall":
      return layout.text;
    case "double_text_wall":
      return [layout.topText, layout.bottomText].filter(Boolean).join(" | ");
    case "reference_card":
      return `${layout.title}: ${layout.text}`;
    case "dashboard_card":
      return `${layout.leftText} | ${layout.rightText}`;
    default:
      return null;
  }
}

function unreachable(url: string, err: unknown): DemoError {
  const code = (err as { code?: string; cause?: { code?: string } })?.code ?? (err as { cause?: { code?: string } })?.cause?.code;
  const detail = code ?? (err instanceof Error ? err.message : String(err));
  return new DemoError(`pod unreachable at ${url} (${detail}). Is it running? Start one with \`npm start\` or pass --url.`);
}

async function main(): Promise<void> {
  const { url, gateway, token, app, wav } = options();
  if (!existsSync(wav)) throw new DemoError(`WAV file not found: ${wav}`);
  const userId = userIdFromToken(token);
  const phone = new PhoneSim({
    wsUrl: wsUrlFor(url),
    restBase: url,
    token,
    userId,
    // Through the gateway the phone follows moves (drain, failover): reconnect with backoff.
    ...(gateway ? { resolveEndpoint: gatewayResolver(gateway, token), reconnect: { baseMs: 500, maxMs: 5000 } } : {}),
  });
  const startedAt = Date.now();
  let textDisplays = 0;

  phone.on("display", (d: DisplayEvent) => {
    const text = layoutText(d.layout);
    if (!text) return; // clears and bitmaps
    if (d.layout.layoutType === "text_wall") textDisplays++;
    const tag = d.layout.layoutType === "text_wall" ? "[display]" : `[display:${d.layout.layoutType}]`;
    console.log(`${tag} ${text}`);
  });
  let finishing = false;
  phone.on("close", ({ code, reason }) => {
    if (!finishing) console.log(`[phone] socket closed unexpectedly: ${code}${reason ? ` ${reason}` : ""}`);
  });

  const stopOnSignal = () => {
    void phone.dispose().then(() => process.exit(130));
  };
  process.once("SIGINT", stopOnSignal);

  try {
    let ack;
    try {
      ack = await phone.connect();
    } catch (err) {
      if (err instanceof UpgradeRefusedError) {
        throw new DemoError(`pod refused the phone connection: HTTP ${err.status} ${JSON.stringify(err.body)}`);
      }
      throw unreachable(url, err);
    }
    console.log(`[phone] connected as ${userId}${ack.podId ? ` to pod ${ack.podId}` : ""}`);

    let transport = "WebSocket";
    if (ack.udpHost && ack.udpPort) {
      try {
        await phone.registerUdp();
        transport = `UDP ${ack.udpHost}:${ack.udpPort}${phone.udpKey ? " (encrypted)" : ""}`;
      } catch (err) {
        console.log(`[phone] UDP registration failed (${(err as Error).message}); audio falls back to WebSocket`);
      }
    }
    console.log(`[phone] audio transport: ${transport}`);

    const started = await phone.startApp(app).catch((err: unknown) => {
      throw unreachable(url, err);
    });
    if (started.status >= 400 || started.body?.success === false) {
      throw new DemoError(`starting ${app} failed: HTTP ${started.status} ${JSON.stringify(started.body)}`);
    }
    console.log(`[phone] started ${app}`);

    // The app subscribes after it connects; wait for the mic so the first words are not lost.
    await phone
      .waitFor<MicrophoneStateChange>((m) => m.type === "microphone_state_change" && m.isMicrophoneEnabled, MIC_WAIT_MS)
      .catch(() => console.log(`[phone] microphone not enabled within ${MIC_WAIT_MS} ms; streaming anyway`));

    console.log(`[phone] streaming ${wav}`);
    const result = await phone.streamWav(wav).done;
    console.log(`[phone] stream ended: ${result.packets} packets sent, ${result.dropped} dropped; waiting ${SETTLE_AFTER_STREAM_MS / 1000} s`);
    await new Promise((r) => setTimeout(r, SETTLE_AFTER_STREAM_MS));

    const stopped = await phone.stopApp(app);
    console.log(`[phone] stopped ${app} (HTTP ${stopped.status})`);

    const s = phone.stats;
    console.log(
      [
        "--- summary ---",
        `duration        ${((Date.now() - startedAt) / 1000).toFixed(1)} s`,
        `audio           ${result.packets} packets via ${transport} (udp ${s.udpPacketsSent}, ws ${s.wsAudioFramesSent}, dropped ${s.audioPacketsDropped})`,
        `displays        ${phone.displays.length} (${textDisplays} text_wall)`,
        `messages        ${phone.received.length} received, ${phone.pingsReceived} pings answered`,
        `closes          ${phone.closes.length}`,
      ].join("\n"),
    );
  } finally {
    finishing = true;
    process.off("SIGINT", stopOnSignal);
    await phone.dispose();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(`demo failed: ${err instanceof DemoError ? err.message : err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    process.exit(1);
  },
);
