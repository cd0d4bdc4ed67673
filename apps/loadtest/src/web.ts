/**
 * The driver's HTTP interface: the live page and a small JSON API (the page uses it; so can scripts).
 *
 *   GET  /                      live page
 *   GET  /api/state?since=SEQ   status, samples after SEQ (trimmed), steps, answer
 *   POST /api/start             {"steps":[10,50,100]} (default: the CLI's plan) → starts a run
 *   POST /api/users             {"users":N} → hold N users (starts a run if none)
 *   POST /api/stop              ends the run; the report is written
 *   GET  /report, /samples.json the last run's report and its samples
 */
import http from "node:http";
import { readFileSync } from "node:fs";
import type { Driver } from "./driver.ts";
import { renderLivePage } from "./page.ts";
import { liteSample } from "./summary.ts";

export interface WebServer {
  url: string;
  close(): Promise<void>;
}

export async function startWebServer(driver: Driver, o: { port: number; host: string }): Promise<WebServer> {
  const page = renderLivePage();
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://loadtest");
    const json = (status: number, body: unknown) => {
      res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store" });
      res.end(JSON.stringify(body));
    };
    const readBody = () =>
      new Promise<Record<string, unknown>>((resolve) => {
        const chunks: Buffer[] = [];
        req.on("data", (c: Buffer) => chunks.push(c));
        req.on("end", () => {
          try {
            const t = Buffer.concat(chunks).toString();
            resolve(t ? JSON.parse(t) : {});
          } catch {
            resolve({});
          }
        });
      });
    const fail = (err: unknown) => json(409, { error: "conflict", message: (err as Error).message });
    try {
      if (req.method === "GET" && url.pathname === "/") {
        res.writeHead(200, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" });
        res.end(page);
      } else if (req.method === "GET" && url.pathname === "/api/state") {
        const since = Number(url.searchParams.get("since") ?? 0) || 0;
        const fresh = driver.samples.filter((s) => s.seq > since);
        const r = driver.lastResult;
        json(200, {
          state: driver.state,
          phase: driver.latest?.phase ?? "idle",
          step: driver.latest?.step ?? null,
          runId: driver.runStartedAt,
          target: driver.currentTarget,
          maxUsers: driver.o.users,
          plan: driver.o.steps,
          thresholdMs: driver.o.lagThresholdMs,
          workers: driver.workerCount,
          gatewayUrl: driver.gatewayUrl,
          pods: driver.latest?.pods.map((p) => p.podId) ?? [],
          seq: fresh.length ? fresh[fresh.length - 1]!.seq : since,
          samples: fresh.map(liteSample),
          steps: driver.steps.map(({ perPod: _p, ...s }) => s),
          answer: r?.report.verdict.answer ?? null,
          verdictKind: r?.report.verdict.kind ?? null,
          report: r ? { html: "/report", json: "/report/samples.json" } : null,
          error: driver.lastError,
        });
      } else if (req.method === "POST" && url.pathname === "/api/start") {
        void readBody().then((b) => {
          try {
            const steps = Array.isArray(b.steps) && b.steps.length ? b.steps.map(Number) : undefined;
            if (b.steps !== undefined && (!Array.isArray(b.steps) || (steps && !steps.every((n) => Number.isInteger(n) && n >= 1)))) {
              return json(400, { error: "bad_request", message: "steps must be a list of whole numbers ≥ 1" });
            }
            void driver.start(steps).catch(() => undefined);
            json(202, { started: true, state: driver.state });
          } catch (err) {
            fail(err);
          }
        });
      } else if (req.method === "POST" && url.pathname === "/api/users") {
        void readBody().then((b) => {
          try {
            const n = Number(b.users);
            if (!Number.isFinite(n) || n < 0) return json(400, { error: "bad_request", message: "users must be a number ≥ 0" });
            driver.setManual(n);
            json(202, { users: Math.min(n, driver.o.users), state: driver.state });
          } catch (err) {
            fail(err);
          }
        });
      } else if (req.method === "POST" && url.pathname === "/api/stop") {
        void driver.stop().catch(() => undefined);
        json(202, { stopping: true, state: driver.state });
      } else if (req.method === "GET" && (url.pathname === "/report" || url.pathname === "/report/samples.json" || url.pathname === "/samples.json")) {
        const r = driver.lastResult;
        if (!r) return json(404, { error: "not_found", message: "no run has finished yet" });
        const html = url.pathname === "/report";
        res.writeHead(200, { "content-type": html ? "text/html; charset=utf-8" : "application/json" });
        res.end(readFileSync(html ? r.htmlPath : r.jsonPath));
      } else {
        json(404, { error: "not_found", message: `no route ${req.method} ${url.pathname}` });
      }
    } catch (err) {
      json(500, { error: "internal", message: (err as Error).message });
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(o.port, o.host, () => resolve());
  });
  const a = server.address() as { port: number };
  return {
    url: `http://${o.host === "0.0.0.0" ? "127.0.0.1" : o.host}:${a.port}`,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
