// Choosing the transport: "auto" falls back to HTTP when WebSocket upgrades fail or hang, and
// moves back to a WebSocket when one opens; a buffered stream is reported; the HTTP transport's
// upstream POSTs are retried safely. Against the server started by tests/js_client.rs; these
// tests pick their transports themselves, so they run once (in the suite's websocket run).
import { test } from "node:test";
import assert from "node:assert/strict";

import { WS, HTTP, TRANSPORT, uid, client, waitFor, nextEvent, rejects } from "./support.mjs";
import { Switchboard } from "../../framework/js/switchboard.js";

const once = { skip: TRANSPORT !== "websocket" && "transport-independent: runs in the websocket run" };
const publish = (sb, topic, data, event = "said") => sb.request("publish", { topic, event, data });
/** Refuses, leaves unanswered or lets through the WebSocket upgrades of clients named `name`. */
async function upgrades(what, name) {
  const res = await fetch(`${HTTP}/upgrades/${what}/${name}`, { method: "POST" });
  assert.equal(res.status, 204);
}

test("auto: a refused upgrade falls back to HTTP, which works; a WebSocket takes over when it can", once, async () => {
  const name = uid("ann");
  const topic = uid("room:t");
  await upgrades("refuse", name);
  let tries = 0;
  const Counted = class extends WebSocket {
    constructor(url) {
      super(url);
      tries += 1;
    }
  };
  const ann = client(name, { transport: "auto", websocketRetryMs: 100, WebSocket: Counted });
  const pub = client(uid("pub"), { transport: "websocket" });
  const transports = [];
  ann.on("transport", (t) => transports.push(t));
  const opens = [];
  ann.on("open", (e) => opens.push(e));
  const closes = [];
  ann.on("close", (e) => closes.push(e));
  await Promise.all([ann.connect(), pub.connect()]);
  assert.equal(ann.transport, "http");
  assert.deepEqual(transports, ["http"]);
  assert.deepEqual(opens, [{ reconnected: false }]);
  assert.deepEqual(await ann.request("echo", { over: "http" }), { over: "http" });

  const sub = await ann.subscribe(topic);
  const got = [];
  sub.on("said", (data, meta) => got.push([data.i, meta.seq]));
  const recovered = [];
  sub.on("recovered", (ok) => recovered.push(ok));
  for (let i = 0; i < 3; i++) await publish(pub, topic, { i });
  await waitFor("3 deliveries over HTTP", () => got.length === 3);
  // The background WebSocket tries keep failing meanwhile: still on HTTP, nothing dropped.
  await waitFor("3 background tries", () => tries >= 4);
  assert.equal(ann.transport, "http");
  assert.deepEqual(closes, []);

  await upgrades("allow", name);
  for (let i = 3; i < 6; i++) await publish(pub, topic, { i });
  await waitFor("the move to a WebSocket", () => ann.transport === "websocket");
  assert.deepEqual(transports, ["http", "websocket"]);
  await waitFor("the recovery", () => recovered.length === 1);
  assert.deepEqual(recovered, [true]);
  assert.deepEqual(opens, [{ reconnected: false }, { reconnected: true }]);
  assert.deepEqual(closes, [], "the move is not a drop");
  await publish(pub, topic, { i: 6 });
  await waitFor("all 7", () => got.length === 7);
  assert.deepEqual(
    got,
    Array.from({ length: 7 }, (_, i) => [i, i + 1]),
    "every publication once, in order, across the move",
  );
  assert.deepEqual(await ann.request("echo", { over: "ws" }), { over: "ws" });
  ann.close();
  pub.close();
});

test("auto: an upgrade that never answers falls back after fallbackAfterMs", once, async () => {
  const name = uid("bob");
  await upgrades("hang", name);
  try {
    const bob = client(name, { transport: "auto", fallbackAfterMs: 300 });
    const started = Date.now();
    await bob.connect();
    const took = Date.now() - started;
    assert.equal(bob.transport, "http");
    assert.ok(took >= 300, `fell back after ${took} ms`);
    assert.equal(await bob.request("echo", 1), 1);
    bob.close();
  } finally {
    await upgrades("allow", name);
  }
});

