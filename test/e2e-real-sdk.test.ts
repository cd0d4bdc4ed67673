/**
 * End to end with the published @mentra/sdk 2.1.29 app as a child process: a simulated phone
 * connects, starts the app over REST, streams real speech over UDP; the app gets transcription and
 * its showTextWall reaches the phone; stopping calls the SDK's onStop and the phone sees it.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { readWav, type DisplayEvent } from "@mentra-cluster/protocol";
import { startSdkApp, REPO_ROOT, type SdkAppHandle } from "./helpers/sdkApp.ts";
import { appSeed, eventually, startTestPod, type TestPod } from "./helpers/pod.ts";

const WAV = path.resolve(REPO_ROOT, "..", "shared", "data", "audio", "what-time-is-it-16khz.wav");
const PKG = "com.test.e2e.transcribe";
const USER = "Alice-Smith@Example.com"; // dashes and capitals: the app session id parser must cope

let app: SdkAppHandle;
let tp: TestPod;

before(async () => {
  app = await startSdkApp({ packageName: PKG, apiKey: "e2e-key", env: { ECHO_PREFIX: "echo: " } });
  tp = await startTestPod({ seed: appSeed(PKG, app.publicUrl, "e2e-key", [USER.toLowerCase()]) });
});
after(async () => {
  await tp?.close();
  await app?.kill();
});

test("real SDK app: start over REST, speech over UDP, transcripts back as text walls, stop calls onStop", async () => {
  const phone = tp.phone(USER);
  const ack = await phone.connect();
  assert.equal(ack.sessionId, USER.toLowerCase());
  assert.equal(typeof ack.udpPort, "number");
  await phone.registerUdp();

  const started = await phone.startApp(PKG);
  assert.equal(started.status, 200, JSON.stringify(started.body));
  assert.equal(started.body.data.isRunning, true);
  const sess = await app.waitForEvent("session", 5000);
  assert.equal(sess.userId, USER.toLowerCase());
  assert.equal(sess.sessionId, `${USER.toLowerCase()}-${PKG}`);

  // The app list shows it running; the microphone is switched on for the transcription subscription.
  const list = await phone.listApps();
  assert.equal(list.body.data.find((a: { packageName: string }) => a.packageName === PKG).running, true);
  await phone.waitFor((m) => m.type === "microphone_state_change" && (m as { isMicrophoneEnabled: boolean }).isMicrophoneEnabled, 3000);

  const { pcm } = readWav(WAV);
  const stream = phone.streamPcm(pcm);
  await stream.done;
  const tr = await app.waitForEvent((e) => e.event === "transcription" && e.isFinal === true, 10_000);
  assert.ok(tr.text.length > 0);
  const display = await phone.waitFor<DisplayEvent>(
    (m) => m.type === "display_event" && (m as DisplayEvent).packageName === PKG && (m as DisplayEvent).layout.layoutType === "text_wall" && ((m as DisplayEvent).layout as { text: string }).text.startsWith("echo: "),
    5000,
  );
  assert.equal(display.view, "main");

  const stateChangesBefore = phone.received.filter((m) => m.type === "app_state_change").length;
  const stopped = await phone.stopApp(PKG);
  assert.equal(stopped.status, 200);
  assert.equal(stopped.body.data.isRunning, false);
  await app.waitForEvent("stop", 5000);
  await eventually(() => phone.received.filter((m) => m.type === "app_state_change").length > stateChangesBefore, 3000, "app_state_change");
  const list2 = await phone.listApps();
  assert.equal(list2.body.data.find((a: { packageName: string }) => a.packageName === PKG).running, false);
  assert.equal((await app.health()).activeSessions, 0);
  const intent = await tp.directory.getOrCreateUser(USER);
  assert.deepEqual(intent.runningApps, []);
});

test("real SDK, C22/C3: five phone blips within the grace period reach the app as nothing at all", async () => {
  const user = "blippy@example.com";
  await tp.directory.installApp(user, PKG);
  let phone = tp.phone(user);
  await phone.connect();
  assert.equal((await phone.startApp(PKG)).status, 200);
  await app.waitForEvent((e) => e.event === "session" && e.userId === user, 5000);
  const sessionsBefore = app.count("session");
  const stopsBefore = app.count("stop");
  const session = tp.pod.sessions.get(user)!;
  for (let i = 0; i < 5; i++) {
    phone.destroy(); // no close frame, like a network black-hole
    await eventually(() => !session.phoneConnected, 3000, "pod noticed the drop");
    phone = tp.phone(user);
    await phone.connect();
  }
  assert.equal(tp.pod.sessions.get(user), session, "same UserSession throughout");
  assert.equal(session.apps.get(PKG)?.state, "RUNNING");
  await eventually(() => session.subscriptions.get(PKG).length > 0, 3000);
  phone.send({ type: "local_transcription", text: "still here", isFinal: true });
  await app.waitForEvent((e) => e.event === "transcription" && e.text === "still here", 5000);
  assert.equal(app.count("session"), sessionsBefore, "no repeated webhook / onSession");
  assert.equal(app.count("stop"), stopsBefore, "no onStop");
});
