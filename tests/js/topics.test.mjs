// Topics: subscribe, deliveries, unsubscribe, join rules, `last`, presence, against the server
// started by tests/js_client.rs (`cargo test --test js_client`).
import { test } from "node:test";
import assert from "node:assert/strict";
import { Presence } from "../../framework/js/switchboard.js";

import { uid, client, waitFor, rejects } from "./support.mjs";

/** Publishes through the `publish` handler: `data` on `topic` as `event`. */
const publish = (sb, topic, data, event = "said") => sb.request("publish", { topic, event, data });

test("subscribe, ordered deliveries with their position, unsubscribe", async () => {
  const topic = uid("room:t");
  const ann = client(uid("ann"));
  const bob = client(uid("bob"));
  await Promise.all([ann.connect(), bob.connect()]);
  const sub = await ann.subscribe(topic);
  assert.equal(sub.topic, topic);
  assert.equal(sub.state, "joined");
  assert.equal(typeof sub.epoch, "string", "room:* topics have history");
  assert.equal(sub.seq, 0);
  assert.equal(await ann.subscribe(topic), sub, "subscribing twice gives the same subscription");
  const said = [];
  const all = [];
  sub.on("said", (data, meta) => said.push([data, meta]));
  sub.on("*", (data, meta) => all.push(meta.event));
  for (let i = 0; i < 3; i++) await publish(bob, topic, { i });
  await waitFor("3 deliveries", () => said.length === 3);
  said.forEach(([data, meta], i) => {
    assert.deepEqual(data, { i });
    assert.deepEqual(meta, { topic, event: "said", epoch: sub.epoch, seq: i + 1 });
  });
  assert.deepEqual(all.filter((e) => e === "said").length, 3, `"*" sees them too: ${all}`);
  assert.deepEqual(sub.position, { epoch: sub.epoch, seq: 3 });

  // Unsubscribed: the server stops sending. Bob getting the next publication means the broker
  // handled it; ann subscribing again afterwards would receive a stray copy before its
  // subscribe reply, that is in the new subscription, whose listeners see the held frames.
  const bobs = [];
  (await bob.subscribe(topic)).on("said", (d) => bobs.push(d.i));
  await sub.unsubscribe();
  assert.equal(sub.state, "closed");
  await publish(bob, topic, { i: 3 });
  await waitFor("bob got the 4th", () => bobs.includes(3));
  const again = await ann.subscribe(topic);
  assert.notEqual(again, sub);
  const later = [];
  again.on("said", (d) => later.push(d.i));
  await publish(bob, topic, { i: 4 });
  await waitFor("ann sees the 5th", () => later.length === 1);
  assert.deepEqual(later, [4], "nothing published while unsubscribed");
  assert.equal(said.length, 3, "the old subscription's listeners got nothing more");
  ann.close();
  bob.close();
});

test("a topic no join rule allows is refused", async () => {
  const sb = client(uid("refused"));
  await sb.connect();
  await rejects(sb.subscribe("secret:x"), (e) => {
    assert.equal(e.code, "forbidden");
    assert.equal(e.route, "subscribe");
  });
  await rejects(sb.subscribe("secret:x"), (e) => assert.equal(e.code, "forbidden"));
  sb.close();
});

test("subscribe() before connect() goes out when the connection opens", async () => {
  const topic = uid("room:early");
  const sb = client(uid("early"));
  const pending = sb.subscribe(topic);
  await sb.connect();
  const sub = await pending;
  assert.equal(sub.state, "joined");
  const got = [];
  sub.on("said", (d) => got.push(d));
  await publish(sb, topic, "hello");
  await waitFor("the delivery", () => got.length === 1);
  assert.deepEqual(got, ["hello"]);
  sb.close();
});

test("last: N replays recent publications, to listeners added right after await", async () => {
  const topic = uid("room:last");
  const bob = client(uid("bob"));
  await bob.connect();
  await bob.subscribe(topic); // keeps the topic (and its history) alive
  for (let i = 0; i < 5; i++) await publish(bob, topic, { i });
  const ann = client(uid("ann"));
  await ann.connect();
  const sub = await ann.subscribe(topic, { last: 3 });
  // Replayed before the subscribe reply, held until now.
  const got = [];
  sub.on("said", (data, meta) => got.push([data.i, meta.seq]));
  await publish(bob, topic, { i: 5 });
  await waitFor("4 deliveries", () => got.length === 4);
  assert.deepEqual(got, [
    [2, 3],
    [3, 4],
    [4, 5],
    [5, 6],
  ]);
  ann.close();
  bob.close();
});

test("presence: state and diffs through the Presence helper, two clients", async () => {
  const topic = uid("room:p");
  const [annName, bobName] = [uid("ann"), uid("bob")];
  const ann = client(annName);
  const bob = client(bobName);
  await Promise.all([ann.connect(), bob.connect()]);
  const annSub = await ann.subscribe(topic);
  const annPresence = new Presence(annSub);
  const changes = [];
  annPresence.onChange((list, diff) => changes.push({ list, diff }));
  const keys = (p) => p.list().map((e) => e.key).sort();
  // The state (with ann itself) arrived before the subscribe reply.
  await waitFor("ann in ann's presence", () => annPresence.get(annName));
  assert.deepEqual(annPresence.get(annName), [{ name: annName }]);

  const bobSub = await bob.subscribe(topic);
  const bobPresence = bobSub.presence();
  await waitFor("both in bob's presence", () => keys(bobPresence).length === 2);
  assert.deepEqual(keys(bobPresence), [annName, bobName].sort());
  await waitFor("bob's join in ann's presence", () => annPresence.get(bobName));
  assert.deepEqual(keys(annPresence), [annName, bobName].sort());
  const join = changes.find((c) => c.diff.joins.some((j) => j.key === bobName));
  assert.ok(join, "onChange reported bob's join");
  assert.deepEqual(join.diff.joins, [{ key: bobName, metas: [{ name: bobName }] }]);

  bob.close();
  await waitFor("bob's leave", () => !annPresence.get(bobName));
  assert.deepEqual(annPresence.list(), [{ key: annName, metas: [{ name: annName }] }]);
  const leave = changes.find((c) => c.diff.leaves.some((l) => l.key === bobName));
  assert.ok(leave, "onChange reported bob's leave");
  assert.deepEqual(leave.list, [{ key: annName, metas: [{ name: annName }] }]);
  ann.close();
});

test("since: a saved position picks up where an earlier subscription left off", async () => {
  const topic = uid("room:since");
  const bob = client(uid("bob"));
  await bob.connect();
  await bob.subscribe(topic); // keeps the topic (and its history) alive
  const ann = client(uid("ann"));
  await ann.connect();
  const first = await ann.subscribe(topic);
  const seen = [];
  first.on("said", (d) => seen.push(d.i));
  for (let i = 0; i < 2; i++) await publish(bob, topic, { i });
  await waitFor("the first 2", () => seen.length === 2);
  const saved = first.position; // e.g. kept in sessionStorage over a page reload
  await first.unsubscribe();
  for (let i = 2; i < 4; i++) await publish(bob, topic, { i });

  const again = await ann.subscribe(topic, { since: saved });
  const later = [];
  const outcome = [];
  again.on("said", (d, meta) => later.push([d.i, meta.seq]));
  again.on("recovered", (ok) => outcome.push(ok));
  await waitFor("the recovery", () => outcome.length === 1);
  assert.deepEqual(outcome, [true]);
  assert.deepEqual(later, [
    [2, 3],
    [3, 4],
  ]);
  ann.close();
  bob.close();
});
