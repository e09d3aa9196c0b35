// Switchboard client: a dependency-free ES module speaking the channel protocol
// (docs/protocol.md) in browsers and Node 20+. Guide: docs/js-client.md.
//
//   import { Switchboard, Presence } from "/switchboard.js";
//   const sb = new Switchboard("/ws/chat?name=ann");
//   await sb.connect();
//   const reply = await sb.request("join", { room: "lobby" });
//   const room = await sb.subscribe("room:lobby");
//   room.on("message", (data, meta) => render(data, meta.seq));

/**
 * @typedef {object} ReconnectOptions
 * @property {number} [initialDelay=250] ms before the first retry.
 * @property {number} [maxDelay=10000] cap on the delay; a connection that stayed up this long
 *   also starts the backoff over.
 * @property {number} [factor=2] growth of the delay per failed attempt.
 * @property {number} [jitter=0.5] share of the delay taken off at random (0: none, 1: full).
 * @property {number} [maxAttempts=Infinity] consecutive attempts before giving up.
 * @property {number} [restartJitter=1000] after the server closed an open connection with 1001
 *   (going away) or 1012 (service restart: a drain before a deploy), the first retry comes
 *   after a random delay of 0 to this many ms, so that the clients of a drained node spread
 *   out over the other nodes instead of arriving together.
 * @property {(code: number, reason: string) => boolean} [shouldRetry] overrides which close
 *   codes are retried (default: all but 1000, 1008 and 4000-4099).
 */

/**
 * @typedef {object} SwitchboardOptions
 * @property {number} [timeout=5000] default request timeout in ms (0: none).
 * @property {ReconnectOptions | false} [reconnect] backoff settings, or `false` for none.
 * @property {string} [routeKey="type"] the channel's route key: a field, a dotted path
 *   (`"meta.action"`) or `"$request.body.action"`.
 * @property {typeof WebSocket} [WebSocket] the WebSocket constructor (default: the global one).
 * @property {"auto" | "websocket" | "http"} [transport="auto"] how to reach the server: a
 *   WebSocket, the HTTP transport (a Server-Sent Events stream down, `POST`s up:
 *   docs/http-transport.md), or `"auto"`: a WebSocket first, the HTTP transport when the
 *   upgrade fails or does not open within `fallbackAfterMs`.
 * @property {number} [fallbackAfterMs=2500] on `"auto"`, how long a WebSocket may take to open
 *   before the client falls back to HTTP.
 * @property {number} [websocketRetryMs=60000] on `"auto"`, after a fallback to HTTP, how often
 *   a WebSocket is tried again in the background; when one opens the client moves over to it.
 * @property {number} [streamOpenTimeoutMs=5000] how long the HTTP stream's first event may
 *   take: a stream that stays silent longer is held back by a buffering proxy (an `"error"`
 *   with code `stream_buffered`, and a failed attempt).
 * @property {typeof fetch} [fetch] the `fetch` function of the HTTP transport (default: the
 *   global one).
 * @property {(context: TokenContext) => (string | Promise<string>)} [getToken] fetches the
 *   connection's token: before every attempt (it goes in the URL's `tokenParam` query
 *   parameter) and when the server asks for a new one (`refresh`). After the server closed
 *   with 4401 (token expired) it is called with `reason: "expired"`: fetch a fresh token then,
 *   never a cached one.
 * @property {string} [tokenParam="token"] the query parameter the token goes in.
 * @property {(info: {reconnected: boolean}) => (void | Promise<void>)} [onOpen] runs on every
 *   open, before subscriptions are renewed: a new connection is a new session on the server,
 *   so this is where an app logs in again (requests work inside it). Its error is reported as
 *   an `"error"` event and the subscriptions are renewed all the same.
 */

/**
 * Why a token is asked for: `"connect"` (the first attempt), `"reconnect"` (a later one),
 * `"expired"` (a later one after the server closed with 4401: the old token expired),
 * `"refresh"` (the server asked for a new one while connected).
 * @typedef {{reason: "connect" | "reconnect" | "expired" | "refresh"}} TokenContext
 */
/**
 * A way to reach the server: `"websocket"`, or `"http"` (a stream down, `POST`s up).
 * @typedef {"websocket" | "http"} TransportName
 */
/**
 * Why a subscription's token is asked for: `"subscribe"` (the first subscribe),
 * `"resubscribe"` (after a reconnect), `"refresh"` (the server asked for a new one).
 * @typedef {{topic: string, reason: "subscribe" | "resubscribe" | "refresh"}} TopicTokenContext
 */
/**
 * The `"refresh"` event: the server asks for a new token (of the connection, or of `topic`'s
 * subscription) before the old one expires in `expiresIn` ms. `"refreshed"`: a new one was
 * accepted, valid for `expiresIn` ms (`null`: no expiry).
 * @typedef {{topic?: string, expiresIn: number | null}} RefreshInfo
 */
/**
 * A position in a topic's history: saved, it can be passed back as `since`.
 * @typedef {{epoch: string, seq: number}} Position
 */
/**
 * What comes with a delivery: its topic and event, and on topics with history its position.
 * @typedef {{topic: string, event: string, epoch?: string, seq?: number}} DeliveryMeta
 */
/**
 * `request()` options.
 * @typedef {object} RequestOptions
 * @property {number} [timeout] in ms, overrides the client's (0: none).
 */
/**
 * `subscribe()` options.
 * @typedef {object} SubscribeOptions
 * @property {boolean} [recover=true] after a reconnect, ask for what was missed.
 * @property {number} [last] on the first subscribe, replay up to this many recent publications.
 * @property {Position} [since] on the first subscribe, recover from a position saved earlier.
 * @property {(context: TopicTokenContext) => (string | Promise<string>)} [getToken] the
 *   topic's own token, for topics that need one: sent with every subscribe, and when the
 *   server asks for a new one.
 */
/**
 * The server's reply to a subscribe (topics with history: the position; after a recovery
 * request: whether it succeeded).
 * @typedef {{epoch?: string, seq?: number, recovered?: boolean, [field: string]: any}} SubscribeReply
 */
/** @typedef {{reconnected: boolean}} OpenInfo the `"open"` event */
/** @typedef {{code: number, reason: string, reconnect: boolean}} CloseInfo the `"close"` event */
/**
 * The `"reconnecting"` event: the next attempt is in `delay` ms.
 * @typedef {{attempt: number, delay: number, code: number, reason: string}} ReconnectingInfo
 */
/** @typedef {{key: string, metas: any[]}} PresenceItem one present key and its connections' metadata */
/** @typedef {{joins: PresenceItem[], leaves: PresenceItem[]}} PresenceDiff */
/**
 * @callback PresenceListener
 * @param {PresenceItem[]} list who is present now
 * @param {PresenceDiff} diff who came and who went
 * @returns {void}
 */
/**
 * A client's events and their listeners' arguments; any other name is a server push, `(data)`.
 * @typedef {object} SwitchboardEvents
 * @property {[info: OpenInfo]} open
 * @property {[info: CloseInfo]} close
 * @property {[info: ReconnectingInfo]} reconnecting
 * @property {[error: SwitchboardError]} error
 * @property {[data: any, route: string]} reply
 * @property {[data: any, meta: DeliveryMeta]} delivery
 * @property {[data: ArrayBuffer]} binary
 * @property {[info: RefreshInfo]} refresh
 * @property {[info: RefreshInfo]} refreshed
 * @property {[name: TransportName]} transport
 */
/**
 * A subscription's events; any other name is a delivery of that event, `(data, meta)`, and
 * `"*"` gets all deliveries.
 * @typedef {{
 *   recovered: [recovered: boolean, reply: SubscribeReply],
 *   error: [error: SwitchboardError],
 *   unsubscribed: [error: SwitchboardError],
 *   refresh: [info: RefreshInfo],
 *   refreshed: [info: RefreshInfo],
 *   "*": [data: any, meta: DeliveryMeta],
 * }} SubscriptionEvents
 */
/**
 * @template {object} M
 * @typedef {M & {[event: string]: any[]}} WithOthers an event map that also takes any other name
 */
/**
 * What a channel's generated types say (`switchboard::schema`, docs/typescript.md): each
 * route's payload and reply, the events the server pushes, the topics with their events, the
 * error codes. The client's type parameter: `new Switchboard<ChatChannel>(url)`.
 * @typedef {object} ChannelTypes
 * @property {{[route: string]: {payload: any, reply: any}}} routes
 * @property {{[event: string]: any}} pushes
 * @property {{[topic: string]: {[event: string]: any}}} topics
 * @property {string} errors
 */
/**
 * The client's default type parameter: any route, event and topic, with data of any type.
 * @typedef {{
 *   routes: {[route: string]: {payload: any, reply: any}},
 *   pushes: {[event: string]: any},
 *   topics: {[topic: string]: {[event: string]: any}},
 *   errors: string,
 * }} UntypedChannel
 */
