/** The pod as a process (`npm run pod`): JSON logs with podId, probes up, SIGTERM exits 0; the log sink is bounded. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { Writable } from "node:stream";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { BoundedLogSink } from "../src/util/logSink.ts";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");

test("the pod process logs JSON with podId, serves probes and exits 0 on SIGTERM", async () => {
  const child = spawn(process.execPath, ["--import", "tsx", path.join(root, "apps/pod/src/main.ts")], {
    cwd: root,
    env: { ...process.env, PORT: "0", UDP_PORT: "0", POD_ID: "pod-proc", JWT_SECRET: "proc-secret", LOG_LEVEL: "info" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines: Record<string, unknown>[] = [];
  const listening = new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on("line", (l) => {
      const j = JSON.parse(l);
      lines.push(j);
      if (j.msg === "pod listening") resolve(j.httpUrl);
    });
    child.once("exit", (c) => reject(new Error(`exited early ${c}`)));
  });
  const url = await listening;
  assert.equal((await fetch(`${url}/livez`)).status, 200);
  assert.equal((await fetch(`${url}/readyz`)).status, 200);
  const exit = new Promise<number | null>((r) => child.once("exit", (c) => r(c)));
  child.kill("SIGTERM");
  assert.equal(await exit, 0);
  assert.ok(lines.every((l) => l.podId === "pod-proc"));
  assert.ok(!JSON.stringify(lines).includes("proc-secret"));
});

test("the log sink drops and counts lines beyond its bound instead of growing without limit (C15)", async () => {
  const chunks: string[] = [];
  let release: (() => void) | null = null;
  // A sink that stalls: the first write reports backpressure until released.
  const slow = new Writable({
    highWaterMark: 1,
    write(chunk, _enc, cb) {
      chunks.push(chunk.toString());
      release = cb;
    },
  });
  const sink = new BoundedLogSink(slow, 1000);
  let counted = 0;
  sink.onDrop = (n) => (counted += n);
  for (let i = 0; i < 200; i++) sink.write(`{"line":${i},"pad":"${"x".repeat(40)}"}\n`);
  assert.ok(sink.dropped > 150, `dropped ${sink.dropped}`);
  assert.equal(counted, sink.dropped);
  assert.ok(sink.queued * 50 <= 1000 + 50);
  (release as unknown as () => void)();
  await new Promise((r) => setTimeout(r, 20));
  const written = chunks.join("").split("\n").filter(Boolean).length;
  assert.equal(written + sink.dropped, 200, "every line is either written or counted");
});

test("`npm run start:pod` on a port already in use: one 'cannot start' line and exit 1, like `npm run pod`", async () => {
  const net = await import("node:net");
  const busy = net.createServer();
  await new Promise<void>((r) => busy.listen(0, "127.0.0.1", () => r()));
  const port = (busy.address() as { port: number }).port;
  try {
    for (const entry of ["apps/pod/src/cli/start.ts", "apps/pod/src/main.ts"]) {
      const child = spawn(process.execPath, ["--import", "tsx", path.join(root, entry)], {
        cwd: root,
        env: { ...process.env, PORT: String(port), HOST: "127.0.0.1", UDP_PORT: "0", POD_ID: "pod-busy", JWT_SECRET: "busy-secret", LOG_LEVEL: "silent" },
        stdio: ["ignore", "ignore", "pipe"],
      });
      let stderr = "";
      child.stderr!.on("data", (d) => (stderr += d));
      const code = await new Promise<number | null>((r) => child.once("exit", (c) => r(c)));
      assert.equal(code, 1, `${entry}: exit code (stderr: ${stderr})`);
      assert.match(stderr, /^pod: cannot start: .*EADDRINUSE/m, entry);
      assert.equal(stderr.trim().split("\n").length, 1, `${entry}: one line, got ${stderr}`);
    }
  } finally {
    busy.close();
  }
});
