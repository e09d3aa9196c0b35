// @ts-check
// The chat page: one Switchboard connection, a subscription per joined room.
// Type-checked with the client's types and the chat channel's, generated from its Rust
// handlers (channel.d.ts, `cargo run --example chat -- --schema write`): `tsc -p framework/js`
// (tests/js_types.rs). No build step: the types come in through JSDoc.
import { Switchboard, Presence } from "/switchboard.js";

/** @typedef {import("./channel").Channel} ChatChannel */
/** @typedef {import("./channel").Message} Message */
/** @typedef {import("/switchboard.js").Subscription<ChatChannel["topics"][`room:${string}`]>} Subscription */

/**
 * A line of a room: a chat message, an announcement, or a note from the page.
 * @typedef {{kind: "message", nick: string, text: string, at: number}
 *   | {kind: "announcement", text: string}
 *   | {kind: "system", text: string}} ChatLine
 */

/**
 * A joined room (`sub` and `presence` are set once the subscribe succeeded).
 * @typedef {object} RoomEntry
 * @property {Subscription | null} sub
 * @property {Presence | null} presence
 * @property {ChatLine[]} messages
 * @property {Map<string, true>} typing nick -> true
 * @property {number} unread
 */

const ROOM_HISTORY = 50;
/**
 * The page's element with this id (all of them are in index.html).
 * @type {(id: string) => HTMLElement}
 */
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
/** @type {(id: string) => HTMLInputElement} */
const $input = (id) => /** @type {HTMLInputElement} */ (document.getElementById(id));

/** @type {{nick: string | null, rooms: Map<string, RoomEntry>, active: string | null}} */
const state = {
  nick: null,
  /** room name -> { sub, presence, messages: [], typing: Map<nick, true>, unread } */
  rooms: new Map(),
  active: null,
};

const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws/chat`;
/** @type {Switchboard<ChatChannel>} */
const sb = new Switchboard(url, {
  // A reconnected socket is a new session on the server: claim the nickname again before the
  // client renews the room subscriptions (joining needs a nickname).
  onOpen: async () => {
    if (state.nick) await sb.request("nick", { nick: state.nick });
  },
});

// ---- connection status -------------------------------------------------------------------

/**
 * @param {"open" | "reconnecting" | "closed"} kind
 * @param {string} text
 */
function setStatus(kind, text) {
  const el = $("status");
  el.className = `status ${kind}`;
  el.textContent = text;
}
sb.on("open", () => setStatus("open", "connected"));
sb.on("reconnecting", (info) =>
  setStatus("reconnecting", `reconnecting${info && info.attempt ? ` (try ${info.attempt})` : ""}…`),
);
sb.on("close", (info) => {
  if (!info.reconnect) setStatus("closed", "disconnected");
});
sb.on("error", (err) => toast(err.message || String(err)));
// Which transport carries the connection: a WebSocket, or HTTP streaming when a proxy blocks
// WebSockets (the client falls back by itself, and moves back when it can).
sb.on("transport", (name) => {
  const el = $("transport");
  el.hidden = false;
  el.className = `transport ${name}`;
  el.dataset.transport = name;
  el.textContent = name === "http" ? "HTTP streaming" : "WebSocket";
});

// ---- toasts -----------------------------------------------------------------------------

/**
 * @param {string} text
 * @param {string} [kind]
 */
function toast(text, kind = "error") {
  const el = document.createElement("div");
  el.className = `toast ${kind}`;
  el.setAttribute("role", kind === "error" ? "alert" : "status");
  el.textContent = text;
  $("toasts").append(el);
  setTimeout(() => el.remove(), 5000);
}

/**
 * Runs a request and shows the server's refusal, if any.
 * @template T
 * @param {() => Promise<T>} fn
 * @returns {Promise<T | undefined>}
 */
async function attempt(fn) {
  try {
    return await fn();
  } catch (err) {
    toast(/** @type {Error} */ (err).message || String(err));
    return undefined;
  }
}

// ---- nickname ----------------------------------------------------------------------------

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const wanted = $input("nick").value.trim();
  /** @type {string | undefined} */
  const nick = await attempt(() => sb.request("nick", { nick: wanted }));
  if (!nick) return;
  state.nick = nick;
  $("me").textContent = nick;
  $("login").hidden = true;
  $("chat").hidden = false;
  await refreshRooms();
  await join("lobby");
});

// ---- rooms -------------------------------------------------------------------------------

async function refreshRooms() {
  const res = await fetch("/api/rooms").catch(() => null);
  if (!res || !res.ok) return;
  /** @type {{room: string, members: number}[]} */
  const rooms = await res.json();
  const list = $("room-list");
  list.replaceChildren(
    ...rooms.map(({ room, members }) => {
      const li = document.createElement("li");
      li.dataset.room = room;
      const name = document.createElement("span");
      name.textContent = `#${room}`;
      const count = document.createElement("span");
      count.className = "count";
      count.textContent = members ? `${members}` : "";
      name.append(count);
      const button = document.createElement("button");
      button.className = "ghost";
      const joined = state.rooms.has(room);
      button.textContent = joined ? "leave" : "join";
      button.addEventListener("click", () => (joined ? leave(room) : join(room)));
      li.append(name, button);
      return li;
    }),
  );
}
setInterval(() => state.nick && refreshRooms(), 5000);

$("join-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const room = $input("join-name").value.trim().replace(/^#/, "");
  if (room) await join(room);
  $input("join-name").value = "";
});

/**
 * @param {string} room
 * @returns {Promise<void>}
 */