/**
 * A route of channel `C`.
 * @template {ChannelTypes} C
 * @typedef {keyof C["routes"] & string} RouteName
 */
/**
 * A topic of channel `C` (its patterns, such as `room:${string}`).
 * @template {ChannelTypes} C
 * @typedef {keyof C["topics"] & string} TopicName
 */
/**
 * What `request(route, ...)` takes after the route: the payload (which may be left out when the
 * route takes none) and the options.
 * @template {ChannelTypes} C
 * @template {RouteName<C>} K
 * @typedef {undefined extends C["routes"][K]["payload"]
 *   ? [data?: C["routes"][K]["payload"], options?: RequestOptions]
 *   : [data: C["routes"][K]["payload"], options?: RequestOptions]} RequestArgs
 */
/**
 * What `send(route, ...)` takes after the route: the payload.
 * @template {ChannelTypes} C
 * @template {RouteName<C>} K
 * @typedef {undefined extends C["routes"][K]["payload"]
 *   ? [data?: C["routes"][K]["payload"]]
 *   : [data: C["routes"][K]["payload"]]} SendArgs
 */
/**
 * A client's events: its own, and the pushes of channel `C`, `(data)`.
 * @template {ChannelTypes} C
 * @typedef {SwitchboardEvents & {[E in keyof C["pushes"]]: [data: C["pushes"][E]]}} ClientEvents
 */
/**
 * A subscription's events: its own, and the topic's events `E`, `(data, meta)`; `"*"` gets
 * them all.
 * @template {{[event: string]: any}} E
 * @typedef {{
 *   recovered: [recovered: boolean, reply: SubscribeReply],
 *   error: [error: SwitchboardError],
 *   "*": [data: E[keyof E], meta: DeliveryMeta],
 * } & {[K in keyof E]: [data: E[K], meta: DeliveryMeta]}} TopicEvents
 */
/** @typedef {ReturnType<typeof setTimeout>} Timer */
/**
 * @typedef {object} PendingRequest
 * @property {(data: any) => void} resolve
 * @property {(err: SwitchboardError) => void} reject
 * @property {string} route
 * @property {Timer | null} timer
 */

const RECONNECT_DEFAULTS = {
  initialDelay: 250,
  maxDelay: 10000,
  factor: 2,
  jitter: 0.5,
  maxAttempts: Infinity,
  restartJitter: 1000,
  shouldRetry: null,
};

/**
 * Close codes after which the client does not reconnect: 1000 (the server ended the connection
 * on purpose), 1008 (policy violation: a session refused in `on_connect`, a slow consumer the
 * server does not want back) and 4000-4099 (application codes reserved for "do not come back").
 */
/**
 * @param {number} code
 * @returns {boolean}
 */
function isFinalCode(code) {
  return code === 1000 || code === 1008 || (code >= 4000 && code <= 4099);
}

/**
 * A failed request, an error frame, or a connection problem. `code` is the server's error code
 * (`bad_payload`, `forbidden`, your own ...) or one of the client's: `timeout` (no reply in
 * time), `closed` (not connected, or the connection ended before the reply).
 */
export class SwitchboardError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {{field?: string, route?: string, closeCode?: number}} [details]
   */
  constructor(code, message, details = {}) {
    super(message);
    this.name = "SwitchboardError";
    /** @type {string} */
    this.code = code;
    /** @type {string | undefined} the offending field path of a `bad_payload` error */
    this.field = details.field;
    /** @type {string | undefined} the route of the message that failed */
    this.route = details.route;
    /** @type {number | undefined} the WebSocket close code, for `closed` errors */
    this.closeCode = details.closeCode;
  }
}

/**
 * Listener bookkeeping shared by the client and subscriptions.
 * @template {{[event: string]: any[]}} M the events: name -> the listener's arguments
 */
class Emitter {
  /** @type {Map<string, Set<(...args: any[]) => void>>} */
  #listeners = new Map();

  /**
   * Adds a listener; returns a function that removes it.
   * @template {keyof M & string} K
   * @param {K} event
   * @param {(...args: M[K]) => void} fn
   * @returns {() => void}
   */
  on(event, fn) {
    let set = this.#listeners.get(event);
    if (!set) this.#listeners.set(event, (set = new Set()));
    set.add(/** @type {(...args: any[]) => void} */ (fn));
    return () => this.off(event, fn);
  }

  /**
   * Adds a listener that runs once; returns a function that removes it.
   * @template {keyof M & string} K
   * @param {K} event
   * @param {(...args: M[K]) => void} fn
   * @returns {() => void}
   */
  once(event, fn) {
    const off = this.on(event, (/** @type {M[K]} */ ...args) => {
      off();
      fn(...args);
    });
    return off;
  }

  /**
   * Removes a listener added with `on`.
   * @template {keyof M & string} K
   * @param {K} event
   * @param {(...args: M[K]) => void} fn
   */
  off(event, fn) {
    const set = this.#listeners.get(event);
    if (set && set.delete(/** @type {(...args: any[]) => void} */ (fn)) && set.size === 0) this.#listeners.delete(event);
  }

  /**
   * @internal
   * @param {string} event
   * @param {...any} args
   */
  _emit(event, ...args) {
    const set = this.#listeners.get(event);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(...args);
      } catch (err) {
        // A throwing listener must not skip the others or break the client's bookkeeping; it
        // is rethrown on its own so it still shows up as an uncaught error.
        setTimeout(() => {
          throw err;
        });
      }
    }
  }
}

/**
 * A connection to one Switchboard channel, reconnecting by itself.
 *
 * Events (`sb.on(name, fn)`): server pushes by their event name, `fn(data)`; and
 * - `"open"` `({reconnected})`: a connection opened (subscriptions are being renewed);
 * - `"close"` `({code, reason, reconnect})`: a connection or an attempt ended; `reconnect`
 *   says whether another attempt follows;
 * - `"reconnecting"` `({attempt, delay, code, reason})`: the next attempt is in `delay` ms;
 * - `"error"` `(SwitchboardError)`: an error frame for a message sent without a ref;
 * - `"reply"` `(data, route)`: a handler's answer to a message sent without a ref;
 * - `"delivery"` `(data, meta)`: a publication on a topic this client did not subscribe to
 *   (a server-side subscription);
 * - `"binary"` `(ArrayBuffer)`: a binary frame;
 * - `"transport"` `("websocket" | "http")`: the connection is carried by another transport than
 *   before (the first open, a fallback to HTTP, the move back to a WebSocket).
 *
 * Typed by a channel's generated types (`C`, docs/typescript.md), `request` checks the route,
 * the payload and the reply, `on` the pushes, and `subscribe` the topic and its events; the
 * default, `UntypedChannel`, takes any name and any data.
 *
 * @template {ChannelTypes} [C=UntypedChannel]
 * @extends {Emitter<ClientEvents<C>>}
 */
export class Switchboard extends Emitter {
  /**
   * @param {string | URL | (() => string | URL)} url the channel's `ws(s)://` URL; in a browser
   *   also a path (`"/ws/chat"`) or an `http(s)://` URL. A function is called before every
   *   attempt (e.g. to put a fresh token in the query).
   * @param {SwitchboardOptions} [options]
   */
  constructor(url, options = {}) {
    super();
    /** @type {string | URL | (() => string | URL)} */
    this.url = url;
    /** @type {number} the default request timeout in ms (0: none) */
    this.timeout = options.timeout ?? 5000;
    /** @type {Required<Omit<ReconnectOptions, "shouldRetry">> & {shouldRetry: ReconnectOptions["shouldRetry"] | null} | null} */
    this.reconnect =
      options.reconnect === false ? null : { ...RECONNECT_DEFAULTS, ...options.reconnect };
    /** @type {string} */
    this.routeKey = options.routeKey ?? "type";
    /** @type {typeof WebSocket} */
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    /** @type {typeof fetch} */
    this.fetch = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
    /** @type {"auto" | "websocket" | "http"} the `transport` option */
    this.transportMode = options.transport ?? "auto";
    if (!["auto", "websocket", "http"].includes(this.transportMode)) {
      throw new TypeError(`transport must be "auto", "websocket" or "http", not ${JSON.stringify(this.transportMode)}`);
    }
    /** @type {number} */
    this.fallbackAfterMs = options.fallbackAfterMs ?? 2500;
    /** @type {number} */
    this.websocketRetryMs = options.websocketRetryMs ?? 60000;
    /** @type {number} */
    this.streamOpenTimeoutMs = options.streamOpenTimeoutMs ?? 5000;
    /** @type {SwitchboardOptions["onOpen"] | null} */
    this.onOpen = options.onOpen ?? null;
    /** @type {SwitchboardOptions["getToken"] | null} */
    this.getToken = options.getToken ?? null;
    /** @type {string} */
    this.tokenParam = options.tokenParam ?? "token";
    /** @type {"idle" | "connecting" | "open" | "reconnecting" | "closed"} */
    this.state = "idle";
    /** @internal @type {string[]} */
    this._routePath = this.routeKey.replace(/^\$request\.body\./, "").split(".");
    /** @internal @type {Transport | null} the connection (or attempt) in use */
    this._conn = null;
    /** @internal @type {TransportName | null} the transport of the last open connection */
    this._transport = null;
    /** @internal @type {boolean} on "auto": HTTP worked after a WebSocket did not (kept for the client's lifetime) */
    this._fellBack = false;
    /** @internal @type {boolean} on "auto": a WebSocket opened once (no fallback after that) */
    this._websocketWorked = false;
    /** @internal @type {Transport | null} on "auto" over HTTP: a WebSocket tried in the background */
    this._probe = null;
    /** @internal @type {Timer | null} the next background WebSocket try, or its deadline */
    this._probeTimer = null;
    /** @internal @type {number} */
    this._ref = 0;
    /** @internal @type {Map<number, PendingRequest>} */
    this._pending = new Map(); // ref -> {resolve, reject, route, timer}
    /** @internal @type {Map<string, Subscription<any>>} */
    this._subs = new Map();
    /** @internal @type {{resolve: () => void, reject: (err: SwitchboardError) => void}[]} */
    this._waiters = []; // connect() promises
    /** @internal @type {number} */
    this._attempt = 0;
    /** @internal @type {Timer | null} */
    this._timer = null;
    /** @internal @type {number} */
    this._openedAt = 0;
    /** @internal @type {boolean} */
    this._everOpened = false;
    /** @internal @type {number} the last close code (4401: the token expired) */
    this._lastCode = 0;
    /** @internal @type {number} counts `_open` calls: a token that arrives late is dropped */
    this._attemptId = 0;
  }