test("auto: once a WebSocket worked, a later failure does not fall back", once, async () => {
  const name = uid("cy");
  const cy = client(name, { transport: "auto" });
  const transports = [];
  cy.on("transport", (t) => transports.push(t));
  await cy.connect();
  assert.equal(cy.transport, "websocket");
  await upgrades("refuse", name);
  try {
    const attempts = [];
    cy.on("reconnecting", (e) => attempts.push(e));
    cy.send("kick", { code: 1011 });
    await waitFor("3 failed attempts", () => attempts.length >= 3);
  } finally {
    await upgrades("allow", name);
  }
  await waitFor("the reconnection", () => cy.state === "open");
  assert.equal(cy.transport, "websocket");
  assert.deepEqual(transports, ["websocket"]);
});

test("forced websocket: a refused upgrade is retried, never replaced by HTTP", once, async () => {
  const name = uid("dee");
  await upgrades("refuse", name);
  try {
    const dee = client(name, { transport: "websocket", reconnect: false });
    await rejects(dee.connect(), (e) => assert.equal(e.code, "closed"));
    assert.equal(dee.transport, null);
  } finally {
    await upgrades("allow", name);
  }
});

test("a stream that sends nothing is reported as stream_buffered and fails the attempt", once, async () => {
  const url = process.env.SWITCHBOARD_SILENT_URL;
  const sb = new Switchboard(url, { transport: "http", streamOpenTimeoutMs: 250, reconnect: false });
  const errors = [];
  sb.on("error", (e) => errors.push(e));
  const closes = [];
  sb.on("close", (e) => closes.push(e));
  const started = Date.now();
  await rejects(sb.connect(), (e) => {
    assert.equal(e.code, "closed");
    assert.equal(e.closeCode, 1006);
  });
  assert.ok(Date.now() - started >= 250);
  assert.deepEqual(
    errors.map((e) => e.code),
    ["stream_buffered"],
  );
  assert.deepEqual(closes, [{ code: 1006, reason: "stream_buffered", reconnect: false }]);
});

test("http: a refused connect reports the server's error code as the close reason", once, async () => {
  const name = uid("eve");
  await fetch(`${HTTP}/block/${name}`, { method: "POST" });
  try {
    const sb = client(name, { transport: "http", reconnect: false });
    const closed = nextEvent(sb, "close");
    await rejects(sb.connect(), (e) => assert.equal(e.closeCode, 1006));
    assert.deepEqual(await closed, [{ code: 1006, reason: "blocked", reconnect: false }]);
  } finally {
    await fetch(`${HTTP}/unblock/${name}`, { method: "POST" });
  }
});

test("http: a POST whose answer is lost is sent again with the same seq and handled once", once, async () => {
  const topic = uid("room:p");
  const posts = [];
  let lose = true;
  // The network drops the answer to the first POST carrying a publish: the server got it.
  const lossy = async (input, init) => {
    const res = await fetch(input, init);
    if (init?.method === "POST") {
      posts.push([init.headers["switchboard-seq"], String(init.body)]);
      if (lose && String(init.body).includes('"publish"')) {
        lose = false;
        throw new TypeError("fetch failed (the test dropped the answer)");
      }
    }
    return res;
  };
  const ann = client(uid("ann"), { transport: "http", fetch: lossy });
  await ann.connect();
  const sub = await ann.subscribe(topic);
  const got = [];
  sub.on("said", (data) => got.push(data));
  await publish(ann, topic, "once");
  await publish(ann, topic, "then");
  await waitFor("both", () => got.length >= 2);
  assert.deepEqual(got, ["once", "then"], "the repeated batch was not handled twice");
  const seqs = posts.map(([seq]) => Number(seq));
  const first = posts.findIndex(([, body]) => body.includes('"once"'));
  assert.equal(posts[first + 1][0], posts[first][0], "the retry carries the same seq");
  // Otherwise one more per batch, from 0.
  const distinct = [...new Set(seqs)];
  assert.deepEqual(distinct, Array.from({ length: distinct.length }, (_, i) => i));
  ann.close();
});

