/**
 * Unit tests for the pod's pure parts, driven by a ManualClock (no sleeping, no sockets):
 * ReorderBuffer, DisplayManager, MicrophoneManager, SubscriptionManager and the energy
 * transcription provider on real speech.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { readWav, type DisplayEvent, type Layout, type TranscriptionData } from "@mentra-cluster/protocol";
import { ReorderBuffer, seqDiff } from "../src/udp/reorder.ts";
import { DisplayManager, SYSTEM_DASHBOARD, type DisplaySink } from "../src/session/DisplayManager.ts";
import { MicrophoneManager } from "../src/session/MicrophoneManager.ts";
import { SubscriptionManager } from "../src/session/SubscriptionManager.ts";
import { EnergyTranscriptionProvider } from "../src/transcription/energy.ts";
import { ManualClock } from "../src/util/clock.ts";

const WAV = "/work/shared/data/audio/what-time-is-it-16khz.wav";

// ====================================================================== ReorderBuffer

/** One-byte payload carrying the low byte of the sequence, plus the full seq for readability. */
const pkt = (seq: number) => Buffer.from(`${seq}`);
const seqs = (out: Buffer[]) => out.map((b) => Number(b.toString()));

describe("ReorderBuffer", () => {
  test("seqDiff is the signed distance in uint16 space", () => {
    assert.equal(seqDiff(5, 3), 2);
    assert.equal(seqDiff(3, 5), -2);
    assert.equal(seqDiff(0, 65535), 1);
    assert.equal(seqDiff(65535, 0), -1);
    assert.equal(seqDiff(10, 65530), 16);
    assert.equal(seqDiff(7, 7), 0);
  });

  test("in-order packets are emitted at once, one by one", () => {
    const rb = new ReorderBuffer();
    const all: number[] = [];
    for (let s = 100; s < 150; s++) {
      const out = rb.push(s, pkt(s), 0);
      assert.deepEqual(seqs(out), [s]);
      all.push(...seqs(out));
    }
    assert.equal(rb.size, 0);
    assert.equal(rb.late, 0);
    assert.equal(rb.resets, 0);
  });

  test("out-of-order within the buffer is put back in order", () => {
    const rb = new ReorderBuffer();
    assert.deepEqual(seqs(rb.push(0, pkt(0), 0)), [0]);
    assert.deepEqual(seqs(rb.push(2, pkt(2), 1)), []);
    assert.deepEqual(seqs(rb.push(4, pkt(4), 2)), []);
    assert.deepEqual(seqs(rb.push(3, pkt(3), 3)), []);
    assert.equal(rb.size, 3);
    assert.equal(rb.bufferedBytes, 3);
    assert.deepEqual(seqs(rb.push(1, pkt(1), 4)), [1, 2, 3, 4]);
    assert.equal(rb.size, 0);
    assert.deepEqual(seqs(rb.push(5, pkt(5), 5)), [5]);
    assert.equal(rb.late, 0);
  });

  test("a duplicate of a buffered packet is not emitted twice", () => {
    const rb = new ReorderBuffer();
    rb.push(0, pkt(0), 0);
    rb.push(2, pkt(2), 0);
    rb.push(2, Buffer.from("dup"), 0);
    assert.equal(rb.size, 1);
    assert.deepEqual(seqs(rb.push(1, pkt(1), 0)), [1, 2]);
  });

  test("late packets (behind expected, within the gap) are dropped and counted", () => {
    const rb = new ReorderBuffer();
    for (let s = 10; s < 20; s++) rb.push(s, pkt(s), 0);
    assert.deepEqual(seqs(rb.push(15, pkt(15), 0)), []);
    assert.deepEqual(seqs(rb.push(19, pkt(19), 0)), []);
    assert.deepEqual(seqs(rb.push(0, pkt(0), 0)), []);
    assert.equal(rb.late, 3);
    assert.equal(rb.resets, 0);
    assert.deepEqual(seqs(rb.push(20, pkt(20), 0)), [20]);
  });

  test("a gap > 50 (either direction) resets: buffered packets flushed in order, new position taken", () => {
    const rb = new ReorderBuffer();
    rb.push(0, pkt(0), 0);
    rb.push(3, pkt(3), 0);
    rb.push(2, pkt(2), 0);
    assert.equal(rb.size, 2);
    // 1 + 51 = 52 ahead of expected (1): reset.
    assert.deepEqual(seqs(rb.push(52, pkt(52), 0)), [2, 3, 52]);
    assert.equal(rb.resets, 1);
    assert.equal(rb.size, 0);
    assert.deepEqual(seqs(rb.push(53, pkt(53), 0)), [53]);
    // Exactly 50 ahead is still buffered, not a reset.
    assert.deepEqual(seqs(rb.push(104, pkt(104), 0)), []);
    assert.equal(rb.resets, 1);
    // A jump far behind is a reset too (a phone restarting its counter), not a late drop.
    assert.deepEqual(seqs(rb.push(1, pkt(1), 0)), [104, 1]);
    assert.equal(rb.resets, 2);
    assert.equal(rb.late, 0);
    assert.deepEqual(seqs(rb.push(2, pkt(2), 0)), [2]);
  });

  test("buffer full (11th packet ahead): skip to the oldest buffered and drain", () => {
    const rb = new ReorderBuffer();
    rb.push(0, pkt(0), 0); // expected 1; 1 and 2 are lost
    for (let s = 3; s <= 12; s++) assert.deepEqual(seqs(rb.push(s, pkt(s), 0)), [], `seq ${s}`);
    assert.equal(rb.size, 10);
    assert.deepEqual(seqs(rb.push(13, pkt(13), 0)), [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]);
    assert.equal(rb.size, 0);
    // The skipped packets arriving now are late.
    assert.deepEqual(seqs(rb.push(1, pkt(1), 0)), []);
    assert.equal(rb.late, 1);
    assert.deepEqual(seqs(rb.push(14, pkt(14), 0)), [14]);
  });

  test("buffer full with holes: skip to the oldest, keep holding the rest", () => {
    const rb = new ReorderBuffer();
    rb.push(0, pkt(0), 0);
    const ahead = [3, 5, 7, 9, 11, 13, 15, 17, 19, 21];
    for (const s of ahead) rb.push(s, pkt(s), 0);
    assert.deepEqual(seqs(rb.push(4, pkt(4), 0)), [3, 4, 5]);
    assert.equal(rb.size, 8);
  });

  test("buffered packets older than 20 ms are released in order on the next push (explicit now)", () => {
    const rb = new ReorderBuffer();
    rb.push(0, pkt(0), 1000);
    assert.deepEqual(seqs(rb.push(2, pkt(2), 1000)), []);
    assert.deepEqual(seqs(rb.push(3, pkt(3), 1010)), []);
    assert.deepEqual(seqs(rb.push(6, pkt(6), 1019)), []);
    // 19 ms after the first buffered packet: still held.
    assert.equal(rb.size, 3);
    // 20 ms: 2 and 3 go (2 is stale, 3 is consecutive); 6 (buffered at 1019) is not stale yet.
    assert.deepEqual(seqs(rb.push(8, pkt(8), 1020)), [2, 3]);
    assert.equal(rb.size, 2);
    // 1 is now late (expected moved past it).
    assert.deepEqual(seqs(rb.push(1, pkt(1), 1021)), []);
    assert.equal(rb.late, 1);
    // At 1040 both 6 and 8 are stale: released in order, skipping the 7 hole.
    assert.deepEqual(seqs(rb.push(10, pkt(10), 1040)), [6, 8]);
    assert.deepEqual(seqs(rb.push(9, pkt(9), 1041)), [9, 10]);
    assert.equal(rb.size, 0);
  });

  test("wrap-around 65535 → 0 in order and out of order", () => {
    const rb = new ReorderBuffer();
    const got: number[] = [];
    for (const s of [65533, 65534, 65535, 0, 1, 2]) got.push(...seqs(rb.push(s, pkt(s), 0)));
    assert.deepEqual(got, [65533, 65534, 65535, 0, 1, 2]);
    const rb2 = new ReorderBuffer();
    rb2.push(65534, pkt(65534), 0);
    assert.deepEqual(seqs(rb2.push(1, pkt(1), 0)), []);
    assert.deepEqual(seqs(rb2.push(0, pkt(0), 0)), []);
    assert.deepEqual(seqs(rb2.push(65535, pkt(65535), 0)), [65535, 0, 1]);
    // 65534 after the wrap is late, not a reset.
    assert.deepEqual(seqs(rb2.push(65534, pkt(65534), 0)), []);
    assert.equal(rb2.late, 1);
    assert.equal(rb2.resets, 0);
  });

  test("flush emits everything buffered in sequence order (across the wrap) and forgets the position", () => {
    const rb = new ReorderBuffer();
    rb.push(65533, pkt(65533), 0); // expected 65534
    for (const s of [1, 65535, 0, 3]) rb.push(s, pkt(s), 0);
    assert.equal(rb.size, 4);
    assert.deepEqual(seqs(rb.flush()), [65535, 0, 1, 3]);
    assert.equal(rb.size, 0);
    assert.deepEqual(rb.flush(), []);
    // After a flush the next packet sets a fresh position: no late/reset for an unrelated seq.
    assert.deepEqual(seqs(rb.push(30000, pkt(30000), 0)), [30000]);
    assert.equal(rb.late, 0);
    assert.equal(rb.resets, 0);
  });

  test("random permutations within the window deliver every packet exactly once, in order", () => {
    let a = 12345;
    const rand = () => ((a = (Math.imul(a, 1103515245) + 12345) >>> 0) / 4294967296);
    for (let round = 0; round < 50; round++) {
      const rb = new ReorderBuffer();
      const start = Math.floor(rand() * 65536);
      const n = 200;
      const order = Array.from({ length: n }, (_, i) => i);
      // Shuffle inside blocks of 4 (after the first packet): displacement ≤ 3, well inside the buffer.
      for (let b = 1; b < n; b += 4) {
        for (let i = Math.min(n, b + 4) - 1; i > b; i--) {
          const j = b + Math.floor(rand() * (i - b + 1));
          [order[i], order[j]] = [order[j]!, order[i]!];
        }
      }
      const got: number[] = [];
      for (const i of order) got.push(...seqs(rb.push((start + i) & 0xffff, pkt((start + i) & 0xffff), 0)));
      got.push(...seqs(rb.flush()));
      assert.deepEqual(got, Array.from({ length: n }, (_, i) => (start + i) & 0xffff), `round ${round}`);
      assert.equal(rb.late, 0);
    }
  });
});