  /** Whether a connection is open. */
  get connected() {
    return this.state === "open";
  }

  /**
   * The transport of the open connection (or of the last one): `"websocket"` or `"http"`;
   * null before the first open. The `"transport"` event says when it changes.
   * @returns {TransportName | null}
   */
  get transport() {
    return this._transport;
  }

  /**
   * Opens the connection. Resolves once it is open; rejects (code `closed`) when the client
   * gives up first: `close()` was called, reconnecting is off and the attempt failed, or the
   * server closed with a final code. While reconnecting it tries again at once.
   * @returns {Promise<void>}
   */
  connect() {
    if (this.state === "open") return Promise.resolve();
    /** @type {Promise<void>} */
    const opened = new Promise((resolve, reject) => this._waiters.push({ resolve, reject }));
    if (this.state === "idle" || this.state === "closed" || this.state === "reconnecting") {
      clearTimeout(/** @type {Timer} */ (this._timer));
      if (this.state !== "reconnecting") {
        this._attempt = 0;
        this._everOpened = false;
      }
      this._open();
    }
    return opened;
  }

  /**
   * Sends `{route, ref, data}` and resolves with the reply's `data`. Rejects with a
   * `SwitchboardError`: the server's error (`code`, `message`, `field`), `timeout`, or `closed`
   * (not connected, or the connection ended before the reply).
   * @template {RouteName<C>} K
   * @param {K} route
   * @param {RequestArgs<C, K>} args the payload (`data`), then the options: `timeout` in ms
   *   overrides the client's (0: none)
   * @returns {Promise<C["routes"][K]["reply"]>}
   */
  request(route, ...args) {
    const [data, { timeout = this.timeout } = {}] = args;
    return new Promise((resolve, reject) => {
      if (this.state !== "open") {
        reject(new SwitchboardError("closed", `not connected: cannot send \`${route}\``, { route }));
        return;
      }
      const ref = ++this._ref;
      const frame = this._frame(route, data, ref); // data that JSON cannot encode throws here
      /** @type {PendingRequest} */
      const entry = { resolve, reject, route, timer: null };
      if (timeout > 0 && timeout !== Infinity) {
        entry.timer = setTimeout(() => {
          // A reply arriving later finds no entry and is dropped.
          this._pending.delete(ref);
          reject(new SwitchboardError("timeout", `no reply to \`${route}\` within ${timeout} ms`, { route }));
        }, timeout);
      }
      this._pending.set(ref, entry);
      try {
        /** @type {Transport} */ (this._conn).send(frame);
      } catch (err) {
        this._pending.delete(ref);
        clearTimeout(/** @type {Timer} */ (entry.timer));
        reject(new SwitchboardError("closed", `cannot send \`${route}\`: ${/** @type {Error} */ (err).message}`, { route }));
      }
    });
  }

  /**
   * Sends `{route, data}` without a ref: no reply is awaited (a handler's answer, if any, comes
   * as a `"reply"` event, its error as an `"error"` event). Throws a `SwitchboardError` with
   * code `closed` when not connected: nothing is queued.
   * @template {RouteName<C>} K
   * @param {K} route
   * @param {SendArgs<C, K>} args the payload (`data`)
   */
  send(route, ...args) {
    const [data] = args;
    if (this.state !== "open") {
      throw new SwitchboardError("closed", `not connected: cannot send \`${route}\``, { route });
    }
    /** @type {Transport} */ (this._conn).send(this._frame(route, data));
  }

  /**
   * Subscribes to a topic; resolves with its `Subscription` once the server has confirmed.
   * Before the first connection, or while reconnecting, the subscribe goes out when the
   * connection opens. Subscribing to a topic twice gives the same subscription.
   *
   * Deliveries that arrive before the promise resolves (presence, `last` replays) are held until
   * the code right after `await` ran, so listeners added there get them.
   *
   * @template {TopicName<C>} T
   * @param {T} topic
   * @param {SubscribeOptions} [options]
   *   `recover` (default true): after a reconnect, ask for what was missed;
   *   `last`: on the first subscribe, replay up to this many recent publications;
   *   `since`: on the first subscribe, recover from a position saved earlier.
   * @returns {Promise<Subscription<C["topics"][T]>>} rejects with the server's error (e.g.
   *   `forbidden`), `timeout`, or `closed` when the client is closed first.
   */
  subscribe(topic, options = {}) {
    if (this.state === "closed") {
      return Promise.reject(new SwitchboardError("closed", "the client is closed", { route: "subscribe" }));
    }
    const existing = this._subs.get(topic);
    if (existing) return existing._ready;
    const sub = new Subscription(this, topic, options);
    this._subs.set(topic, sub);
    if (this.state === "open") this._join(sub);
    return sub._ready;
  }

  /**
   * Closes the connection with 1000 and stops reconnecting. Pending requests reject with code
   * `closed`, subscriptions end. Resolves when the socket has closed. `connect()` starts over.
   * @returns {Promise<void>}
   */
  close() {
    const conn = this._conn;
    this._conn = null; // its remaining events no longer concern the client
    clearTimeout(/** @type {Timer} */ (this._timer));
    this._timer = null;
    this._dropProbe();
    const closed = conn ? conn.close(1000) : Promise.resolve();
    if (this.state !== "closed") this._finish(1000, "", "the client was closed");
    return closed;
  }

  // --- internals ---

  /** @internal */
  _open() {
    this._timer = null;
    this.state = "connecting";
    const id = ++this._attemptId;
    if (!this.getToken) {
      this._dial(null);
      return;
    }
    /** @type {TokenContext["reason"]} */
    const reason = !this._everOpened && this._attempt === 0 ? "connect" : this._lastCode === 4401 ? "expired" : "reconnect";
    const getToken = this.getToken;
    Promise.resolve()
      .then(() => getToken({ reason }))
      .then(
        (token) => id === this._attemptId && this.state === "connecting" && this._dial(String(token)),
        (err) => {
          if (id !== this._attemptId || this.state !== "connecting") return;
          this._emit("error", new SwitchboardError("get_token", `getToken failed: ${err?.message ?? err}`));
          // A failed attempt, retried like a network failure.
          this._onClose(1006, "getToken failed");
        },
      );
  }

  /**
   * Opens a connection, with `token` in the URL when there is one.
   * @internal
   * @param {string | null} token
   */
  _dial(token) {
    let url;
    try {
      url = this._url(token);
    } catch (err) {
      // A bad URL: retrying cannot help.
      this._finish(1006, "", `cannot connect: ${/** @type {Error} */ (err).message}`);
      return;
    }
    /** @type {TransportName} */
    let name = this.transportMode === "http" ? "http" : "websocket";
    // On "auto", a runtime without WebSocket (Node 20 without the flag) goes straight to HTTP.
    if (this.transportMode === "auto" && (this._fellBack || typeof this.WebSocket !== "function")) name = "http";
    this._connect(name, url, this.transportMode === "auto" && name === "websocket" && !this._websocketWorked);
  }

  /**
   * The channel's `ws(s)://` URL for this attempt, with `token` in the query.
   * @internal
   * @param {string | null} token
   * @returns {string}
   */
  _url(token) {
    const url = resolveUrl(typeof this.url === "function" ? this.url() : this.url);
    if (token === null) return url;
    const u = new URL(url);
    u.searchParams.set(this.tokenParam, token);
    return u.href;
  }

