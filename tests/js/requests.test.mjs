// Requests, replies, errors, timeouts, pushes, fire-and-forget and closing, against the server
// started by tests/js_client.rs (`cargo test --test js_client`).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { Switchboard, SwitchboardError } from "../../framework/js/switchboard.js";

import { HTTP, TRANSPORT, uid, client, closeAfter, waitFor, nextEvent, rejects } from "./support.mjs";

test("the served module is this file", async () => {
  const res = await fetch(`${HTTP}/switchboard.js`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type"), /^text\/javascript/);
  const file = readFileSync(new URL("../../framework/js/switchboard.js", import.meta.url), "utf8");
  assert.equal(await res.text(), file);
});

test("request resolves with the reply's data", async () => {
  const sb = client(uid("req"));
  assert.equal(sb.transport, null);
  const transports = [];
  sb.on("transport", (t) => transports.push(t));
  await sb.connect();
  assert.equal(sb.state, "open");
  assert.equal(sb.transport, TRANSPORT, "the suite's transport is the one in use");
  assert.deepEqual(transports, [TRANSPORT]);
  assert.deepEqual(await sb.request("echo", { hello: "world" }), { hello: "world" });
  assert.equal(await sb.request("echo", 42), 42);
  assert.equal(await sb.request("echo", "text"), "text");
  assert.equal(await sb.request("echo"), null, "absent data reads as null");
  sb.close();
});

test("concurrent requests each get their own reply", async () => {
  const sb = client(uid("conc"));
  await sb.connect();
  const replies = await Promise.all(Array.from({ length: 25 }, (_, i) => sb.request("echo", { i })));
  assert.deepEqual(replies, Array.from({ length: 25 }, (_, i) => ({ i })));
  sb.close();
});

test("error replies reject with code, message and field", async () => {
  const sb = client(uid("err"));
  await sb.connect();
  await rejects(sb.request("fail"), (e) => {
    assert.equal(e.code, "room_full");
    assert.equal(e.message, "lobby is full");
    assert.equal(e.route, "fail");
    assert.equal(e.field, undefined);
  });
  await rejects(sb.request("typed", { n: "five" }), (e) => {
    assert.equal(e.code, "bad_payload");
    assert.equal(e.field, "n");
  });
  await rejects(sb.request("nope"), (e) => assert.equal(e.code, "unknown_route"));
  // The connection is still fine.
  assert.equal(await sb.request("typed", { n: 5 }), 5);
  sb.close();
});

test("a request without a reply in time rejects with timeout; the late reply is dropped", async () => {
  const sb = client(uid("slow"));
  await sb.connect();
  await rejects(sb.request("slow", { ms: 300 }, { timeout: 30 }), (e) => {
    assert.equal(e.code, "timeout");
    assert.equal(e.route, "slow");
  });
  // Handled after the slow one (one message at a time): its late reply came and went first.
  assert.equal(await sb.request("echo", "after"), "after");
  sb.close();
});

test("server pushes reach on() listeners until off()", async () => {
  const sb = client(uid("push"));
  await sb.connect();
  const ticks = [];
  const listener = (data) => ticks.push(data.i);
  sb.on("tick", listener);
  assert.equal(await sb.request("push", { event: "tick", n: 3 }), 3);
  await waitFor("3 ticks", () => ticks.length === 3);
  assert.deepEqual(ticks, [0, 1, 2]);
  sb.off("tick", listener);
  const other = [];
  const off = sb.on("tock", (data) => other.push(data.i));
  await sb.request("push", { event: "tick", n: 2 });
  await sb.request("push", { event: "tock", n: 1 });
  await waitFor("a tock", () => other.length === 1);
  assert.deepEqual(ticks, [0, 1, 2], "no ticks after off()");
  off();
  sb.close();
});

test("send() is fire-and-forget: answers come as reply and error events", async () => {
  const sb = client(uid("send"));
  assert.throws(() => sb.send("echo", 1), (e) => e instanceof SwitchboardError && e.code === "closed");
  await rejects(sb.request("echo", 1), (e) => assert.equal(e.code, "closed"));
  await sb.connect();
  const reply = nextEvent(sb, "reply");
  sb.send("echo", { a: 1 });
  assert.deepEqual(await reply, [{ a: 1 }, "echo"]);
  const error = nextEvent(sb, "error");
  sb.send("fail");
  const [err] = await error;
  assert.ok(err instanceof SwitchboardError);
  assert.equal(err.code, "room_full");
  assert.equal(err.route, "fail");
  sb.close();
});

test("close() is clean: pending requests reject, nothing reconnects", async () => {
  const sb = client(uid("close"));
  await sb.connect();
  const events = [];
  for (const name of ["open", "close", "reconnecting"]) sb.on(name, (e) => events.push([name, e]));
  const pending = sb.request("slow", { ms: 2000 });
  const closed = sb.close();
  await rejects(pending, (e) => assert.equal(e.code, "closed"));
  await closed;
  assert.equal(sb.state, "closed");
  assert.deepEqual(events, [["close", { code: 1000, reason: "", reconnect: false }]]);
  await rejects(sb.request("echo", 1), (e) => assert.equal(e.code, "closed"));
  await rejects(sb.subscribe("room:after-close"), (e) => assert.equal(e.code, "closed"));
  // connect() starts over.
  await sb.connect();
  assert.equal(await sb.request("echo", "again"), "again");
  sb.close();
});

test("connect() rejects when the first attempt fails and reconnect is off", async () => {
  const name = uid("refused");
  await fetch(`${HTTP}/block/${name}`, { method: "POST" });
  try {
    const sb = client(name, { reconnect: false });
    await rejects(sb.connect(), (e) => assert.equal(e.code, "closed"));
    assert.equal(sb.state, "closed");
  } finally {
    await fetch(`${HTTP}/unblock/${name}`, { method: "POST" });
  }
});

test("the route key option shapes the envelope (no server)", async () => {
  // A stand-in socket that records frames and answers the first request.
  class FakeSocket extends EventTarget {
    static last;
    constructor(url) {
      super();
      this.url = url;
      this.sent = [];
      this.readyState = 0;
      FakeSocket.last = this;
      queueMicrotask(() => {
        this.readyState = 1;
        this.dispatchEvent(new Event("open"));
      });
    }
    send(text) {
      this.sent.push(JSON.parse(text));
    }
    reply(frame) {
      this.dispatchEvent(Object.assign(new Event("message"), { data: JSON.stringify(frame) }));
    }
    close(code = 1000) {
      this.readyState = 3;
      this.dispatchEvent(Object.assign(new Event("close"), { code, reason: "" }));
    }
  }
  const sb = new Switchboard("ws://example.invalid/ws", { WebSocket: FakeSocket, routeKey: "meta.action" });
  await sb.connect();
  const reply = sb.request("join", { room: "a" });
  sb.send("leave");
  const [first, second] = FakeSocket.last.sent;
  assert.deepEqual(first, { meta: { action: "join" }, ref: first.ref, data: { room: "a" } });
  assert.deepEqual(second, { meta: { action: "leave" } });
  FakeSocket.last.reply({ ref: first.ref, ok: true, data: "joined" });
  assert.equal(await reply, "joined");
  // Replies to messages without a ref carry the path's last segment.
  const noRef = nextEvent(sb, "reply");
  FakeSocket.last.reply({ action: "leave", data: 1 });
  assert.deepEqual(await noRef, [1, "leave"]);
  sb.close();

  const api = new Switchboard("ws://example.invalid/ws", { WebSocket: FakeSocket, routeKey: "$request.body.action" });
  await api.connect();
  api.send("ping", 1);
  assert.deepEqual(FakeSocket.last.sent[0], { action: "ping", data: 1 });
  api.close();
});

test("binary frames arrive as ArrayBuffers", async () => {
  const sb = client(uid("bin"));
  await sb.connect();
  const got = nextEvent(sb, "binary");
  assert.equal(await sb.request("bytes", 200), 200);
  const [buf] = await got;
  assert.ok(buf instanceof ArrayBuffer, `an ArrayBuffer, got ${buf}`);
  assert.deepEqual([...new Uint8Array(buf)], Array.from({ length: 200 }, (_, i) => i));
  sb.close();
});

test("an idle connection stays up through the server's heartbeat", async () => {
  // Pings every 100 ms; a client that does not answer is closed after 600 ms.
  const url = process.env.SWITCHBOARD_HEARTBEAT_URL;
  const sb = closeAfter(new Switchboard(`${url}?name=${uid("idle")}`, { transport: TRANSPORT, reconnect: false }));
  const closes = [];
  sb.on("close", (e) => closes.push(e));
  await sb.connect();
  // Idle for three idle timeouts: the length of time is what is tested.
  await new Promise((resolve) => setTimeout(resolve, 1800));
  assert.deepEqual(closes, []);
  assert.equal(await sb.request("echo", "still here"), "still here");
  sb.close();
});
