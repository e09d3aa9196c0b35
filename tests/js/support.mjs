// Helpers shared by the client's Node tests (each test file runs in a process of its own).
import { after } from "node:test";
import assert from "node:assert/strict";
import { Switchboard, SwitchboardError } from "../../framework/js/switchboard.js";

export const WS = process.env.SWITCHBOARD_URL;
export const HTTP = process.env.SWITCHBOARD_HTTP;
if (!WS || !HTTP) throw new Error("run through `cargo test --test js_client` (SWITCHBOARD_URL is unset)");
/**
 * The transport the suite runs over (tests/js_client.rs runs it once with each): the clients of
 * `client()` (and the token tests') use it, so every test runs over both.
 */
export const TRANSPORT = process.env.SWITCHBOARD_TRANSPORT ?? "websocket";
if (TRANSPORT !== "websocket" && TRANSPORT !== "http") throw new Error(`SWITCHBOARD_TRANSPORT=${TRANSPORT}?`);
const clients = [];
export const uid = (prefix) => `${prefix}${Math.random().toString(36).slice(2, 8)}`;
/** Closes `sb` after the file's tests. */
export function closeAfter(sb) {
  clients.push(sb);
  return sb;
}
/** A client named `name`, over the suite's transport, fast reconnects, closed after the file's tests. */
export function client(name, options = {}) {
  return closeAfter(
    new Switchboard(`${WS}?name=${name}`, {
      timeout: 3000,
      reconnect: { initialDelay: 20, maxDelay: 160 },
      transport: TRANSPORT,
      ...options,
    }),
  );
}
after(() => Promise.all(clients.map((c) => c.close())));
/** Resolves with `predicate()`'s first truthy value; rejects after `ms`. */
export function waitFor(what, predicate, ms = 5000) {
  const deadline = Date.now() + ms;
  return new Promise((resolve, reject) => {
    (function check() {
      const value = predicate();
      if (value) resolve(value);
      else if (Date.now() > deadline) reject(new Error(`timed out after ${ms} ms waiting for ${what}`));
      else setTimeout(check, 5);
    })();
  });
}
/** The arguments of `emitter`'s next `event`; rejects after `ms`. */
export function nextEvent(emitter, event, ms = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no "${event}" event within ${ms} ms`));
    }, ms);
    const off = emitter.once(event, (...args) => {
      clearTimeout(timer);
      resolve(args);
    });
  });
}
export async function rejects(promise, check) {
  const err = await promise.then(
    () => assert.fail("expected a rejection"),
    (e) => e,
  );
  assert.ok(err instanceof SwitchboardError, `a SwitchboardError, got ${err}`);
  assert.equal(err.name, "SwitchboardError");
  check(err);
  return err;
}