  /**
   * Starts a connection over `name`. With `fallback`, a WebSocket that fails before it opens,
   * or does not open within `fallbackAfterMs`, is given up for an HTTP connection at once.
   * @internal
   * @param {TransportName} name
   * @param {string} url the `ws(s)://` URL
   * @param {boolean} fallback
   */
  _connect(name, url, fallback) {
    /** @type {Timer | null} */
    let timer = null;
    const mine = () => conn === this._conn;
    const fallBack = () => {
      if (!mine() || this.state !== "connecting") return;
      clearTimeout(/** @type {Timer} */ (timer));
      this._conn = null;
      conn.close().catch(() => {});
      this._connect("http", url, false);
    };
    /** @type {TransportEvents} */
    const events = {
      open: () => {
        if (!mine()) return;
        clearTimeout(/** @type {Timer} */ (timer));
        if (name === "websocket") this._websocketWorked = true;
        // The choice is kept once HTTP worked where a WebSocket did not.
        else if (this.transportMode === "auto") this._fellBack = true;
        this._onOpen();
      },
      frame: (data) => mine() && this._onFrame(data),
      close: (code, reason) => {
        if (fallback && this.state === "connecting") fallBack();
        else if (mine()) this._onClose(code, reason);
      },
      error: (err) => mine() && this._emit("error", err),
      refused: (frame, code) => mine() && this._onRefused(frame, code),
    };
    /** @type {Transport} */
    const conn =
      name === "http"
        ? new HttpTransport(httpUrl(url), this.fetch, events, this.streamOpenTimeoutMs)
        : new WebSocketTransport(url, this.WebSocket, events);
    this._conn = conn;
    try {
      conn.open();
    } catch (err) {
      if (!mine()) return;
      if (fallback) {
        fallBack();
        return;
      }
      // No WebSocket or no fetch at all: retrying cannot help.
      this._conn = null;
      this._finish(1006, "", `cannot connect over ${name}: ${/** @type {Error} */ (err).message}`);
      return;
    }
    if (fallback) timer = setTimeout(fallBack, this.fallbackAfterMs);
  }

  /** @internal */
  _onOpen() {
    this.state = "open";
    this._openedAt = Date.now();
    const reconnected = this._everOpened;
    this._everOpened = true;
    const conn = /** @type {Transport} */ (this._conn);
    for (const w of this._waiters.splice(0)) w.resolve();
    const renew = () => {
      // Only if this is still the connection the hook ran for.
      if (this._conn !== conn || this.state !== "open") return;
      for (const sub of this._subs.values()) this._join(sub);
    };
    if (this.onOpen) {
      Promise.resolve()
        .then(() => /** @type {NonNullable<SwitchboardOptions["onOpen"]>} */ (this.onOpen)({ reconnected }))
        .catch((err) =>
          this._emit(
            "error",
            err instanceof SwitchboardError ? err : new SwitchboardError("on_open", String(err?.message ?? err)),
          ),
        )
        .finally(renew);
    } else {
      renew();
    }
    if (conn.name === "websocket") this._dropProbe();
    else this._scheduleProbe();
    if (this._transport !== conn.name) {
      this._transport = conn.name;
      this._emit("transport", conn.name);
    }
    this._emit("open", { reconnected });
  }

  /**
   * On "auto" over HTTP: tries a WebSocket again in `websocketRetryMs`.
   * @internal
   */
  _scheduleProbe() {
    if (this.transportMode !== "auto" || this._probe || this._probeTimer || typeof this.WebSocket !== "function") return;
    this._probeTimer = setTimeout(() => {
      this._probeTimer = null;
      this._probeWebSocket();
    }, this.websocketRetryMs);
  }

  /** @internal */
  _dropProbe() {
    clearTimeout(/** @type {Timer} */ (this._probeTimer));
    this._probeTimer = null;
    const probe = this._probe;
    this._probe = null;
    if (probe) probe.close().catch(() => {});
  }

  /**
   * A WebSocket beside the open HTTP connection: when it opens, the client moves over to it.
   * @internal
   */
  _probeWebSocket() {
    const id = this._attemptId;
    const stillHttp = () => id === this._attemptId && this.state === "open" && this._conn?.name === "http";
    /** @param {string | null} token */
    const dial = (token) => {
      if (!stillHttp() || this._probe) return;
      let url;
      try {
        url = this._url(token);
      } catch {
        this._scheduleProbe();
        return;
      }
      /** @type {Transport} */
      const probe = new WebSocketTransport(url, this.WebSocket, {
        open: () => {
          if (this._probe !== probe) return;
          clearTimeout(/** @type {Timer} */ (this._probeTimer));
          this._probeTimer = null;
          this._switchTo(probe, Date.now() + Math.max(this.timeout, 1000));
        },
        frame: (data) => probe === this._conn && this._onFrame(data),
        close: (code, reason) => {
          if (probe === this._conn) {
            this._onClose(code, reason);
          } else if (this._probe === probe) {
            // Not yet: try again later.
            this._dropProbe();
            this._scheduleProbe();
          }
        },
        error: (err) => probe === this._conn && this._emit("error", err),
        refused: (frame, code) => probe === this._conn && this._onRefused(frame, code),
      });
      this._probe = probe;
      try {
        probe.open();
      } catch {
        this._dropProbe();
        return;
      }
      // A WebSocket that hangs is as good as a failed one.
      this._probeTimer = setTimeout(() => {
        this._probeTimer = null;
        if (this._probe !== probe) return;
        this._dropProbe();
        this._scheduleProbe();
      }, this.fallbackAfterMs);
    };
    if (!this.getToken) {
      dial(null);
      return;
    }
    const getToken = this.getToken;
    Promise.resolve()
      .then(() => getToken({ reason: "reconnect" }))
      .then(
        (token) => dial(String(token)),
        () => stillHttp() && this._scheduleProbe(),
      );
  }

  /**
   * Moves from the HTTP connection to the background WebSocket `probe`: a reconnect (the
   * `onOpen` hook runs, subscriptions are renewed with recovery), once the requests under way
   * were answered (or at `deadline`). The HTTP connection is then ended.
   * @internal
   * @param {Transport} probe
   * @param {number} deadline
   */
  _switchTo(probe, deadline) {
    if (this._probe !== probe) return; // it closed meanwhile
    if (this.state !== "open" || this._conn?.name !== "http") {
      this._dropProbe();
      return;
    }
    if (this._pending.size > 0 && Date.now() < deadline) {
      this._probeTimer = setTimeout(() => this._switchTo(probe, deadline), 20);
      return;
    }
    this._probe = null;
    this._probeTimer = null;
    const old = /** @type {Transport} */ (this._conn);
    this._conn = probe;
    this._attemptId += 1;
    this._websocketWorked = true;
    this._fellBack = false;
    old.close(1000).catch(() => {});
    this._failPending(new SwitchboardError("closed", "the connection moved to a WebSocket", { closeCode: 1000 }));
    for (const sub of this._subs.values()) sub.state = "joining";
    this._onOpen();
  }

  /**
   * @internal
   * @param {number} code
   * @param {string} reason
   */
  _onClose(code, reason) {
    const wasOpen = this.state === "open";
    this._conn = null;
    this._dropProbe();
    this._lastCode = code;
    const why = `connection closed (${code}${reason ? `: ${reason}` : ""})`;
    this._failPending(new SwitchboardError("closed", why, { closeCode: code }));
    const rc = this.reconnect;
    // Only a connection that stayed up for a while starts the backoff over: a server that
    // accepts and drops at once must not be hammered at the initial delay.
    if (rc && wasOpen && Date.now() - this._openedAt >= rc.maxDelay) this._attempt = 0;
    const retry =
      rc !== null &&
      (rc.shouldRetry ? rc.shouldRetry(code, reason) : !isFinalCode(code)) &&
      this._attempt < rc.maxAttempts;
    if (!retry) {
      this._finish(code, reason, why);
      return;
    }
    this._attempt += 1;
    const base = Math.min(rc.maxDelay, rc.initialDelay * rc.factor ** (this._attempt - 1));
    // Jitter spreads the clients of a restarting server over time instead of one wave. A
    // server that is draining (1001, 1012) is still up and another node is ready: come back
    // soon, at a random moment of the restart window, rather than after a backoff.
    const restarting = wasOpen && (code === 1001 || code === 1012);
    const delay = restarting
      ? Math.round(rc.restartJitter * Math.random())
      : Math.round(base * (1 - rc.jitter * Math.random()));
    for (const sub of this._subs.values()) sub.state = "joining";
    this.state = "reconnecting";
    this._timer = setTimeout(() => this._open(), delay);
    this._emit("close", { code, reason, reconnect: true });
    if (this.state === "reconnecting") {
      this._emit("reconnecting", { attempt: this._attempt, delay, code, reason });
    }
  }