async function join(room) {
  if (state.rooms.has(room)) return show(room);
  // In place before subscribing: the server replays the room's recent messages first.
  /** @type {RoomEntry} */
  const entry = { sub: null, presence: null, messages: [], typing: new Map(), unread: 0 };
  state.rooms.set(room, entry);
  const sub = await attempt(() => sb.subscribe(`room:${room}`, { last: ROOM_HISTORY }));
  if (!sub) {
    state.rooms.delete(room);
    return;
  }
  // Deliveries that came with the subscribe (the replayed history, the presence state) are
  // held by the client until right after this await, so these listeners see them all.
  entry.sub = sub;
  entry.presence = sub.presence();
  entry.presence.onChange(() => room === state.active && renderMembers());
  sub.on("message", (m) => addMessage(room, { kind: "message", ...m }));
  sub.on("announcement", (a) => addMessage(room, { kind: "announcement", text: a.text }));
  sub.on("typing", ({ nick, typing }) => {
    if (typing) entry.typing.set(nick, true);
    else entry.typing.delete(nick);
    if (room === state.active) renderTyping();
  });
  sub.on("recovered", (ok) => {
    if (!ok) addMessage(room, { kind: "system", text: "some messages were missed while offline" });
  });
  sub.on("error", (err) => toast(`#${room}: ${err.message}`));
  show(room);
  refreshRooms();
}

/** @param {string} room */
async function leave(room) {
  const entry = state.rooms.get(room);
  if (!entry) return;
  await attempt(() => /** @type {Subscription} */ (entry.sub).unsubscribe());
  state.rooms.delete(room);
  if (state.active === room) state.active = state.rooms.keys().next().value ?? null;
  render();
  refreshRooms();
}

/** @param {string} room */
function show(room) {
  state.active = room;
  const entry = state.rooms.get(room);
  if (entry) entry.unread = 0;
  render();
  $("say").focus();
}

/**
 * @param {string} room
 * @param {ChatLine} msg
 */
function addMessage(room, msg) {
  const entry = state.rooms.get(room);
  if (!entry) return;
  entry.messages.push(msg);
  if (entry.messages.length > 500) entry.messages.shift();
  if (msg.kind === "message") entry.typing.delete(msg.nick);
  if (room === state.active) {
    appendMessage(msg);
    renderTyping();
  } else {
    entry.unread += 1;
    renderTabs();
  }
}

// ---- sending -----------------------------------------------------------------------------

let lastTyping = 0;
$("say").addEventListener("input", () => {
  const now = Date.now();
  if (!state.active || now - lastTyping < 1500) return;
  lastTyping = now;
  sb.request("typing", { room: state.active }).catch(() => {});
});

$("say-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const input = $input("say");
  const text = input.value;
  const room = state.active;
  if (!text.trim() || !room) return;
  const sent = await attempt(() => sb.request("say", { room, text }));
  if (sent !== undefined) {
    input.value = "";
    lastTyping = 0;
  }
});

// ---- rendering ---------------------------------------------------------------------------

function render() {
  renderTabs();
  const entry = state.active && state.rooms.get(state.active);
  $("empty").hidden = Boolean(entry);
  $("say-form").hidden = !entry;
  $("messages").replaceChildren();
  if (entry) entry.messages.forEach(appendMessage);
  renderMembers();
  renderTyping();
}

function renderTabs() {
  $("tabs").replaceChildren(
    ...[...state.rooms.keys()].map((room) => {
      const b = document.createElement("button");
      b.textContent = `#${room}`;
      b.className = room === state.active ? "active" : "";
      const unread = /** @type {RoomEntry} */ (state.rooms.get(room)).unread;
      if (unread) {
        const badge = document.createElement("span");
        badge.className = "unread";
        badge.textContent = String(unread);
        b.append(badge);
      }
      b.addEventListener("click", () => show(room));
      return b;
    }),
  );
}

/** @param {ChatLine} msg */
function appendMessage(msg) {
  const li = document.createElement("li");
  if (msg.kind === "message") {
    const time = document.createElement("span");
    time.className = "time";
    time.textContent = new Date(msg.at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    const nick = document.createElement("span");
    nick.className = "nick";
    nick.textContent = msg.nick;
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = msg.text;
    li.append(time, nick, text);
  } else {
    li.className = msg.kind;
    li.textContent = msg.kind === "announcement" ? `Announcement: ${msg.text}` : msg.text;
  }
  const list = $("messages");
  list.append(li);
  list.scrollTop = list.scrollHeight;
}

function renderMembers() {
  const entry = state.active && state.rooms.get(state.active);
  const members = entry && entry.presence ? entry.presence.list() : [];
  $("member-list").replaceChildren(
    ...members.map(({ key, metas }) => {
      const li = document.createElement("li");
      li.textContent = key;
      if (metas.length > 1) {
        const d = document.createElement("span");
        d.className = "devices";
        d.textContent = `×${metas.length}`;
        li.append(d);
      }
      return li;
    }),
  );
}

function renderTyping() {
  const entry = state.active && state.rooms.get(state.active);
  const who = entry ? [...entry.typing.keys()].filter((n) => n !== state.nick) : [];
  $("typing").textContent =
    who.length === 0 ? "" : who.length === 1 ? `${who[0]} is typing…` : `${who.join(", ")} are typing…`;
}

// ---- start -------------------------------------------------------------------------------

sb.connect().catch((err) => {
  setStatus("closed", "cannot connect");
  toast(`cannot connect: ${err.message || err}`);
});