// ====================================================================== DisplayManager

interface FakeDisplaySink extends DisplaySink {
  ok: boolean;
  sent: { at: number; ev: DisplayEvent }[];
}
function displaySink(clock: ManualClock): FakeDisplaySink {
  const s: FakeDisplaySink = {
    ok: true,
    sent: [],
    canDisplay: () => s.ok,
    sendDisplay: (ev) => s.sent.push({ at: clock.now(), ev }),
  };
  return s;
}
function display(pkg: string, text: string, view: "main" | "dashboard" = "main"): DisplayEvent {
  return { type: "display_event", packageName: pkg, view, layout: { layoutType: "text_wall", text }, sessionId: "", timestamp: "2024-01-01T00:00:00.000Z" };
}
const textOf = (l: Layout) => ("text" in l ? l.text : l.layoutType);
const shown = (s: FakeDisplaySink, t0: number) => s.sent.map(({ at, ev }) => [at - t0, ev.packageName, textOf(ev.layout)]);

describe("DisplayManager", () => {
  test("300 ms throttle: the first display goes at once, later ones keep only the latest per app", () => {
    const clock = new ManualClock();
    const t0 = clock.now();
    const sink = displaySink(clock);
    const dm = new DisplayManager(clock, sink, 300, 1500);
    dm.request(display("A", "a1"));
    clock.advance(10);
    dm.request(display("A", "a2"));
    clock.advance(10);
    dm.request(display("A", "a3"));
    assert.deepEqual(shown(sink, t0), [[0, "A", "a1"]]);
    assert.equal(dm.queued, 1);
    clock.advance(279);
    assert.equal(sink.sent.length, 1, "nothing before the window ends");
    clock.advance(1);
    assert.deepEqual(shown(sink, t0), [[0, "A", "a1"], [300, "A", "a3"]]);
    assert.equal(dm.queued, 0);
    assert.equal(dm.latest.get("A")?.layout.layoutType, "text_wall");
    assert.equal(textOf(dm.latest.get("A")!.layout), "a3");
    clock.advance(5000);
    assert.equal(sink.sent.length, 2, "nothing resent");
    assert.equal(dm.sent, 2);
    dm.dispose();
    assert.equal(clock.pendingTimers, 0);
  });

  test("throttle with several apps: every app's latest display goes out, one per window, nothing lost", () => {
    const clock = new ManualClock();
    const t0 = clock.now();
    const sink = displaySink(clock);
    const dm = new DisplayManager(clock, sink, 300, 1500);
    dm.request(display("A", "a1"));
    clock.advance(5);
    dm.request(display("B", "b1"));
    clock.advance(5);
    dm.request(display("C", "c1"));
    clock.advance(5);
    dm.request(display("A", "a2"));
    clock.advance(5);
    dm.request(display("B", "b2"));
    clock.advance(2000);
    const out = shown(sink, t0);
    assert.deepEqual(out.map(([, p, t]) => `${p}:${t}`), ["A:a1", "C:c1", "A:a2", "B:b2"]);
    // One per window, each at least 300 ms after the previous.
    for (let i = 1; i < out.length; i++) assert.ok((out[i]![0] as number) - (out[i - 1]![0] as number) >= 300, JSON.stringify(out));
    assert.deepEqual(out.map(([at]) => at), [0, 300, 600, 900]);
    assert.equal(dm.queued, 0);
    dm.dispose();
    assert.equal(clock.pendingTimers, 0);
  });

  test("a request long after the last send goes out at once", () => {
    const clock = new ManualClock();
    const t0 = clock.now();
    const sink = displaySink(clock);
    const dm = new DisplayManager(clock, sink, 300, 1500);
    dm.request(display("A", "a1"));
    clock.advance(300);
    dm.request(display("A", "a2"));
    clock.advance(1000);
    dm.request(display("A", "a3"));
    assert.deepEqual(shown(sink, t0), [[0, "A", "a1"], [300, "A", "a2"], [1300, "A", "a3"]]);
    dm.dispose();
  });

  test("boot window: the boot card shows at once; the app's displays are held 1500 ms, then sent", () => {
    const clock = new ManualClock();
    const t0 = clock.now();
    const sink = displaySink(clock);
    const dm = new DisplayManager(clock, sink, 300, 1500);
    dm.boot("A", "App A");
    assert.equal(sink.sent.length, 1);
    const card = sink.sent[0]!.ev;
    assert.equal(card.packageName, SYSTEM_DASHBOARD);
    assert.equal(card.view, "main");
    assert.deepEqual(card.layout, { layoutType: "reference_card", title: "// MentraOS - Starting App", text: "App A" });
    clock.advance(100);
    dm.request(display("A", "hello"));
    clock.advance(400);
    dm.request(display("A", "hello again"));
    // Another app, not booting, is not held by A's boot window.
    dm.request(display("B", "b1"));
    clock.advance(1);
    assert.deepEqual(shown(sink, t0).map(([, p, t]) => `${p}:${t}`), [`${SYSTEM_DASHBOARD}:App A`, "B:b1"]);
    clock.advance(998); // t0 + 1499
    assert.equal(sink.sent.length, 2, "A still held at 1499 ms");
    clock.advance(1); // t0 + 1500
    assert.deepEqual(shown(sink, t0).at(-1), [1500, "A", "hello again"]);
    clock.advance(5000);
    assert.equal(sink.sent.length, 3, "no clear card after the app showed something");
    assert.ok(!sink.sent.some(({ ev }) => ev.packageName === SYSTEM_DASHBOARD && textOf(ev.layout) === ""));
    dm.dispose();
    assert.equal(clock.pendingTimers, 0);
  });

  test("boot window: the boot card is cleared with an empty text_wall when the app shows nothing", () => {
    const clock = new ManualClock();
    const t0 = clock.now();
    const sink = displaySink(clock);
    const dm = new DisplayManager(clock, sink, 300, 1500);
    dm.boot("A", "App A");
    clock.advance(1499);
    assert.equal(sink.sent.length, 1);
    clock.advance(1);
    assert.equal(sink.sent.length, 2);
    const [at, pkg] = shown(sink, t0)[1]!;
    assert.equal(at, 1500);
    assert.equal(pkg, SYSTEM_DASHBOARD);
    const clear = sink.sent[1]!.ev;
    assert.equal(clear.view, "main");
    assert.deepEqual(clear.layout, { layoutType: "text_wall", text: "" });
    assert.equal(clear.durationMs, 0);
    clock.advance(10_000);
    assert.equal(sink.sent.length, 2);
    assert.equal(clock.pendingTimers, 0, "no timer left once everything is sent");
    dm.dispose();
  });

  test("canDisplay() false: nothing is sent, the latest display is held and goes out on flush()", () => {
    const clock = new ManualClock();
    const t0 = clock.now();
    const sink = displaySink(clock);
    sink.ok = false;
    const dm = new DisplayManager(clock, sink, 300, 1500);
    dm.request(display("A", "a1"));
    clock.advance(50);
    dm.request(display("A", "a2"));
    dm.request(display("B", "b1"));
    clock.advance(10_000);
    assert.equal(sink.sent.length, 0);
    assert.equal(dm.queued, 2);
    sink.ok = true;
    clock.advance(10);
    dm.flush();
    assert.deepEqual(shown(sink, t0), [[10_060, "A", "a2"]]);
    clock.advance(300);
    assert.deepEqual(shown(sink, t0), [[10_060, "A", "a2"], [10_360, "B", "b1"]]);
    assert.equal(dm.queued, 0);
    dm.dispose();
    assert.equal(clock.pendingTimers, 0);
  });

  test("canDisplay() false during a boot window: the app display is held and ends up on the glasses after flush", () => {
    const clock = new ManualClock();
    const sink = displaySink(clock);
    sink.ok = false;
    const dm = new DisplayManager(clock, sink, 300, 1500);
    dm.boot("A", "App A");
    dm.request(display("A", "a1"));
    clock.advance(2000);
    assert.equal(sink.sent.length, 0);
    sink.ok = true;
    dm.flush();
    clock.advance(1000);
    const texts = sink.sent.map(({ ev }) => `${ev.packageName}:${textOf(ev.layout)}`);
    assert.equal(texts.at(-1), "A:a1", JSON.stringify(texts));
    assert.equal(dm.queued, 0);
    dm.dispose();
    assert.equal(clock.pendingTimers, 0);
  });

  test("canDisplay() false during a boot window, app displayed: a stale boot card is not shown after the window", () => {
    const clock = new ManualClock();
    const sink = displaySink(clock);
    sink.ok = false;
    const dm = new DisplayManager(clock, sink, 300, 1500);
    dm.boot("A", "App A");
    dm.request(display("A", "a1"));
    clock.advance(2000);
    sink.ok = true;
    dm.flush();
    clock.advance(1000);
    const texts = sink.sent.map(({ ev }) => `${ev.packageName}:${textOf(ev.layout)}`);
    dm.dispose();
    assert.deepEqual(texts, ["A:a1"]);
  });

  test("boot window: a dashboard-only display from the booting app still lets the boot card clear", () => {
    const clock = new ManualClock();
    const sink = displaySink(clock);
    const dm = new DisplayManager(clock, sink, 300, 1500);
    dm.boot("A", "App A");
    clock.advance(100);
    dm.request(display("A", "dash", "dashboard"));
    clock.advance(5000);
    const mainView = sink.sent.filter(({ ev }) => ev.view === "main").map(({ ev }) => `${ev.packageName}:${textOf(ev.layout)}`);
    dm.dispose();
    // The main view must not be left on "// MentraOS - Starting App" forever.
    assert.deepEqual(mainView, [`${SYSTEM_DASHBOARD}:App A`, `${SYSTEM_DASHBOARD}:`]);
  });

  test("dashboard view bypasses the throttle and the boot window", () => {
    const clock = new ManualClock();
    const t0 = clock.now();
    const sink = displaySink(clock);
    const dm = new DisplayManager(clock, sink, 300, 1500);
    dm.request(display("A", "main1"));
    clock.advance(5);
    dm.request(display("A", "dash1", "dashboard"));
    clock.advance(5);
    dm.request(display("A", "dash2", "dashboard"));
    assert.deepEqual(shown(sink, t0), [[0, "A", "main1"], [5, "A", "dash1"], [10, "A", "dash2"]]);
    clock.advance(5);
    dm.request(display("A", "main2"));
    assert.equal(sink.sent.length, 3, "main view still throttled");
    clock.advance(300);
    assert.deepEqual(shown(sink, t0).at(-1), [300, "A", "main2"]);
    dm.boot("B", "App B");
    dm.request(display("B", "dashB", "dashboard"));
    assert.equal(sink.sent.at(-1)!.ev.view, "dashboard");
    dm.dispose();
    assert.equal(clock.pendingTimers, 0);
  });

  test("forget(pkg) drops what an app had queued", () => {
    const clock = new ManualClock();
    const sink = displaySink(clock);
    const dm = new DisplayManager(clock, sink, 300, 1500);
    dm.request(display("A", "a1"));
    dm.request(display("A", "a2"));
    dm.forget("A");
    clock.advance(1000);
    assert.equal(sink.sent.length, 1);
    assert.equal(dm.latest.has("A"), false);
    dm.dispose();
    assert.equal(clock.pendingTimers, 0);
  });

  test("dispose clears every timer; nothing is sent afterwards", () => {
    const clock = new ManualClock();
    const sink = displaySink(clock);
    const dm = new DisplayManager(clock, sink, 300, 1500);
    dm.boot("A", "App A");
    dm.request(display("B", "b1"));
    dm.request(display("C", "c1"));
    assert.ok(clock.pendingTimers > 0);
    dm.dispose();
    assert.equal(clock.pendingTimers, 0);
    const before = sink.sent.length;
    dm.request(display("B", "b2"));
    dm.flush();
    dm.boot("D", "App D");
    clock.advance(10_000);
    assert.equal(sink.sent.length, before);
    assert.equal(clock.pendingTimers, 0);
    dm.dispose(); // idempotent
  });
});