  /**
   * The end: no more attempts until `connect()`.
   * @internal
   * @param {number} code
   * @param {string} reason
   * @param {string} why
   */
  _finish(code, reason, why) {
    this.state = "closed";
    const err = new SwitchboardError("closed", why, { closeCode: code });
    this._failPending(err);
    const subs = [...this._subs.values()];
    this._subs.clear();
    for (const sub of subs) sub._end(err);
    for (const w of this._waiters.splice(0)) w.reject(err);
    this._emit("close", { code, reason, reconnect: false });
  }

  /**
   * The server refused a frame without closing (over HTTP, one too large): its request
   * rejects with the server's code; a frame without a ref is reported as an `"error"`.
   * @internal
   * @param {string | ArrayBuffer} frame
   * @param {string} code
   */
  _onRefused(frame, code) {
    let ref = null;
    try {
      ref = typeof frame === "string" ? JSON.parse(frame).ref : null;
    } catch {
      // Not ours to parse: reported below.
    }
    const entry = ref === null || ref === undefined ? undefined : this._pending.get(ref);
    const message = `the server refused a frame of ${typeof frame === "string" ? frame.length : frame.byteLength} bytes (${code})`;
    if (!entry) {
      this._emit("error", new SwitchboardError(code, message));
      return;
    }
    this._pending.delete(ref);
    clearTimeout(/** @type {Timer} */ (entry.timer));
    entry.reject(new SwitchboardError(code, message, { route: entry.route }));
  }

  /**
   * @internal
   * @param {SwitchboardError} err
   */
  _failPending(err) {
    const pending = [...this._pending.values()];
    this._pending.clear();
    for (const p of pending) {
      clearTimeout(/** @type {Timer} */ (p.timer));
      p.reject(new SwitchboardError(err.code, err.message, { route: p.route, closeCode: err.closeCode }));
    }
  }

  /**
   * `{"type": route, "ref": ref, "data": data}`, with the route under the route key path.
   * @internal
   * @param {string} route
   * @param {any} data
   * @param {number} [ref]
   * @returns {string}
   */
  _frame(route, data, ref) {
    /** @type {Record<string, any>} */
    const msg = {};
    let at = msg;
    const path = this._routePath;
    for (let i = 0; i < path.length - 1; i++) at = at[path[i]] = {};
    at[path[path.length - 1]] = route;
    if (ref !== undefined) msg.ref = ref;
    if (data !== undefined) msg.data = data;
    return JSON.stringify(msg);
  }

  /**
   * @internal
   * @param {string | ArrayBuffer} raw
   */
  _onFrame(raw) {
    if (typeof raw !== "string") {
      this._emit("binary", raw);
      return;
    }
    let msg = null;
    try {
      msg = JSON.parse(raw);
    } catch {
      // Reported below.
    }
    if (msg === null || typeof msg !== "object" || Array.isArray(msg)) {
      this._emit("error", new SwitchboardError("bad_frame", "the server sent a frame that is not a JSON object"));
      return;
    }
    // Told apart by their fields, in this order (docs/protocol.md, "Server → client").
    const replyField = this._routePath[this._routePath.length - 1];
    if (msg.ref !== undefined && msg.ref !== null) {
      this._onReply(msg);
    } else if (isObject(msg.refresh)) {
      this._onRefresh(msg.refresh);
    } else if (isObject(msg.unsubscribed)) {
      const { topic, code, message } = msg.unsubscribed;
      const sub = this._subs.get(topic);
      if (sub) {
        this._subs.delete(topic);
        sub._end(new SwitchboardError(code ?? "unsubscribed", message ?? "", { route: "subscribe" }));
        sub._emit("unsubscribed", new SwitchboardError(code ?? "unsubscribed", message ?? ""));
      }
    } else if (typeof msg.topic === "string" && typeof msg.event === "string") {
      const sub = this._subs.get(msg.topic);
      if (sub) sub._deliver(msg);
      else this._emit("delivery", msg.data, deliveryMeta(msg));
    } else if (msg.ok === false) {
      this._emit("error", errorOf(msg, msg[replyField]));
    } else if (typeof msg.event === "string") {
      this._emit(msg.event, msg.data);
    } else if (typeof msg[replyField] === "string") {
      this._emit("reply", msg.data, msg[replyField]);
    }
  }

  /**
   * @internal
   * @param {any} msg
   */
  _onReply(msg) {
    const entry = this._pending.get(msg.ref);
    if (!entry) return; // timed out already
    this._pending.delete(msg.ref);
    clearTimeout(/** @type {Timer} */ (entry.timer));
    if (msg.ok === false) entry.reject(errorOf(msg, entry.route));
    else entry.resolve(msg.data);
  }

  /**
   * The server asks for a new token: of the connection, or of a subscription (`topic`).
   * @internal
   * @param {{topic?: string, expires_in?: number}} ask
   */
  _onRefresh(ask) {
    const topic = typeof ask.topic === "string" ? ask.topic : undefined;
    const info = { topic, expiresIn: typeof ask.expires_in === "number" ? ask.expires_in : null };
    const sub = topic === undefined ? null : this._subs.get(topic);
    if (topic !== undefined && !sub) return;
    /** @type {Emitter<any>} */
    const target = sub ?? this;
    target._emit("refresh", info);
    const conn = this._conn;
    const getToken = sub
      ? sub.getToken && (() => /** @type {NonNullable<Subscription["getToken"]>} */ (sub.getToken)({ topic: sub.topic, reason: "refresh" }))
      : this.getToken && (() => /** @type {NonNullable<Switchboard["getToken"]>} */ (this.getToken)({ reason: "refresh" }));
    if (!getToken) return; // the app answers with refresh() itself
    Promise.resolve()
      .then(getToken)
      .then((token) => (this._conn === conn ? this.refresh(String(token), topic) : undefined))
      .catch((err) =>
        target._emit("error", err instanceof SwitchboardError ? err : new SwitchboardError("get_token", `getToken failed: ${err?.message ?? err}`)),
      );
  }

  /**
   * Sends a new token on the built-in `refresh` route: the connection's, or with `topic` a
   * subscription's. Resolves with the reply, `{expires_in}` (ms; `null`: no expiry); rejects
   * with the server's error (`unauthorized`, `token_expired` ...). The client does this by
   * itself when it has a `getToken`.
   * @param {string} token
   * @param {string} [topic]
   * @returns {Promise<{topic?: string, expires_in: number | null}>}
   */
  async refresh(token, topic) {
    // A built-in route, whatever the channel's types say.
    const client = /** @type {Switchboard<any>} */ (this);
    const reply = await client.request("refresh", topic === undefined ? { token } : { topic, token });
    const info = { topic, expiresIn: reply?.expires_in ?? null };
    const sub = topic === undefined ? null : this._subs.get(topic);
    const target = /** @type {Emitter<any>} */ (sub ?? this);
    target._emit("refreshed", info);
    return reply;
  }

  /**
   * Sends (or renews, after a reconnect) a subscription.
   * @internal
   * @param {Subscription} sub
   */
  _join(sub) {
    /** @type {{topic: string, recover?: Position, last?: number, token?: string}} */
    const data = { topic: sub.topic };
    const position = sub.recover || !sub._confirmed ? sub.position : null;
    if (position) data.recover = position;
    else if (!sub._confirmed && sub.last !== undefined) data.last = sub.last;
    const current = () => this._subs.get(sub.topic) === sub;
    if (!sub.getToken) {
      this._subscribe(sub, data, position, current);
      return;
    }
    const getToken = sub.getToken;
    const conn = this._conn;
    /** @type {TopicTokenContext["reason"]} */
    const reason = sub._confirmed ? "resubscribe" : "subscribe";
    Promise.resolve()
      .then(() => getToken({ topic: sub.topic, reason }))
      .then(
        (token) => {
          if (!current() || this._conn !== conn) return;
          data.token = String(token);
          this._subscribe(sub, data, position, current);
        },
        (err) => {
          if (!current()) return;
          this._subs.delete(sub.topic);
          sub._fail(new SwitchboardError("get_token", `getToken failed: ${err?.message ?? err}`, { route: "subscribe" }));
        },
      );
  }

  /**
   * @internal
   * @param {Subscription} sub
   * @param {object} data
   * @param {Position | null} position
   * @param {() => boolean} current
   */
  _subscribe(sub, data, position, current) {
    // The built-in routes, whatever the channel's types say.
    const client = /** @type {Switchboard<any>} */ (this);
    client.request("subscribe", data).then(
      (reply) => current() && sub._joined(reply ?? {}, position !== null),
      (/** @type {SwitchboardError} */ err) => {
        // `closed`: the next connection renews it (or the client's end ends it).
        if (err.code === "closed" || !current()) return;
        this._subs.delete(sub.topic);
        sub._fail(err);
        // The server may still have subscribed it after the timeout.
        if (err.code === "timeout") client.request("unsubscribe", { topic: sub.topic }).catch(() => {});
      },
    );
  }
}

