/**
 * A lean mini-app server that speaks the @mentra/sdk 2.1.29 wire protocol (webhook + /app-ws)
 * without the SDK's per-message debug logging, so benchmarks and load tests can run hundreds of
 * app sessions from one process. Behaviour follows the SDK: the webhook answers only after the
 * ack; `[]` is sent first, then the real subscription list; no app-level pings.
 */
import http from "node:http";
import { EventEmitter } from "node:events";
import WebSocket from "ws";
import type { DataStream, SessionRequestWebhook, StopRequestWebhook, TranscriptionData } from "@mentra-cluster/protocol";

export interface AppSimOptions {
  packageName: string;
  apiKey: string;
  subscriptions?: string[];
  /** Answer each final (or every) transcript with showTextWall(text). Default "final". */
  echo?: "final" | "all" | "none";
  echoPrefix?: string;
  /** Status to answer webhooks with instead of connecting (fault injection). */
  failWebhookWith?: number;
  /** Delay before connecting back (fault injection). */
  connectDelayMs?: number;
  port?: number;
}

export interface AppSimSession {
  sessionId: string;
  userId: string;
  ws: WebSocket;
  acked: boolean;
  transcripts: TranscriptionData[];
  audioBytes: number;
  dataStreams: number;
  closes: { code: number; reason: string }[];
  other: Record<string, unknown>[];
}

export class AppSim extends EventEmitter {
  readonly sessions = new Map<string, AppSimSession>();
  readonly ended: AppSimSession[] = [];
  webhooks: (SessionRequestWebhook | StopRequestWebhook)[] = [];
  private server: http.Server | null = null;
  private readonly sockets = new Set<WebSocket>();
  port = 0;

  constructor(readonly opts: AppSimOptions) {
    super();
  }

  get publicUrl(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(): Promise<this> {
    this.server = http.createServer((req, res) => this.onRequest(req, res));
    this.server.keepAliveTimeout = 1000;
    await new Promise<void>((r) => this.server!.listen(this.opts.port ?? 0, "127.0.0.1", r));
    this.port = (this.server.address() as { port: number }).port;
    return this;
  }

  private onRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const reply = (status: number, body: unknown) => {
        res.writeHead(status, { "content-type": "application/json" });
        res.end(JSON.stringify(body));
      };
      if (req.method !== "POST" || req.url !== "/webhook") return reply(404, { error: "not found" });
      let body: SessionRequestWebhook | StopRequestWebhook;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString());
      } catch {
        return reply(400, { status: "error", message: "bad json" });
      }
      this.webhooks.push(body);
      this.emit("webhook", body);
      if (body.type === "stop_request") {
        const s = this.sessions.get(body.sessionId);
        if (s) {
          this.sessions.delete(body.sessionId);
          this.ended.push(s);
          s.ws.close();
          this.emit("stop", s, "stop_request");
        }
        return reply(200, { status: "success" });
      }
      if (body.type !== "session_request") return reply(400, { status: "error", message: "unknown type" });
      if (this.opts.failWebhookWith) return reply(this.opts.failWebhookWith, { status: "error", message: "injected" });
      const go = () =>
        this.connect(body as SessionRequestWebhook).then(
          () => reply(200, { status: "success" }),
          () => reply(500, { status: "error", message: "Failed to connect" }),
        );
      if (this.opts.connectDelayMs) setTimeout(go, this.opts.connectDelayMs);
      else void go();
    });
  }

  private connect(req: SessionRequestWebhook): Promise<void> {
    const url = req.mentraOSWebsocketUrl || req.augmentOSWebsocketUrl;
    const prev = this.sessions.get(req.sessionId);
    if (prev) {
      // The SDK's hand-off for a session id it already holds: release the old socket first.
      prev.ws.send(JSON.stringify({ type: "ownership_release", packageName: this.opts.packageName, sessionId: req.sessionId, reason: "switching_clouds", timestamp: new Date().toISOString() }));
      prev.ws.close(1000, "switching clouds");
      this.sessions.delete(req.sessionId);
    }
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      this.sockets.add(ws);
      const s: AppSimSession = { sessionId: req.sessionId, userId: req.userId, ws, acked: false, transcripts: [], audioBytes: 0, dataStreams: 0, closes: [], other: [] };
      const timer = setTimeout(() => {
        ws.terminate();
        reject(new Error("ack timeout"));
      }, 5000);
      ws.on("open", () => {
        ws.send(JSON.stringify({ type: "tpa_connection_init", sessionId: req.sessionId, packageName: this.opts.packageName, apiKey: this.opts.apiKey, timestamp: new Date().toISOString() }));
      });
      ws.on("message", (data, isBinary) => {
        if (isBinary) {
          s.audioBytes += (data as Buffer).length;
          return;
        }
        const msg = JSON.parse(data.toString());
        if (msg.type === "tpa_connection_ack") {
          clearTimeout(timer);
          s.acked = true;
          this.sessions.set(req.sessionId, s);
          const send = (subs: string[]) =>
            ws.send(JSON.stringify({ type: "subscription_update", packageName: this.opts.packageName, sessionId: req.sessionId, subscriptions: subs, timestamp: new Date().toISOString() }));
          send([]);
          send(this.opts.subscriptions ?? ["transcription:en-US"]);
          this.emit("session", s);
          resolve();
        } else if (msg.type === "tpa_connection_error") {
          clearTimeout(timer);
          s.other.push(msg);
          this.emit("connection_error", msg);
          reject(new Error(msg.code));
        } else if (msg.type === "data_stream") {
          s.dataStreams++;
          this.onDataStream(s, msg);
        } else {
          s.other.push(msg);
          this.emit("message", s, msg);
        }
      });
      ws.on("close", (code, reason) => {
        this.sockets.delete(ws);
        clearTimeout(timer);
        s.closes.push({ code, reason: reason.toString() });
        if (this.sessions.get(req.sessionId) === s) {
          this.sessions.delete(req.sessionId);
          this.ended.push(s);
        }
        this.emit("close", s, code, reason.toString());
        reject(new Error(`closed ${code}`));
      });
      ws.on("error", () => undefined);
    });
  }

  private onDataStream(s: AppSimSession, msg: DataStream): void {
    const d = msg.data as TranscriptionData;
    if (d && d.type === "transcription") {
      s.transcripts.push(d);
      this.emit("transcription", s, d);
      const echo = this.opts.echo ?? "final";
      if (echo === "all" || (echo === "final" && d.isFinal)) {
        s.ws.send(JSON.stringify({ type: "display_event", packageName: this.opts.packageName, view: "main", layout: { layoutType: "text_wall", text: `${this.opts.echoPrefix ?? ""}${d.text}` }, sessionId: "", timestamp: new Date().toISOString() }));
      }
    }
  }

  async stop(): Promise<void> {
    for (const ws of this.sockets) ws.terminate();
    this.sockets.clear();
    const srv = this.server;
    this.server = null;
    if (srv) {
      srv.closeAllConnections();
      await new Promise<void>((r) => srv.close(() => r()));
    }
  }
}
