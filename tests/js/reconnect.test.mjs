// Reconnecting: backoff, resubscribing with recovery, final close codes, against the server
// started by tests/js_client.rs (`cargo test --test js_client`).
import { test } from "node:test";
import assert from "node:assert/strict";
import { SwitchboardError } from "../../framework/js/switchboard.js";

import { HTTP, uid, client, waitFor, nextEvent, rejects } from "./support.mjs";

const publish = (sb, topic, data, event = "said") => sb.request("publish", { topic, event, data });
/** Refuses (or accepts again) the upgrades of clients named `name`: a network outage. */
async function setBlocked(name, blocked) {
  const res = await fetch(`${HTTP}/${blocked ? "block" : "unblock"}/${name}`, { method: "POST" });
  assert.equal(res.status, 204);
}

test("after a dropped connection it reconnects with backoff and recovers what it missed", async () => {
  const topic = uid("room:r");
  const name = uid("ann");
  const backoff = { initialDelay: 20, maxDelay: 160, factor: 2, jitter: 0.5 };
  const ann = client(name, { reconnect: backoff });
  const pub = client(uid("pub"));
  await Promise.all([ann.connect(), pub.connect()]);
  const sub = await ann.subscribe(topic);
  const got = [];
  sub.on("said", (data, meta) => got.push([data.i, meta.seq]));
  const recovered = [];
  sub.on("recovered", (ok) => recovered.push(ok));
  const attempts = [];
  ann.on("reconnecting", (e) => attempts.push(e));
  const opens = [];
  ann.on("open", (e) => opens.push(e));

  for (let i = 0; i < 3; i++) await publish(pub, topic, { i });
  await waitFor("the first 3", () => got.length === 3);

  // The server drops ann (1011: retry) and refuses it until told otherwise.
  await setBlocked(name, true);
  ann.send("kick", { code: 1011, reason: "blip" });
  // Three failed attempts: ann really is away, and the delays grow.
  await waitFor("3 reconnect attempts", () => attempts.length >= 3);
  assert.equal(attempts[0].code, 1011);
  assert.equal(attempts[0].reason, "blip");
  attempts.slice(0, 3).forEach((a, k) => {
    assert.equal(a.attempt, k + 1);
    const base = Math.min(backoff.maxDelay, backoff.initialDelay * backoff.factor ** k);
    assert.ok(a.delay <= base && a.delay >= base * (1 - backoff.jitter), `attempt ${k + 1}: ${a.delay} ms`);
  });
  assert.equal(ann.state === "open", false);

  // Published while ann is away.
  for (let i = 3; i < 8; i++) await publish(pub, topic, { i });
  await setBlocked(name, false);
  await waitFor("the recovery", () => recovered.length === 1);
  assert.deepEqual(recovered, [true]);
  assert.equal(sub.recovered, true);
  assert.deepEqual(opens, [{ reconnected: true }]);
  // Replayed before the subscribe reply, so all there by now; then live ones go on.
  await publish(pub, topic, { i: 8 });
  await waitFor("all 9", () => got.length === 9);
  assert.deepEqual(
    got,
    Array.from({ length: 9 }, (_, i) => [i, i + 1]),
    "every publication once, in order",
  );
  assert.equal(sub.state, "joined");
  assert.deepEqual(sub.position, { epoch: sub.epoch, seq: 9 });
  ann.close();
  pub.close();
});

test("a gap the server no longer holds is reported as recovered: false", async () => {
  const topic = uid("small:g"); // history of 2
  const name = uid("ann");
  const ann = client(name);
  const pub = client(uid("pub"));
  await Promise.all([ann.connect(), pub.connect()]);
  const sub = await ann.subscribe(topic);
  const got = [];
  sub.on("said", (data, meta) => got.push([data.i, meta.seq]));
  await publish(pub, topic, { i: 0 });
  await waitFor("the first", () => got.length === 1);

  await setBlocked(name, true);
  const away = nextEvent(ann, "reconnecting");
  ann.send("kick", { code: 1011 });
  await away;
  for (let i = 1; i <= 5; i++) await publish(pub, topic, { i });
  const recovered = nextEvent(sub, "recovered");
  await setBlocked(name, false);
  const [ok, reply] = await recovered;
  assert.equal(ok, false, "3 of the 5 are gone: reload the state");
  assert.equal(reply.seq, 6);
  assert.equal(sub.seq, 6, "the subscription goes on from the current position");
  await publish(pub, topic, { i: 6 });
  await waitFor("the next live one", () => got.length === 2);
  assert.deepEqual(got, [
    [0, 1],
    [6, 7],
  ]);
  ann.close();
  pub.close();
});