/**
 * A subscription to one topic, from `sb.subscribe(topic)`.
 *
 * `sub.on(event, fn)` gets that event's deliveries as `fn(data, meta)`, meta
 * `{topic, event, epoch, seq}`; `sub.on("*", fn)` gets all of them. Lifecycle events:
 * `"recovered"` `(recovered, reply)` after a resubscribe that asked for missed publications
 * (`false`: there is a gap, reload the state); `"error"` `(SwitchboardError)` when the server
 * refused a resubscribe (the subscription has ended).
 *
 * Typed by the topic's events (`E`, from a channel's generated types), `on` checks the event
 * and its data; the default takes any event name with data of any type.
 *
 * @template {{[event: string]: any}} [E={[event: string]: any}]
 * @extends {Emitter<TopicEvents<E>>}
 */
export class Subscription extends Emitter {
  /**
   * Use `sb.subscribe()`.
   * @param {Switchboard<any>} client
   * @param {string} topic
   * @param {SubscribeOptions} [options]
   */
  constructor(client, topic, { recover = true, last, since, getToken } = {}) {
    super();
    /** @type {SubscribeOptions["getToken"] | null} */
    this.getToken = getToken ?? null;
    /** @type {Switchboard<any>} */
    this.client = client;
    /** @type {string} */
    this.topic = topic;
    /** @type {boolean} */
    this.recover = recover;
    /** @type {number | undefined} */
    this.last = last;
    /** @type {"joining" | "joined" | "closed"} */
    this.state = "joining";
    /** @type {string | null} the topic history's epoch (topics with history) */
    this.epoch = since ? since.epoch : null;
    /** @type {number | null} the last seen publication's seq */
    this.seq = since ? since.seq : null;
    /** @type {boolean | null} the last recovery's outcome (null: none asked yet) */
    this.recovered = null;
    /** @internal @type {boolean} */
    this._confirmed = false;
    /** @internal @type {(() => void)[] | null} */
    this._buffer = []; // held until the subscribe() caller's code after `await` ran
    /** @internal @type {Map<string, any>} */
    this._presence = new Map();
    /** @internal @type {Set<PresenceListener>} */
    this._presenceFns = new Set();
    /** @internal @type {(sub: Subscription<E>) => void} */
    this._resolve = () => {};
    /** @internal @type {(err: SwitchboardError) => void} */
    this._reject = () => {};
    /** @internal @type {Promise<Subscription<E>>} */
    this._ready = new Promise((resolve, reject) => {
      this._resolve = resolve;
      this._reject = reject;
    });
  }

  /**
   * The last seen position (`{epoch, seq}`), or null on topics without history. Saved, it can
   * be passed back as `since` after a page reload.
   * @returns {Position | null}
   */
  get position() {
    return this.epoch === null || this.seq === null ? null : { epoch: this.epoch, seq: this.seq };
  }

  /**
   * The topic's presence (a view kept up to date by this subscription).
   * @returns {Presence}
   */
  presence() {
    return new Presence(this);
  }

  /**
   * Leaves the topic. Listeners get nothing more.
   * @returns {Promise<void>}
   */
  async unsubscribe() {
    if (this.state === "closed") return;
    this.state = "closed";
    this._buffer = null;
    const client = this.client;
    if (client._subs.get(this.topic) !== this) return;
    client._subs.delete(this.topic);
    if (client.state !== "open") return; // the server forgot it with the connection
    try {
      await client.request("unsubscribe", { topic: this.topic });
    } catch (err) {
      if (/** @type {SwitchboardError} */ (err).code !== "closed") throw err;
    }
  }

  /**
   * @internal
   * @param {any} msg
   */
  _deliver(msg) {
    if (this.state === "closed") return;
    if (typeof msg.seq === "number") {
      // A replay can overlap what was already delivered: each seq is handed out once.
      if (msg.epoch === this.epoch && this.seq !== null && msg.seq <= this.seq) return;
      this.epoch = msg.epoch;
      this.seq = msg.seq;
    }
    const meta = deliveryMeta(msg);
    this._run(() => {
      if (msg.event === "presence_state" || msg.event === "presence_diff") {
        this._applyPresence(msg.event, msg.data ?? {});
      }
      this._emit(msg.event, msg.data, meta);
      this._emit("*", msg.data, meta);
    });
  }

  /**
   * @internal
   * @param {SubscribeReply} reply
   * @param {boolean} askedRecovery
   */
  _joined(reply, askedRecovery) {
    if (this.state === "closed") return;
    this.state = "joined";
    if (typeof reply.seq === "number") {
      // Deliveries may have come before the reply: never go back.
      if (reply.epoch !== this.epoch || this.seq === null) {
        // A reply with a seq has its epoch.
        this.epoch = /** @type {string} */ (reply.epoch);
        this.seq = reply.seq;
      } else {
        this.seq = Math.max(this.seq, reply.seq);
      }
    }
    if (askedRecovery) {
      this.recovered = reply.recovered === true;
      this._run(() => this._emit("recovered", this.recovered, reply));
    }
    if (!this._confirmed) {
      this._confirmed = true;
      this._resolve(this);
      // Promise continuations (the caller's code after `await`) run before any timer.
      setTimeout(() => this._flush());
    }
  }

  /**
   * @internal
   * @param {SwitchboardError} err
   */
  _fail(err) {
    const confirmed = this._confirmed;
    this._end(err);
    if (confirmed) this._emit("error", err);
  }

  /**
   * @internal
   * @param {SwitchboardError} err
   */
  _end(err) {
    this.state = "closed";
    this._buffer = null;
    if (!this._confirmed) this._reject(err);
  }

  /**
   * @internal
   * @param {() => void} fn
   */
  _run(fn) {
    if (this._buffer) this._buffer.push(fn);
    else fn();
  }

  /** @internal */
  _flush() {
    const held = this._buffer;
    this._buffer = null;
    for (const fn of held ?? []) {
      if (this.state === "closed") return;
      fn();
    }
  }

  /**
   * @internal
   * @param {string} event
   * @param {any} data
   */
  _applyPresence(event, data) {
    const before = this._presence;
    /** @type {PresenceItem[]} */
    const joins = [];
    /** @type {PresenceItem[]} */
    const leaves = [];
    if (event === "presence_state") {
      const next = new Map(Object.entries(data));
      for (const [key, entry] of next) if (!before.has(key)) joins.push(presenceItem(key, entry));
      for (const [key, entry] of before) if (!next.has(key)) leaves.push(presenceItem(key, entry));
      this._presence = next;
    } else {
      // The server sends a diff when a key appears (its first connection) or goes (its last
      // one): a join sets the key's entry, a leave removes it.
      for (const [key, entry] of Object.entries(data.joins ?? {})) {
        if (!before.has(key)) joins.push(presenceItem(key, entry));
        before.set(key, entry);
      }
      for (const [key, entry] of Object.entries(data.leaves ?? {})) {
        if (before.delete(key)) leaves.push(presenceItem(key, entry));
      }
    }
    const list = new Presence(this).list();
    for (const fn of [...this._presenceFns]) {
      try {
        fn(list, { joins, leaves });
      } catch (err) {
        setTimeout(() => {
          throw err;
        });
      }
    }
  }
}

/**
 * Who is on a topic, from its `presence_state` and `presence_diff` deliveries, like Phoenix's
 * `Presence`: one entry per key (a user), with the metadata of the key's connections.
 */
export class Presence {
  /** @param {Subscription} subscription */
  constructor(subscription) {
    /** @type {Subscription} */
    this.subscription = subscription;
  }

  /**
   * One item per present key.
   * @returns {PresenceItem[]}
   */
  list() {
    return [...this.subscription._presence].map(([key, entry]) => presenceItem(key, entry));
  }

  /**
   * One key's metas, or undefined when the key is not present.
   * @param {string} key
   * @returns {any[] | undefined}
   */
  get(key) {
    const entry = this.subscription._presence.get(key);
    return entry ? presenceItem(key, entry).metas : undefined;
  }

  /**
   * Calls `fn(list, {joins, leaves})` after every presence change (joins and leaves are lists
   * of `{key, metas}`); returns a function that removes it.
   * @param {PresenceListener} fn
   * @returns {() => void}
   */
  onChange(fn) {
    const fns = this.subscription._presenceFns;
    fns.add(fn);
    return () => fns.delete(fn);
  }
}

// --- transports ---
//
// The client speaks to a transport through this small seam: `open()`, `send(text | bytes)`,
// `close()`, and the events `open`, `frame`, `close` (and `error`, for what the client reports
// without closing). A transport reports `close` once, whatever ended it; the client tells its
// current transport's events from a stale one's by identity.

/**
 * @typedef {object} TransportEvents
 * @property {() => void} open the connection is open: frames can be sent
 * @property {(data: string | ArrayBuffer) => void} frame a text or binary frame arrived
 * @property {(code: number, reason: string) => void} close the connection or the attempt ended
 *   (close codes as a WebSocket's: 1006 for a failed attempt or a lost connection)
 * @property {(err: SwitchboardError) => void} error a problem worth reporting
 * @property {(frame: string | ArrayBuffer, code: string) => void} refused the server refused
 *   this frame (too large: `payload_too_large`); the connection goes on
 */