// ====================================================================== MicrophoneManager

function micHarness() {
  const clock = new ManualClock();
  const t0 = clock.now();
  const state = { needs: false, sent: [] as [number, boolean][] };
  const mic = new MicrophoneManager(clock, {
    needsAudio: () => state.needs,
    sendMicState: (on) => state.sent.push([clock.now() - t0, on]),
  });
  return { clock, state, mic, t0 };
}

describe("MicrophoneManager", () => {
  test("first state goes out right after the 500 ms subscription debounce (on)", () => {
    const { clock, state, mic } = micHarness();
    state.needs = true;
    mic.requestUpdate();
    clock.advance(100);
    mic.requestUpdate(); // debounce restarts
    clock.advance(499);
    assert.deepEqual(state.sent, []);
    clock.advance(1);
    assert.deepEqual(state.sent, [[600, true]]);
    assert.equal(mic.enabled, true);
    mic.dispose();
    assert.equal(clock.pendingTimers, 0);
  });

  test("first state goes out right after the debounce even when it is off (no hold-down)", () => {
    const { clock, state, mic } = micHarness();
    mic.requestUpdate();
    clock.advance(500);
    assert.deepEqual(state.sent, [[500, false]]);
    clock.advance(20_000);
    assert.deepEqual(state.sent, [[500, false]], "no keep-alive while off");
    mic.dispose();
    assert.equal(clock.pendingTimers, 0);
  });

  test("switch-on is immediate (apply) and needs no hold-down; repeated applies do not resend", () => {
    const { clock, state, mic } = micHarness();
    mic.apply();
    assert.deepEqual(state.sent, [[0, false]]);
    clock.advance(1000);
    state.needs = true;
    mic.apply();
    assert.deepEqual(state.sent, [[0, false], [1000, true]]);
    mic.apply();
    mic.requestUpdate();
    clock.advance(500);
    assert.deepEqual(state.sent, [[0, false], [1000, true]]);
    mic.dispose();
  });

  test("switch-off waits a 3 s hold-down after the debounce", () => {
    const { clock, state, mic } = micHarness();
    state.needs = true;
    mic.apply(); // on at 0
    state.needs = false;
    mic.requestUpdate(); // apply at 500, off at 3500
    clock.advance(3499);
    assert.deepEqual(state.sent, [[0, true]]);
    clock.advance(1);
    assert.deepEqual(state.sent, [[0, true], [3500, false]]);
    assert.equal(mic.enabled, false);
    clock.advance(30_000);
    assert.deepEqual(state.sent, [[0, true], [3500, false]], "keep-alive stopped with the mic");
    mic.dispose();
    assert.equal(clock.pendingTimers, 0);
  });

  test("the hold-down is cancelled if audio is needed again before it ends", () => {
    const { clock, state, mic } = micHarness();
    state.needs = true;
    mic.apply();
    state.needs = false;
    mic.requestUpdate();
    clock.advance(2000); // hold-down running (ends at 3500)
    state.needs = true;
    mic.requestUpdate(); // apply at 2500
    clock.advance(7000); // past 3500; keep-alive at 10_000 not yet
    assert.deepEqual(state.sent, [[0, true]]);
    assert.equal(mic.enabled, true);
    mic.dispose();
    assert.equal(clock.pendingTimers, 0);
  });

  test("needsAudio flipping back just before the hold-down fires keeps the mic on", () => {
    const { clock, state, mic } = micHarness();
    state.needs = true;
    mic.apply();
    state.needs = false;
    mic.apply(); // hold-down until 3000
    clock.advance(2999);
    state.needs = true; // no requestUpdate yet: the hold-down callback re-checks
    clock.advance(1);
    assert.ok(state.sent.every(([, on]) => on), JSON.stringify(state.sent));
    mic.dispose();
  });

  test("10 s keep-alive while on", () => {
    const { clock, state, mic } = micHarness();
    state.needs = true;
    mic.requestUpdate();
    clock.advance(500); // on at 500
    clock.advance(30_000);
    assert.deepEqual(state.sent, [[500, true], [10_500, true], [20_500, true], [30_500, true]]);
    mic.dispose();
    assert.equal(clock.pendingTimers, 0);
  });

  test("reconnect: the current state is re-sent 100 ms later", () => {
    const { clock, state, mic } = micHarness();
    state.needs = true;
    mic.apply(); // on at 0
    clock.advance(1000);
    mic.onReconnect();
    clock.advance(99);
    assert.deepEqual(state.sent, [[0, true]]);
    clock.advance(1);
    assert.deepEqual(state.sent, [[0, true], [1100, true]]);
    // Off state is resynced too.
    state.needs = false;
    mic.apply();
    clock.advance(3000); // off at 4100
    mic.onReconnect();
    mic.onReconnect(); // coalesced
    clock.advance(100);
    assert.deepEqual(state.sent.slice(-2), [[4100, false], [4200, false]]);
    mic.dispose();
    assert.equal(clock.pendingTimers, 0);
  });

  test("reconnect before any state was sent computes the state instead", () => {
    const { clock, state, mic } = micHarness();
    state.needs = true;
    mic.onReconnect();
    clock.advance(100);
    assert.deepEqual(state.sent, [[100, true]]);
    mic.dispose();
  });

  test("dispose leaves no timer (debounce, hold-down, keep-alive, resync) and sends nothing more", () => {
    const { clock, state, mic } = micHarness();
    state.needs = true;
    mic.apply(); // keep-alive interval
    state.needs = false;
    mic.apply(); // hold-down
    mic.requestUpdate(); // debounce
    mic.onReconnect(); // resync
    assert.equal(clock.pendingTimers, 4);
    const before = state.sent.length;
    mic.dispose();
    assert.equal(clock.pendingTimers, 0);
    mic.requestUpdate();
    mic.onReconnect();
    mic.apply();
    clock.advance(60_000);
    assert.equal(state.sent.length, before);
    assert.equal(clock.pendingTimers, 0);
  });
});