test("requests pending when the server drops the connection reject with closed", async () => {
  const ann = client(uid("ann"));
  await ann.connect();
  const reopened = nextEvent(ann, "open");
  // The handler closes the connection and keeps its reply back.
  const err = await ann.request("kick", { code: 1011, linger_ms: 1000 }).then(
    () => assert.fail("expected a rejection"),
    (e) => e,
  );
  assert.ok(err instanceof SwitchboardError);
  assert.equal(err.code, "closed");
  assert.equal(err.closeCode, 1011);
  assert.equal(err.route, "kick");
  assert.deepEqual(await reopened, [{ reconnected: true }]);
  assert.equal(await ann.request("echo", "back"), "back");
  ann.close();
});

for (const code of [1000, 4001]) {
  test(`a server close with ${code} is final: no reconnect`, async () => {
    const ann = client(uid("ann"));
    await ann.connect();
    const sub = await ann.subscribe(uid("room:f"));
    const reconnecting = [];
    ann.on("reconnecting", (e) => reconnecting.push(e));
    const closed = nextEvent(ann, "close");
    ann.send("kick", { code, reason: "bye" });
    assert.deepEqual(await closed, [{ code, reason: "bye", reconnect: false }]);
    assert.equal(ann.state, "closed");
    assert.equal(sub.state, "closed");
    assert.deepEqual(reconnecting, []);
    await assert.rejects(ann.request("echo", 1), (e) => e.code === "closed");
  });
}

for (const code of [1012, 1001]) {
  test(`a drain's ${code} brings the client back soon (restartJitter, not backoff) and it recovers`, async () => {
    const topic = uid("room:d");
    // A backoff this slow would keep the client away for seconds: the restart delay must win.
    const ann = client(uid("ann"), { reconnect: { initialDelay: 5000, restartJitter: 150 } });
    const pub = client(uid("pub"));
    await Promise.all([ann.connect(), pub.connect()]);
    const sub = await ann.subscribe(topic);
    const got = [];
    sub.on("said", (data) => got.push(data.i));
    const recovered = [];
    sub.on("recovered", (ok) => recovered.push(ok));
    const attempts = [];
    ann.on("reconnecting", (e) => attempts.push(e));
    for (let i = 0; i < 3; i++) await publish(pub, topic, { i });
    await waitFor("the first 3", () => got.length === 3);

    ann.send("kick", { code, reason: "service restart" });
    // Published around the restart: before, during or after the reconnect.
    for (let i = 3; i < 8; i++) await publish(pub, topic, { i });
    await waitFor("the recovery", () => recovered.length === 1);
    assert.equal(attempts.length, 1);
    assert.equal(attempts[0].code, code);
    assert.ok(attempts[0].delay <= 150, `reconnected after ${attempts[0].delay} ms`);
    assert.deepEqual(recovered, [true]);
    await waitFor("all 8", () => got.length === 8);
    assert.deepEqual(got, [0, 1, 2, 3, 4, 5, 6, 7]);
    ann.close();
    pub.close();
  });
}

test("maxAttempts: the client gives up after that many failed attempts", async () => {
  const name = uid("ann");
  const ann = client(name, { reconnect: { initialDelay: 10, maxDelay: 40, maxAttempts: 2 } });
  await ann.connect();
  await setBlocked(name, true);
  try {
    const closes = [];
    ann.on("close", (e) => closes.push(e));
    ann.send("kick", { code: 1011 });
    await waitFor("the last close", () => closes.some((c) => !c.reconnect));
    // The drop, then two failed attempts (1006), the second one final.
    assert.deepEqual(
      closes.map((c) => [c.code, c.reconnect]),
      [
        [1011, true],
        [1006, true],
        [1006, false],
      ],
    );
    assert.equal(ann.state, "closed");
  } finally {
    await setBlocked(name, false);
  }
});

test("close() while reconnecting stops the attempts", async () => {
  const name = uid("ann");
  const ann = client(name);
  await ann.connect();
  await setBlocked(name, true);
  try {
    const away = nextEvent(ann, "reconnecting");
    ann.send("kick", { code: 1011 });
    await away;
    const events = [];
    for (const e of ["open", "reconnecting", "close"]) ann.on(e, (x) => events.push([e, x]));
    await ann.close();
    assert.equal(ann.state, "closed");
    assert.deepEqual(events, [["close", { code: 1000, reason: "", reconnect: false }]]);
  } finally {
    await setBlocked(name, false);
  }
});