/**
 * @typedef {object} Transport
 * @property {TransportName} name
 * @property {() => void} open starts connecting
 * @property {(data: string | ArrayBuffer | ArrayBufferView) => void} send throws when closed
 * @property {(code?: number) => Promise<void>} close resolves once closed
 */

/**
 * A WebSocket.
 * @implements {Transport}
 */
class WebSocketTransport {
  /**
   * @param {string} url a `ws(s)://` URL
   * @param {typeof WebSocket} WebSocketClass
   * @param {TransportEvents} events
   */
  constructor(url, WebSocketClass, events) {
    /** @type {TransportName} */
    this.name = "websocket";
    /** @type {string} */
    this.url = url;
    /** @type {typeof WebSocket} */
    this.WebSocketClass = WebSocketClass;
    /** @type {TransportEvents} */
    this.events = events;
    /** @type {WebSocket | null} */
    this.ws = null;
    /** @type {boolean} */
    this.ended = false;
  }

  open() {
    if (typeof this.WebSocketClass !== "function") {
      throw new Error("no WebSocket: pass options.WebSocket (Node 20 also has --experimental-websocket)");
    }
    const ws = new this.WebSocketClass(this.url);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.addEventListener("open", () => this.events.open());
    ws.addEventListener("message", (ev) => this.events.frame(ev.data));
    ws.addEventListener("close", (ev) => this.#end(ev.code, ev.reason));
    // An "error" means the connection failed (close code 1006). Browsers follow it with a
    // "close"; Node 20's WebSocket does not for a refused upgrade. The first one counts.
    ws.addEventListener("error", () => {
      this.#end(1006, "");
      try {
        ws.close();
      } catch {
        // Already closed.
      }
    });
  }

  /** @param {string | ArrayBuffer | ArrayBufferView} data */
  send(data) {
    /** @type {WebSocket} */ (this.ws).send(data);
  }

  /**
   * @param {number} [code]
   * @returns {Promise<void>}
   */
  close(code = 1000) {
    const ws = this.ws;
    if (!ws || ws.readyState === 3 /* CLOSED */) return Promise.resolve();
    /** @type {Promise<void>} */
    const closed = new Promise((resolve) => ws.addEventListener("close", () => resolve(), { once: true }));
    try {
      ws.close(code);
    } catch {
      // Already closing.
    }
    return closed;
  }

  /**
   * @param {number} code
   * @param {string} reason
   */
  #end(code, reason) {
    if (this.ended) return;
    this.ended = true;
    this.events.close(code, reason);
  }
}

/** Frames in one upstream `POST` at most (the server's `http_max_frames` default). */
const HTTP_MAX_FRAMES = 100;
/** Characters of frames in one upstream `POST` at most: well under `http_max_body` (1 MiB). */
const HTTP_MAX_BATCH_CHARS = 256 * 1024;
/** Attempts of one upstream `POST` (the same `Switchboard-Seq`) before the connection is given up. */
const HTTP_POST_ATTEMPTS = 5;
/** How long `close()` waits for the frames sent before it to go out. */
const HTTP_CLOSE_DRAIN_MS = 2000;

/**
 * The HTTP transport (docs/http-transport.md): a Server-Sent Events stream read with `fetch`
 * carries the server's frames; the client's go up in `POST`s, one at a time, the frames queued
 * meanwhile gathered into the next batch.
 * @implements {Transport}
 */
class HttpTransport {
  /**
   * @param {string} url the channel's `http(s)://` URL, with the query (and token)
   * @param {typeof fetch} fetchFn
   * @param {TransportEvents} events
   * @param {number} openTimeout ms the stream's first event may take
   */
  constructor(url, fetchFn, events, openTimeout) {
    /** @type {TransportName} */
    this.name = "http";
    /** @type {string} */
    this.url = url;
    /** @type {typeof fetch} */
    this.fetch = fetchFn;
    /** @type {TransportEvents} */
    this.events = events;
    /** @type {number} */
    this.openTimeout = openTimeout;
    /** @type {AbortController} */
    this.abort = new AbortController();
    /** @type {{id: string, secret: string} | null} set by the stream's `open` event */
    this.identity = null;
    /** @type {boolean} */
    this.ended = false;
    /** @type {(string | ArrayBuffer)[]} frames waiting for the next `POST` */
    this.queue = [];
    /** @type {boolean} whether a `POST` is under way */
    this.posting = false;
    /** @type {boolean} a `ping` to answer */
    this.pong = false;
    /** @type {number} the next batch's `Switchboard-Seq` */
    this.seq = 0;
    /** @type {(() => void)[]} waiting for the queue to drain */
    this.drained = [];
    /** @type {Promise<void> | null} */
    this.closing = null;
    /** @type {Timer | null} the stream's first event is due */
    this.openTimer = null;
    /** @type {number} after a batch was refused as too large: this many frames go one a POST */
    this.oneByOne = 0;
    /** @type {(() => void) | null} ends the connection when the page goes away (browsers) */
    this.onPageHide = null;
  }

  open() {
    if (typeof this.fetch !== "function") throw new Error("no fetch: pass options.fetch");
    this.#read().catch(() => this.#end(1006, ""));
    if (typeof window !== "undefined" && typeof window.addEventListener === "function") {
      // A page that goes away says so (`keepalive` lets the request outlive the page): the
      // server would otherwise notice only at its next write. A page restored from the
      // back/forward cache reconnects.
      this.onPageHide = () => {
        if (this.identity && !this.ended) this.#delete(true);
        this.#end(1006, "page hidden");
      };
      window.addEventListener("pagehide", this.onPageHide);
    }
  }

  async #read() {
    this.openTimer = setTimeout(() => {
      if (this.identity || this.ended) return;
      this.events.error(
        new SwitchboardError(
          "stream_buffered",
          `no event on the HTTP stream within ${this.openTimeout} ms: a proxy is probably buffering it`,
        ),
      );
      this.#end(1006, "stream_buffered");
    }, this.openTimeout);
    try {
      const res = await this.fetch(this.url, {
        headers: { accept: "text/event-stream" },
        cache: "no-store",
        // Cookies go along cross-origin too, as with a WebSocket (the server answers CORS).
        credentials: "include",
        signal: this.abort.signal,
      });
      if (res.status !== 200 || !res.body) {
        // A refused connect: what a WebSocket reports as a failed upgrade (1006), with the
        // server's error code (`unauthorized`, `too_many_user_connections` ...) as the reason.
        let code = `http_${res.status}`;
        try {
          const body = await res.json();
          if (typeof body?.error?.code === "string") code = body.error.code;
        } catch {
          // Not JSON: the status says enough.
        }
        this.#end(1006, code);
        return;
      }
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      const parser = new SseParser((event, data) => this.#onEvent(event, data));
      for (;;) {
        const { value, done } = await reader.read();
        if (this.ended) {
          reader.cancel().catch(() => {});
          return;
        }
        if (done) break;
        parser.push(decoder.decode(value, { stream: true }));
      }
      // The response ended without a `close` event: the connection was lost.
      this.#end(1006, "");
    } catch {
      this.#end(1006, "");
    }
  }