// ====================================================================== SubscriptionManager

describe("SubscriptionManager", () => {
  test("transcription: the exact subscription string is echoed (query kept), language parsed", () => {
    const sm = new SubscriptionManager();
    sm.update("A", ["transcription:en-US?hints=a"]);
    assert.deepEqual(sm.transcriptionLanguages(), ["en-US"]);
    assert.deepEqual(sm.transcriptionTargets("en-US"), [["A", "transcription:en-US?hints=a"]]);
    assert.deepEqual(sm.transcriptionTargets("fr-FR"), []);
    assert.equal(sm.needsAudio(), true);
    assert.deepEqual(sm.get("A"), ["transcription:en-US?hints=a"]);
  });

  test("bare `transcription` is en-US; two apps with different strings each get their own", () => {
    const sm = new SubscriptionManager();
    sm.update("A", ["transcription"]);
    sm.update("B", ["transcription:en-US"]);
    sm.update("C", ["transcription:fr-FR"]);
    assert.deepEqual([...sm.transcriptionLanguages()].sort(), ["en-US", "fr-FR"]);
    assert.deepEqual(sm.transcriptionTargets("en-US"), [["A", "transcription"], ["B", "transcription:en-US"]]);
    assert.deepEqual(sm.transcriptionTargets("fr-FR"), [["C", "transcription:fr-FR"]]);
  });

  test("wildcard `*` / `all` receive every relayed stream under its own name; exact subscribers keep theirs", () => {
    const sm = new SubscriptionManager();
    sm.update("W", ["*"]);
    sm.update("X", ["all"]);
    sm.update("H", ["head_position"]);
    assert.deepEqual(sm.targets("head_position"), [["H", "head_position"], ["W", "head_position"], ["X", "head_position"]]);
    assert.deepEqual(sm.targets("button_press"), [["W", "button_press"], ["X", "button_press"]]);
    assert.equal(sm.needsAudio(), true, "wildcards include audio streams");
    // An app both exact and wildcard is listed once.
    sm.update("W", ["*", "head_position"]);
    assert.deepEqual(sm.targets("head_position").filter(([p]) => p === "W").length, 1);
    sm.remove("W");
    sm.remove("X");
    assert.deepEqual(sm.targets("button_press"), []);
    assert.equal(sm.needsAudio(), false);
  });

  test("needsAudio follows audio-dependent subscriptions; full lists replace; duplicates collapse", () => {
    const sm = new SubscriptionManager();
    assert.equal(sm.needsAudio(), false);
    sm.update("A", ["head_position", "button_press"]);
    assert.equal(sm.needsAudio(), false);
    sm.update("B", ["audio_chunk"]);
    assert.equal(sm.needsAudio(), true);
    assert.deepEqual(sm.audioChunkApps(), [["B", "audio_chunk"]]);
    sm.update("B", []);
    assert.equal(sm.needsAudio(), false);
    assert.deepEqual(sm.audioChunkApps(), []);
    for (const s of ["VAD", "translation:en-US-to-fr-FR", "transcription", "transcription:de-DE"]) {
      sm.update("C", [s]);
      assert.equal(sm.needsAudio(), true, s);
    }
    sm.update("C", ["location_update", "location_update"]);
    assert.deepEqual(sm.get("C"), ["location_update"]);
    assert.equal(sm.needsAudio(), false);
    sm.remove("C");
    sm.remove("nope");
    assert.deepEqual(sm.all(), { A: ["head_position", "button_press"], B: [] });
  });

  test("relayed streams are indexed by base name, echoing the query string", () => {
    const sm = new SubscriptionManager();
    sm.update("A", ["location_stream?rate=1s", "touch_event:double_tap"]);
    assert.deepEqual(sm.targets("location_stream"), [["A", "location_stream?rate=1s"]]);
    assert.deepEqual(sm.targets("touch_event:double_tap"), [["A", "touch_event:double_tap"]]);
    assert.deepEqual(sm.targets("touch_event"), []);
  });
});