test("http: frames sent while a POST is under way go together in the next one", once, async () => {
  const bodies = [];
  const watching = async (input, init) => {
    if (init?.method === "POST") bodies.push(JSON.parse(String(init.body)));
    return fetch(input, init);
  };
  const sb = client(uid("fay"), { transport: "http", fetch: watching });
  await sb.connect();
  const replies = await Promise.all(Array.from({ length: 30 }, (_, i) => sb.request("echo", i)));
  assert.deepEqual(replies, Array.from({ length: 30 }, (_, i) => i));
  const sent = bodies.filter((b) => b.length > 0);
  assert.equal(sent.flat().length, 30, "each frame once");
  assert.equal(sent[0].length, 1, "the first goes at once");
  assert.ok(sent.length < 30, `batched: ${sent.map((b) => b.length)}`);
  assert.deepEqual(
    sent.flat().map((f) => f.data),
    Array.from({ length: 30 }, (_, i) => i),
    "in order",
  );
  sb.close();
});

test("http: close() ends the connection on the server (DELETE) after what was sent", once, async () => {
  const topic = uid("room:c");
  const methods = [];
  const watching = async (input, init) => {
    methods.push(init?.method ?? "GET");
    return fetch(input, init);
  };
  const pub = client(uid("pub"), { transport: "websocket" });
  await pub.connect();
  const seen = await pub.subscribe(topic);
  const got = [];
  seen.on("said", (d) => got.push(d));
  const sb = client(uid("gus"), { transport: "http", fetch: watching });
  await sb.connect();
  sb.send("publish", { topic, event: "said", data: "last words" });
  await sb.close();
  assert.equal(methods.at(-1), "DELETE");
  await waitFor("the frame sent before close()", () => got.length === 1);
  assert.deepEqual(got, ["last words"]);
  pub.close();
});

test("the WebSocket URL's query and token go on the stream URL", once, async () => {
  const urls = [];
  const watching = async (input, init) => {
    if (!init?.method) urls.push(String(input));
    return fetch(input, init);
  };
  const name = uid("hal");
  const sb = client(name, { transport: "http", fetch: watching, getToken: () => "t/k n", tokenParam: "tk" });
  await sb.connect();
  const u = new URL(urls[0]);
  assert.equal(`${u.protocol}//${u.host}${u.pathname}`, WS.replace(/^ws/, "http"));
  assert.equal(u.searchParams.get("name"), name);
  assert.equal(u.searchParams.get("tk"), "t/k n");
  sb.close();
});

test("the stream reader: CRLF, CR, comments, multi-line data, events split anywhere (no server)", once, async () => {
  const opening = ": padding to get past proxies\n\n" + 'event: open\ndata: {"id":"c1","secret":"s3cret","ping":30000}\n\n';
  const rest =
    `data: {"event":"hello","data":"a"}\n\n` +
    // A frame text with a newline in it comes as two data lines, joined with "\n" again.
    `data: {"event":"multi",\ndata:"data":"line one\\nline two"}\n\n` +
    `: a comment\r\ndata: {"event":"crlf","data":"x"}\r\n\r\n` +
    `data: {"event":"cr","data":"y"}\r\rid: 7\nretry: 10\n` +
    `event: binary\ndata: AAEC/w==\n\n` +
    `data: {"event":"ünïcödé","data":"✓"}\n\n` +
    'event: close\ndata: {"code":4001,"reason":"done"}\n\n';
  // Cut into 1- to 3-byte chunks: CRLFs, UTF-8 sequences and lines all split somewhere.
  const cut = (text) => {
    const bytes = new TextEncoder().encode(text);
    const chunks = [];
    for (let i = 0, n = 1; i < bytes.length; i += n, n = (n % 3) + 1) chunks.push(bytes.slice(i, i + n));
    return chunks;
  };
  const chunks = cut(opening);
  const later = cut(rest);
  let release;
  const released = new Promise((resolve) => (release = resolve));
  const requests = [];
  const fake = async (input, init = {}) => {
    requests.push([init.method ?? "GET", init.headers ?? {}, init.body]);
    if (init.method) return new Response(null, { status: 204 });
    const body = new ReadableStream({
      async pull(controller) {
        if (chunks.length === 0) {
          // The rest once the test has sent its frame.
          await released;
          chunks.push(...later.splice(0));
        }
        const next = chunks.shift();
        if (next) controller.enqueue(next);
        else controller.close();
      },
    });
    return new Response(body, { status: 200, headers: { "content-type": "text/event-stream" } });
  };
  const sb = new Switchboard("ws://example.invalid/ws", { transport: "http", fetch: fake, reconnect: false });
  const got = [];
  for (const event of ["hello", "multi", "crlf", "cr", "ünïcödé"]) sb.on(event, (d) => got.push([event, d]));
  sb.on("binary", (b) => got.push(["binary", [...new Uint8Array(b)]]));
  const closed = nextEvent(sb, "close");
  await sb.connect();
  assert.equal(sb.transport, "http");
  sb.send("echo", 1);
  release();
  assert.deepEqual(await closed, [{ code: 4001, reason: "done", reconnect: false }]);
  assert.deepEqual(got, [
    ["hello", "a"],
    ["multi", "line one\nline two"],
    ["crlf", "x"],
    ["cr", "y"],
    ["binary", [0, 1, 2, 255]],
    ["ünïcödé", "✓"],
  ]);
  assert.equal(requests[0][0], "GET");
  assert.equal(requests[0][1].accept, "text/event-stream");
  const post = requests.find(([method]) => method === "POST");
  assert.ok(post, "the send went up in a POST");
  assert.deepEqual(
    [post[1]["switchboard-connection"], post[1]["switchboard-secret"], post[1]["switchboard-seq"]],
    ["c1", "s3cret", "0"],
  );
  assert.deepEqual(JSON.parse(post[2]), [{ type: "echo", data: 1 }]);
});

