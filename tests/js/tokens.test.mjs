// Tokens that expire: getToken at connect, at refresh and before each reconnect (a fresh one
// after "token expired"), and per-topic tokens, against the `/wst` channel of
// tests/js_client.rs: a token `<name>:<ms>` expires after `ms`.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { Switchboard } from "../../framework/js/switchboard.js";

import { uid, waitFor, nextEvent, TRANSPORT } from "./support.mjs";

const URL = process.env.SWITCHBOARD_TOKENS_URL;
if (!URL) throw new Error("run through `cargo test --test js_client` (SWITCHBOARD_TOKENS_URL is unset)");
const clients = [];
function tokenClient(getToken, options = {}) {
  const sb = new Switchboard(URL, {
    timeout: 3000,
    reconnect: { initialDelay: 20, maxDelay: 160 },
    getToken,
    transport: TRANSPORT,
    ...options,
  });
  clients.push(sb);
  return sb;
}
after(() => Promise.all(clients.map((c) => c.close())));

test("getToken gives the token at connect and answers the server's refresh requests", async () => {
  const name = uid("ann");
  const asked = [];
  // Short-lived (the server asks again at half of it), yet long enough for a connect and a
  // request over either transport on a loaded machine.
  const life = 800;
  const sb = tokenClient(({ reason }) => {
    asked.push(reason);
    return `${name}${asked.length}:${life}`;
  });
  const closes = [];
  sb.on("close", (e) => closes.push(e));
  const asks = [];
  sb.on("refresh", (e) => asks.push(e));
  const dones = [];
  sb.on("refreshed", (e) => dones.push(e));
  const opened = Date.now();
  await sb.connect();
  assert.equal(await sb.request("whoami"), `${name}1`);
  // Two refreshes, each asked for by the server and answered with getToken's token.
  await waitFor("two refreshes", () => dones.length >= 2, 5000);
  assert.ok(asks[0].expiresIn > 0 && asks[0].expiresIn <= life, JSON.stringify(asks[0]));
  assert.ok(dones[0].expiresIn > (life * 2) / 3, JSON.stringify(dones[0]));
  assert.deepEqual(asked, ["connect", "refresh", "refresh"]);
  // Still the same connection, past the first tokens' lifetimes; the session follows the
  // token the refresh handler accepted.
  assert.ok(Date.now() - opened > life);
  assert.deepEqual(closes, []);
  assert.equal(await sb.request("whoami"), `${name}3`);
});

test("after 'token expired' it fetches a fresh token before reconnecting", async () => {
  const name = uid("bob");
  const asked = [];
  const sb = tokenClient(({ reason }) => {
    asked.push(reason);
    if (reason === "refresh") throw new Error("the auth server is down");
    // The first token is short-lived; the one fetched after it expired is not.
    return reason === "expired" ? `${name}-fresh:60000` : `${name}:300`;
  });
  const errors = [];
  sb.on("error", (e) => errors.push(e.code));
  await sb.connect();
  const [closed] = await nextEvent(sb, "close");
  assert.equal(closed.code, 4401);
  assert.equal(closed.reason, "token expired");
  assert.equal(closed.reconnect, true);
  await nextEvent(sb, "open");
  assert.deepEqual(asked, ["connect", "refresh", "expired"]);
  assert.deepEqual(errors, ["get_token"]);
  // The new connection carries the fresh token, not the stale one.
  assert.equal(await sb.request("whoami"), `${name}-fresh`);
});

test("a getToken that fails is retried like a failed connection", async () => {
  const name = uid("cy");
  let calls = 0;
  const sb = tokenClient(() => {
    calls += 1;
    if (calls < 3) throw new Error("not yet");
    return `${name}:60000`;
  });
  await sb.connect();
  assert.equal(calls, 3);
  assert.equal(await sb.request("whoami"), name);
});

test("a subscription's token is refreshed per topic, or the subscription ends", async () => {
  const sb = tokenClient(() => `${uid("dee")}:60000`);
  await sb.connect();
  const kept = uid("private:k");
  const lapsed = uid("private:l");
  const keptAsked = [];
  const sub = await sb.subscribe(kept, {
    getToken: ({ topic, reason }) => {
      keptAsked.push([topic, reason]);
      return keptAsked.length === 1 ? "t:300" : "t:60000";
    },
  });
  const gone = await sb.subscribe(lapsed, {
    getToken: ({ reason }) => {
      if (reason === "refresh") throw new Error("no more access");
      return "t:300";
    },
  });
  const [refreshed] = await nextEvent(sub, "refreshed");
  assert.equal(refreshed.topic, kept);
  assert.deepEqual(keptAsked, [
    [kept, "subscribe"],
    [kept, "refresh"],
  ]);
  const [ended] = await nextEvent(gone, "unsubscribed");
  assert.equal(ended.code, "token_expired");
  assert.equal(gone.state, "closed");
  // The kept one still delivers; the connection is still up.
  const got = [];
  sub.on("said", (d) => got.push(d));
  await sb.request("publish", { topic: kept, event: "said", data: 1 });
  await waitFor("the delivery", () => got.length === 1);
  assert.equal(sub.state, "joined");
  assert.equal(sb.state, "open");
});