// ====================================================================== EnergyTranscriptionProvider

interface Run {
  results: TranscriptionData[];
  errors: Error[];
  close(): void;
  write(b: Buffer): void;
}
function openRun(startEpochMs: number): Run {
  const results: TranscriptionData[] = [];
  const errors: Error[] = [];
  const stream = new EnergyTranscriptionProvider().createStream({
    language: "en-US",
    startEpochMs,
    onResult: (d) => results.push(d),
    onError: (e) => errors.push(e),
  });
  return { results, errors, close: () => stream.close(), write: (b) => stream.write(b) };
}
function feed(run: Run, pcm: Buffer, chunk = 1280): void {
  for (let o = 0; o < pcm.length; o += chunk) run.write(pcm.subarray(o, o + chunk));
}

describe("EnergyTranscriptionProvider", () => {
  const wav = readWav(WAV);
  const START = 1_700_000_000_000;
  const durationMs = (wav.pcm.length / 2 / wav.sampleRate) * 1000;

  test("real speech in 1280-byte chunks: interim results, then a final one, timed inside the clip", () => {
    assert.equal(wav.sampleRate, 16000);
    assert.equal(wav.channels, 1);
    const run = openRun(START);
    feed(run, wav.pcm);
    run.close();
    assert.deepEqual(run.errors, []);
    const finals = run.results.filter((r) => r.isFinal);
    assert.ok(finals.length >= 1, `no final result in ${JSON.stringify(run.results)}`);
    const firstFinal = run.results.findIndex((r) => r.isFinal);
    assert.ok(firstFinal > 0 && run.results.slice(0, firstFinal).every((r) => !r.isFinal), "interim results come before the first final");
    for (const r of run.results) {
      assert.equal(r.type, "transcription");
      assert.equal(r.transcribeLanguage, "en-US");
      assert.equal(r.provider, "energy");
      assert.ok(r.text.length > 0);
      assert.ok(r.startTime < r.endTime, JSON.stringify(r));
      assert.ok(r.startTime >= START && r.endTime <= START + Math.ceil(durationMs), `${r.startTime}-${r.endTime} outside the clip`);
    }
    // Interims of one utterance share its id and start; the final closes it.
    const u = finals[0]!.utteranceId;
    const sameUtt = run.results.filter((r) => r.utteranceId === u);
    assert.ok(sameUtt.every((r) => r.startTime === finals[0]!.startTime));
    assert.equal(sameUtt.at(-1), finals[0]);
  });

  test("deterministic: two runs (and other chunk sizes) give identical output", () => {
    const a = openRun(START);
    feed(a, wav.pcm);
    a.close();
    const b = openRun(START);
    feed(b, wav.pcm);
    b.close();
    assert.deepEqual(a.results, b.results);
    for (const size of [1, 333, 640, 4096, wav.pcm.length]) {
      const c = openRun(START);
      feed(c, wav.pcm, size);
      c.close();
      assert.deepEqual(c.results, a.results, `chunk size ${size}`);
    }
  });

  test("silence (all zeros) produces nothing", () => {
    const run = openRun(START);
    feed(run, Buffer.alloc(16000 * 2 * 5));
    run.close();
    assert.deepEqual(run.results, []);
    assert.deepEqual(run.errors, []);
  });

  test("close() finalises an open utterance; nothing fires after close", () => {
    const full = openRun(START);
    feed(full, wav.pcm);
    full.close();
    const firstFinal = full.results.find((r) => r.isFinal)!;
    // Cut the audio 100 ms after the first interim: the utterance is still open.
    const firstInterim = full.results.find((r) => !r.isFinal)!;
    const cutBytes = Math.round(((firstInterim.endTime - START + 100) * 16000) / 1000) * 2;
    assert.ok(cutBytes < Math.round(((firstFinal.endTime - START) * 16000) / 1000) * 2 + 400 * 32, "cut inside the utterance");
    const run = openRun(START);
    feed(run, wav.pcm.subarray(0, cutBytes));
    const before = run.results.length;
    assert.ok(before >= 1 && run.results.every((r) => !r.isFinal), JSON.stringify(run.results));
    run.close();
    assert.equal(run.results.length, before + 1);
    const fin = run.results.at(-1)!;
    assert.equal(fin.isFinal, true);
    assert.equal(fin.utteranceId, firstInterim.utteranceId);
    assert.ok(fin.startTime < fin.endTime && fin.endTime <= START + (cutBytes / 32));
    // After close: writes, more closes — no callback at all.
    feed(run, wav.pcm);
    run.close();
    run.write(Buffer.alloc(64000, 0x7f));
    assert.equal(run.results.length, before + 1);
    assert.deepEqual(run.errors, []);
  });

  test("a throwing onResult is reported through onError, not thrown into write()", () => {
    const errors: Error[] = [];
    const stream = new EnergyTranscriptionProvider().createStream({
      language: "en-US",
      startEpochMs: START,
      onResult: () => {
        throw new Error("consumer failed");
      },
      onError: (e) => errors.push(e),
    });
    assert.doesNotThrow(() => {
      for (let o = 0; o < wav.pcm.length; o += 1280) stream.write(wav.pcm.subarray(o, o + 1280));
      stream.close();
    });
    assert.ok(errors.length >= 1);
    assert.ok(errors.every((e) => e.message === "consumer failed"));
  });
});
