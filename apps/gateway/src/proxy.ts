/**
 * The local cluster's stand-in for an ingress: /p/<podId>/… is forwarded to that pod, HTTP and
 * WebSocket alike, so the public URLs handed out are same-origin (production uses the Ingress).
 */
import http from "node:http";
import net from "node:net";
import type { Duplex } from "node:stream";

export function proxyHttp(req: http.IncomingMessage, res: http.ServerResponse, target: URL): void {
  const upstream = http.request(
    { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: { ...req.headers, host: target.host } },
    (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    },
  );
  upstream.on("error", () => {
    if (!res.headersSent) res.writeHead(502, { "content-type": "application/json" });
    res.end(JSON.stringify({ success: false, error: "pod_unreachable", message: "The pod did not answer" }));
  });
  req.pipe(upstream);
}

export function proxyUpgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer, target: URL): void {
  const up = net.connect(Number(target.port), target.hostname, () => {
    const lines = [`${req.method} ${req.url} HTTP/1.1`];
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      const k = req.rawHeaders[i]!;
      lines.push(`${k}: ${k.toLowerCase() === "host" ? target.host : req.rawHeaders[i + 1]}`);
    }
    up.write(lines.join("\r\n") + "\r\n\r\n");
    if (head.length) up.write(head);
    up.pipe(socket);
    socket.pipe(up);
  });
  const kill = () => {
    up.destroy();
    socket.destroy();
  };
  up.on("error", () => {
    if (socket.writable) socket.end("HTTP/1.1 502 Bad Gateway\r\nconnection: close\r\ncontent-length: 0\r\n\r\n");
    kill();
  });
  socket.on("error", kill);
  up.on("close", () => socket.destroy());
  socket.on("close", () => up.destroy());
}

/** Writes a plain HTTP response on a socket that asked for an upgrade. */
export function rawResponse(socket: Duplex, status: number, headers: Record<string, string>, body = ""): void {
  const text = http.STATUS_CODES[status] ?? "";
  const h = { ...headers, "content-length": String(Buffer.byteLength(body)), connection: "close" };
  socket.end(`HTTP/1.1 ${status} ${text}\r\n${Object.entries(h).map(([k, v]) => `${k}: ${v}`).join("\r\n")}\r\n\r\n${body}`);
}