test("http: a frame over the server's size limit rejects its request; the connection goes on", once, async () => {
  const sb = client(uid("ivy"), { transport: "http" });
  const closes = [];
  sb.on("close", (e) => closes.push(e));
  await sb.connect();
  // The first goes at once; the other two wait and go together, and the server refuses that
  // batch whole (413) for its big frame: the small one must still get through.
  const first = sb.request("echo", "first");
  const big = rejects(sb.request("echo", "x".repeat(70 * 1024)), (e) => {
    // max_frame_size is 64 KiB
    assert.equal(e.code, "payload_too_large");
    assert.equal(e.route, "echo");
  });
  const after = sb.request("echo", "after");
  const results = await Promise.allSettled([first, big, after]);
  assert.deepEqual(
    results.map((r) => r.status),
    ["fulfilled", "fulfilled", "fulfilled"],
    JSON.stringify(results.map((r) => r.reason?.message)),
  );
  assert.equal(results[0].value, "first");
  assert.equal(results[2].value, "after");
  assert.equal(await sb.request("echo", "still open"), "still open");
  assert.deepEqual(closes, []);
  sb.close();
});

test("http: POSTs that keep failing are given up after a bounded number of tries; the client reconnects", once, async () => {
  const posts = [];
  let down = false;
  // The upstream path breaks (the stream still flows), then heals.
  const flaky = async (input, init) => {
    if (init?.method === "POST") {
      posts.push(init.headers["switchboard-seq"]);
      if (down) throw new TypeError("fetch failed (the test's broken upstream)");
    }
    return fetch(input, init);
  };
  const sb = client(uid("jo"), { transport: "http", fetch: flaky });
  await sb.connect();
  assert.equal(await sb.request("echo", 1), 1);
  const before = posts.length;
  down = true;
  const closed = nextEvent(sb, "close");
  const lost = sb.request("echo", 2, { timeout: 0 });
  const [info] = await closed;
  assert.deepEqual(info, { code: 1006, reason: "upstream_failed", reconnect: true });
  await rejects(lost, (e) => assert.equal(e.code, "closed"));
  const tries = posts.slice(before);
  assert.equal(tries.length, 5, `tries: ${tries}`);
  assert.equal(new Set(tries).size, 1, "every try carries the same seq");
  down = false;
  await nextEvent(sb, "open");
  assert.equal(await sb.request("echo", 3), 3);
});

test("http: a stream that does not begin with `open` is a failed attempt (no server)", once, async () => {
  const fake = async () =>
    new Response('data: {"event":"early"}\n\n', { status: 200, headers: { "content-type": "text/event-stream" } });
  const sb = new Switchboard("ws://example.invalid/ws", { transport: "http", fetch: fake, reconnect: false });
  const errors = [];
  sb.on("error", (e) => errors.push(e.code));
  await rejects(sb.connect(), (e) => assert.equal(e.closeCode, 1002));
  assert.deepEqual(errors, ["bad_frame"]);
});
