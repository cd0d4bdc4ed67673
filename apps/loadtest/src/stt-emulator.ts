/**
 * A streaming speech-to-text service for load tests: a WebSocket server speaking the protocol of
 * the pod's streaming provider (apps/pod/src/transcription/stream.ts) and running the same
 * energy-based detection as the pod's in-process provider, so a run with it costs the pod what a
 * real vendor socket costs (one WebSocket per transcribing user, 25 frames/s out, JSON in).
 *
 *   npm run stt -w apps/loadtest -- [--port 7300] [--host 127.0.0.1] [--drop-every 0]
 *   node --import tsx apps/loadtest/src/stt-emulator.ts --port 0   # prints {"msg":"stt listening","url":…}
 *
 * --drop-every MS closes every stream with 1011 after MS ms (fault injection for reconnects).
 */
import http from "node:http";
import { parseArgs } from "node:util";
import { WebSocketServer, type WebSocket, type RawData } from "ws";
import { EnergyTranscriptionProvider } from "@mentra-cluster/pod";

export interface SttEmulatorOptions {
  port?: number;
  host?: string;
  /** Close each stream with 1011 after this many ms (0 = never). */
  dropEveryMs?: number;
  /** Refuse the handshake with this HTTP status (fault injection). */
  refuseWith?: number;
  /** Required bearer key (STT_API_KEY); unset = open. */
  apiKey?: string;
}

export interface SttEmulatorStats {
  connections: number;
  open: number;
  framesIn: number;
  bytesIn: number;
  resultsOut: number;
}

export interface SttEmulator {
  url: string;
  port: number;
  stats: SttEmulatorStats;
  /** Closes every stream with 1001 and stops listening. */
  stop(): Promise<void>;
}

export async function startSttEmulator(o: SttEmulatorOptions = {}): Promise<SttEmulator> {
  const provider = new EnergyTranscriptionProvider();
  const stats: SttEmulatorStats = { connections: 0, open: 0, framesIn: 0, bytesIn: 0, resultsOut: 0 };
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ status: "ok", ...stats }));
  });
  const wss = new WebSocketServer({
    noServer: true,
    perMessageDeflate: false,
    maxPayload: 1024 * 1024,
  });
  server.on("upgrade", (req, socket, head) => {
    const refuse = (status: number, body: string) => {
      socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ""}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
    };
    if (o.refuseWith) return refuse(o.refuseWith, JSON.stringify({ error: "refused" }));
    if (o.apiKey && req.headers.authorization !== `Bearer ${o.apiKey}`) return refuse(401, JSON.stringify({ error: "unauthorized" }));
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit("connection", ws, req));
  });
  wss.on("connection", (ws: WebSocket, req: http.IncomingMessage) => {
    stats.connections++;
    stats.open++;
    const url = new URL(req.url ?? "/", "http://stt");
    const language = url.searchParams.get("language") ?? "en-US";
    // Offsets: the stream clock starts at 0, so startTime/endTime are ms of this connection's audio.
    const stream = provider.createStream({
      language,
      startEpochMs: 0,
      onResult: (d) => {
        if (ws.readyState !== ws.OPEN) return;
        stats.resultsOut++;
        ws.send(JSON.stringify({ type: "result", text: d.text, isFinal: d.isFinal, utteranceId: d.utteranceId, speakerId: d.speakerId, startMs: d.startTime, endMs: d.endTime }));
      },
      onError: (err) => {
        if (ws.readyState === ws.OPEN) ws.send(JSON.stringify({ type: "error", message: err.message }));
      },
    });
    const drop = o.dropEveryMs ? setTimeout(() => ws.close(1011, "emulated drop"), o.dropEveryMs) : null;
    ws.on("message", (data: RawData, isBinary: boolean) => {
      if (!isBinary) return; // control frames are not needed by this emulator
      const buf = Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
      stats.framesIn++;
      stats.bytesIn += buf.length;
      stream.write(buf);
    });
    ws.on("close", () => {
      stats.open--;
      if (drop) clearTimeout(drop);
      stream.close();
    });
    ws.on("error", () => undefined);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(o.port ?? 0, o.host ?? "127.0.0.1", () => resolve());
  });
  const addr = server.address() as { port: number };
  const host = (o.host ?? "127.0.0.1") === "0.0.0.0" ? "127.0.0.1" : (o.host ?? "127.0.0.1");
  return {
    url: `ws://${host}:${addr.port}`,
    port: addr.port,
    stats,
    async stop() {
      for (const ws of wss.clients) ws.close(1001, "STT shutting down");
      await new Promise((r) => setTimeout(r, 50));
      for (const ws of wss.clients) ws.terminate();
      wss.close();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({
    options: {
      port: { type: "string", default: process.env.PORT ?? "7300" },
      host: { type: "string", default: process.env.HOST ?? "127.0.0.1" },
      "drop-every": { type: "string", default: "0" },
    },
  });
  const stt = await startSttEmulator({ port: Number(values.port), host: values.host, dropEveryMs: Number(values["drop-every"]) || 0, apiKey: process.env.STT_API_KEY || undefined });
  process.stdout.write(JSON.stringify({ msg: "stt listening", url: stt.url, pid: process.pid }) + "\n");
  const bye = () => void stt.stop().then(() => process.exit(0));
  process.on("SIGTERM", bye);
  process.on("SIGINT", bye);
}