  /**
   * @param {string} event
   * @param {string} data
   */
  #onEvent(event, data) {
    if (this.ended) return;
    if (!this.identity) {
      let open = null;
      try {
        open = event === "open" ? JSON.parse(data) : null;
      } catch {
        // Reported below.
      }
      if (typeof open?.id !== "string" || typeof open?.secret !== "string") {
        this.events.error(new SwitchboardError("bad_frame", "the HTTP stream did not begin with an `open` event"));
        this.#end(1002, "bad_stream");
        return;
      }
      clearTimeout(/** @type {Timer} */ (this.openTimer));
      this.identity = { id: open.id, secret: open.secret };
      this.events.open();
      return;
    }
    if (event === "message") {
      this.events.frame(data);
    } else if (event === "binary") {
      this.events.frame(base64ToBuffer(data));
    } else if (event === "ping") {
      // Any POST answers; an empty batch when nothing else is going up.
      this.pong = true;
      this.#pump();
    } else if (event === "close") {
      let close = null;
      try {
        close = JSON.parse(data);
      } catch {
        // A close all the same.
      }
      this.#end(typeof close?.code === "number" ? close.code : 1005, typeof close?.reason === "string" ? close.reason : "");
    }
  }

  /** @param {string | ArrayBuffer | ArrayBufferView} data */
  send(data) {
    if (this.ended || this.closing || !this.identity) throw new Error("the HTTP connection is not open");
    if (typeof data === "string") this.queue.push(data);
    // A copy: the caller may reuse its buffer once send() returned, as with a WebSocket.
    else if (data instanceof ArrayBuffer) this.queue.push(data.slice(0));
    else this.queue.push(new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice().buffer);
    this.#pump();
  }

  /** Sends the next batch unless one is under way. */
  #pump() {
    if (this.posting || this.ended || !this.identity) return;
    /** @type {string | ArrayBuffer} */
    let body;
    let type = "application/json";
    const first = this.queue[0];
    if (first instanceof ArrayBuffer) {
      // A binary frame goes alone, as the body.
      body = first;
      this.queue.shift();
      type = "application/octet-stream";
    } else if (first !== undefined) {
      // Text frames are JSON objects already: the batch is their array.
      const texts = [];
      let chars = 0;
      const most = this.oneByOne > 0 ? 1 : HTTP_MAX_FRAMES;
      while (texts.length < most && typeof this.queue[0] === "string") {
        const text = /** @type {string} */ (this.queue[0]);
        if (texts.length > 0 && chars + text.length > HTTP_MAX_BATCH_CHARS) break;
        texts.push(text);
        chars += text.length + 1;
        this.queue.shift();
      }
      body = `[${texts.join(",")}]`;
    } else if (this.pong) {
      body = "[]";
    } else {
      for (const resolve of this.drained.splice(0)) resolve();
      return;
    }
    this.pong = false;
    this.posting = true;
    if (this.oneByOne > 0) this.oneByOne -= 1;
    this.#post(this.seq++, body, type, 1);
  }

  /**
   * One batch, retried with the same seq (the server ignores a repeat it already handled).
   * @param {number} seq
   * @param {string | ArrayBuffer} body
   * @param {string} type
   * @param {number} attempt
   */
  async #post(seq, body, type, attempt) {
    const { id, secret } = /** @type {{id: string, secret: string}} */ (this.identity);
    let status = 0;
    let code = "";
    try {
      const res = await this.fetch(this.url, {
        method: "POST",
        credentials: "include",
        headers: {
          "content-type": type,
          "switchboard-connection": id,
          "switchboard-secret": secret,
          "switchboard-seq": String(seq),
        },
        body,
      });
      status = res.status;
      if (status >= 200 && status < 300) {
        await res.arrayBuffer().catch(() => {});
      } else {
        const err = await res.json().catch(() => null);
        code = typeof err?.error?.code === "string" ? err.error.code : `http_${status}`;
      }
    } catch {
      status = 0; // no answer: the network, or the server went away
    }
    if (this.ended) return;
    if (status >= 200 && status < 300) {
      this.posting = false;
      this.#pump();
      return;
    }
    // Lost, a gateway's error, or the server's queue is full for now: the same batch again,
    // a little later. Anything else will not get better.
    const transient = status === 0 || status === 429 || status === 502 || status === 503 || status === 504;
    if (transient && attempt < HTTP_POST_ATTEMPTS) {
      setTimeout(() => this.#post(seq, body, type, attempt + 1), 50 * 2 ** attempt);
      return;
    }
    if (status === 413) {
      // Refused whole and without using its number: a frame over the server's size limit, or
      // more frames than it takes at once. The frames go again one a POST, under the same
      // number; a single one refused is given back to the client (where a WebSocket would
      // have closed with 1009, the connection goes on).
      this.seq = seq;
      this.posting = false;
      const frames = typeof body === "string" ? /** @type {any[]} */ (JSON.parse(body)).map((f) => JSON.stringify(f)) : [body];
      if (frames.length > 1) {
        this.queue.unshift(...frames);
        this.oneByOne = frames.length;
      } else {
        this.events.refused(frames[0], code || "payload_too_large");
      }
      this.#pump();
      return;
    }
    // The connection cannot go on without this batch: end it (as a WebSocket would with 1009
    // for a message too big) and let the client reconnect.
    this.#delete();
    this.#end(status === 413 ? 1009 : 1006, code || "upstream_failed");
  }

  /**
   * Sends what was queued, then ends the connection on the server (`DELETE`: code 1000).
   * @returns {Promise<void>}
   */
  close() {
    if (this.closing) return this.closing;
    this.closing = (async () => {
      if (this.identity && !this.ended && (this.posting || this.queue.length > 0)) {
        // The frames sent before close() still go out, as on a WebSocket.
        await Promise.race([
          new Promise((resolve) => this.drained.push(() => resolve(undefined))),
          new Promise((resolve) => setTimeout(resolve, HTTP_CLOSE_DRAIN_MS)),
        ]);
      }
      if (this.identity && !this.ended) await this.#delete();
      this.#end(1000, "");
    })();
    return this.closing;
  }

  /**
   * Ends the connection on the server; errors are of no interest.
   * @param {boolean} [keepalive] the request outlives the page
   */
  async #delete(keepalive = false) {
    if (!this.identity) return;
    try {
      const res = await this.fetch(this.url, {
        method: "DELETE",
        credentials: "include",
        keepalive,
        headers: { "switchboard-connection": this.identity.id, "switchboard-secret": this.identity.secret },
      });
      await res.arrayBuffer().catch(() => {});
    } catch {
      // The server is gone: so is the connection.
    }
  }

  /**
   * @param {number} code
   * @param {string} reason
   */
  #end(code, reason) {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(/** @type {Timer} */ (this.openTimer));
    if (this.onPageHide) window.removeEventListener("pagehide", this.onPageHide);
    this.abort.abort();
    for (const resolve of this.drained.splice(0)) resolve();
    this.events.close(code, reason);
  }
}

/**
 * A Server-Sent Events parser (the WHATWG rules): lines end with CRLF, LF or CR (a CRLF may be
 * split across chunks), `data` lines of one event are joined with `\n`, a blank line ends the
 * event, comment lines (`:` ...) and unknown fields are ignored.
 */
class SseParser {
  /** @param {(event: string, data: string) => void} onEvent */
  constructor(onEvent) {
    /** @type {(event: string, data: string) => void} */
    this.onEvent = onEvent;
    /** @type {string} the start of a line whose end has not arrived */
    this.partial = "";
    /** @type {boolean} the last chunk ended with CR: an LF first in the next one is its CRLF */
    this.afterCr = false;
    /** @type {string} */
    this.event = "";
    /** @type {string[]} */
    this.data = [];
  }

  /** @param {string} chunk */
  push(chunk) {
    let start = 0;
    if (this.afterCr && chunk.charCodeAt(0) === 10) start = 1;
    this.afterCr = false;
    const eol = /\r\n|\r|\n/g;
    eol.lastIndex = start;
    for (let m = eol.exec(chunk); m !== null; m = eol.exec(chunk)) {
      const line = this.partial + chunk.slice(start, m.index);
      this.partial = "";
      start = m.index + m[0].length;
      if (m[0] === "\r" && start === chunk.length) this.afterCr = true;
      this.#line(line);
    }
    this.partial += chunk.slice(start);
  }

  /** @param {string} line */
  #line(line) {
    if (line === "") {
      // An event with a type and no data (a `ping`) counts too.
      if (this.data.length > 0 || this.event !== "") this.onEvent(this.event || "message", this.data.join("\n"));
      this.event = "";
      this.data = [];
      return;
    }
    if (line.charCodeAt(0) === 58 /* : */) return;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.charCodeAt(0) === 32 /* space */) value = value.slice(1);
    if (field === "event") this.event = value;
    else if (field === "data") this.data.push(value);
  }
}

/**
 * @param {string} text standard base64
 * @returns {ArrayBuffer}
 */
function base64ToBuffer(text) {
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes.buffer;
}

/**
 * A resolved `ws(s)://` URL as the HTTP transport's `http(s)://` one.
 * @param {string} url
 * @returns {string}
 */
function httpUrl(url) {
  const u = new URL(url);
  if (u.protocol === "ws:") u.protocol = "http:";
  else if (u.protocol === "wss:") u.protocol = "https:";
  return u.href;
}

/**
 * @param {any} v
 * @returns {boolean}
 */
function isObject(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

/**
 * @param {string} key
 * @param {any} entry
 * @returns {PresenceItem}
 */
function presenceItem(key, entry) {
  return { key, metas: (entry && entry.metas) || [] };
}

/**
 * @param {any} msg
 * @returns {DeliveryMeta}
 */
function deliveryMeta(msg) {
  return { topic: msg.topic, event: msg.event, epoch: msg.epoch, seq: msg.seq };
}

/**
 * @param {any} msg
 * @param {string} [route]
 * @returns {SwitchboardError}
 */
function errorOf(msg, route) {
  const e = msg.error ?? {};
  return new SwitchboardError(e.code ?? "unknown", e.message ?? "", { field: e.field, route });
}

/**
 * `ws(s)://` as is; a path or an `http(s)://` URL becomes `ws(s)://` (paths need a page).
 * @param {string | URL} url
 * @returns {string}
 */
function resolveUrl(url) {
  const text = String(url);
  if (/^wss?:\/\//i.test(text)) return text;
  const base = typeof location !== "undefined" ? location.href : undefined;
  const u = new URL(text, base);
  if (u.protocol === "http:") u.protocol = "ws:";
  else if (u.protocol === "https:") u.protocol = "wss:";
  return u.href;
}
