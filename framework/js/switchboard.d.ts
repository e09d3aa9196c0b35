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
    constructor(code: string, message: string, details?: {
        field?: string;
        route?: string;
        closeCode?: number;
    });
    /** @type {string} */
    code: string;
    /** @type {string | undefined} the offending field path of a `bad_payload` error */
    field: string | undefined;
    /** @type {string | undefined} the route of the message that failed */
    route: string | undefined;
    /** @type {number | undefined} the WebSocket close code, for `closed` errors */
    closeCode: number | undefined;
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
export class Switchboard<C extends ChannelTypes = UntypedChannel> extends Emitter<ClientEvents<C>> {
    /**
     * @param {string | URL | (() => string | URL)} url the channel's `ws(s)://` URL; in a browser
     *   also a path (`"/ws/chat"`) or an `http(s)://` URL. A function is called before every
     *   attempt (e.g. to put a fresh token in the query).
     * @param {SwitchboardOptions} [options]
     */
    constructor(url: string | URL | (() => string | URL), options?: SwitchboardOptions);
    /** @type {string | URL | (() => string | URL)} */
    url: string | URL | (() => string | URL);
    /** @type {number} the default request timeout in ms (0: none) */
    timeout: number;
    /** @type {Required<Omit<ReconnectOptions, "shouldRetry">> & {shouldRetry: ReconnectOptions["shouldRetry"] | null} | null} */
    reconnect: (Required<Omit<ReconnectOptions, "shouldRetry">> & {
        shouldRetry: ReconnectOptions["shouldRetry"] | null;
    }) | null;
    /** @type {string} */
    routeKey: string;
    /** @type {typeof WebSocket} */
    WebSocket: typeof WebSocket;
    /** @type {typeof fetch} */
    fetch: typeof fetch;
    /** @type {"auto" | "websocket" | "http"} the `transport` option */
    transportMode: "auto" | "websocket" | "http";
    /** @type {number} */
    fallbackAfterMs: number;
    /** @type {number} */
    websocketRetryMs: number;
    /** @type {number} */
    streamOpenTimeoutMs: number;
    /** @type {SwitchboardOptions["onOpen"] | null} */
    onOpen: SwitchboardOptions["onOpen"] | null;
    /** @type {SwitchboardOptions["getToken"] | null} */
    getToken: SwitchboardOptions["getToken"] | null;
    /** @type {string} */
    tokenParam: string;
    /** @type {"idle" | "connecting" | "open" | "reconnecting" | "closed"} */
    state: "idle" | "connecting" | "open" | "reconnecting" | "closed";
    /** @internal @type {string[]} */
    _routePath: string[];
    /** @internal @type {Transport | null} the connection (or attempt) in use */
    _conn: Transport | null;
    /** @internal @type {TransportName | null} the transport of the last open connection */
    _transport: TransportName | null;
    /** @internal @type {boolean} on "auto": HTTP worked after a WebSocket did not (kept for the client's lifetime) */
    _fellBack: boolean;
    /** @internal @type {boolean} on "auto": a WebSocket opened once (no fallback after that) */
    _websocketWorked: boolean;
    /** @internal @type {Transport | null} on "auto" over HTTP: a WebSocket tried in the background */
    _probe: Transport | null;
    /** @internal @type {Timer | null} the next background WebSocket try, or its deadline */
    _probeTimer: Timer | null;
    /** @internal @type {number} */
    _ref: number;
    /** @internal @type {Map<number, PendingRequest>} */
    _pending: Map<number, PendingRequest>;
    /** @internal @type {Map<string, Subscription<any>>} */
    _subs: Map<string, Subscription<any>>;
    /** @internal @type {{resolve: () => void, reject: (err: SwitchboardError) => void}[]} */
    _waiters: {
        resolve: () => void;
        reject: (err: SwitchboardError) => void;
    }[];
    /** @internal @type {number} */
    _attempt: number;
    /** @internal @type {Timer | null} */
    _timer: Timer | null;
    /** @internal @type {number} */
    _openedAt: number;
    /** @internal @type {boolean} */
    _everOpened: boolean;
    /** @internal @type {number} the last close code (4401: the token expired) */
    _lastCode: number;
    /** @internal @type {number} counts `_open` calls: a token that arrives late is dropped */
    _attemptId: number;
    /** Whether a connection is open. */
    get connected(): boolean;
    /**
     * The transport of the open connection (or of the last one): `"websocket"` or `"http"`;
     * null before the first open. The `"transport"` event says when it changes.
     * @returns {TransportName | null}
     */
    get transport(): TransportName | null;
    /**
     * Opens the connection. Resolves once it is open; rejects (code `closed`) when the client
     * gives up first: `close()` was called, reconnecting is off and the attempt failed, or the
     * server closed with a final code. While reconnecting it tries again at once.
     * @returns {Promise<void>}
     */
    connect(): Promise<void>;
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
    request<K extends RouteName<C>>(route: K, ...args: RequestArgs<C, K>): Promise<C["routes"][K]["reply"]>;
    /**
     * Sends `{route, data}` without a ref: no reply is awaited (a handler's answer, if any, comes
     * as a `"reply"` event, its error as an `"error"` event). Throws a `SwitchboardError` with
     * code `closed` when not connected: nothing is queued.
     * @template {RouteName<C>} K
     * @param {K} route
     * @param {SendArgs<C, K>} args the payload (`data`)
     */
    send<K extends RouteName<C>>(route: K, ...args: SendArgs<C, K>): void;
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
    subscribe<T extends TopicName<C>>(topic: T, options?: SubscribeOptions): Promise<Subscription<C["topics"][T]>>;
    /**
     * Closes the connection with 1000 and stops reconnecting. Pending requests reject with code
     * `closed`, subscriptions end. Resolves when the socket has closed. `connect()` starts over.
     * @returns {Promise<void>}
     */
    close(): Promise<void>;
    /** @internal */
    _open(): void;
    /**
     * Opens a connection, with `token` in the URL when there is one.
     * @internal
     * @param {string | null} token
     */
    _dial(token: string | null): void;
    /**
     * The channel's `ws(s)://` URL for this attempt, with `token` in the query.
     * @internal
     * @param {string | null} token
     * @returns {string}
     */
    _url(token: string | null): string;
    /**
     * Starts a connection over `name`. With `fallback`, a WebSocket that fails before it opens,
     * or does not open within `fallbackAfterMs`, is given up for an HTTP connection at once.
     * @internal
     * @param {TransportName} name
     * @param {string} url the `ws(s)://` URL
     * @param {boolean} fallback
     */
    _connect(name: TransportName, url: string, fallback: boolean): void;
    /** @internal */
    _onOpen(): void;
    /**
     * On "auto" over HTTP: tries a WebSocket again in `websocketRetryMs`.
     * @internal
     */
    _scheduleProbe(): void;
    /** @internal */
    _dropProbe(): void;
    /**
     * A WebSocket beside the open HTTP connection: when it opens, the client moves over to it.
     * @internal
     */
    _probeWebSocket(): void;
    /**
     * Moves from the HTTP connection to the background WebSocket `probe`: a reconnect (the
     * `onOpen` hook runs, subscriptions are renewed with recovery), once the requests under way
     * were answered (or at `deadline`). The HTTP connection is then ended.
     * @internal
     * @param {Transport} probe
     * @param {number} deadline
     */
    _switchTo(probe: Transport, deadline: number): void;
    /**
     * @internal
     * @param {number} code
     * @param {string} reason
     */
    _onClose(code: number, reason: string): void;
    /**
     * The end: no more attempts until `connect()`.
     * @internal
     * @param {number} code
     * @param {string} reason
     * @param {string} why
     */
    _finish(code: number, reason: string, why: string): void;
    /**
     * The server refused a frame without closing (over HTTP, one too large): its request
     * rejects with the server's code; a frame without a ref is reported as an `"error"`.
     * @internal
     * @param {string | ArrayBuffer} frame
     * @param {string} code
     */
    _onRefused(frame: string | ArrayBuffer, code: string): void;
    /**
     * @internal
     * @param {SwitchboardError} err
     */
    _failPending(err: SwitchboardError): void;
    /**
     * `{"type": route, "ref": ref, "data": data}`, with the route under the route key path.
     * @internal
     * @param {string} route
     * @param {any} data
     * @param {number} [ref]
     * @returns {string}
     */
    _frame(route: string, data: any, ref?: number): string;
    /**
     * @internal
     * @param {string | ArrayBuffer} raw
     */
    _onFrame(raw: string | ArrayBuffer): void;
    /**
     * @internal
     * @param {any} msg
     */
    _onReply(msg: any): void;
    /**
     * The server asks for a new token: of the connection, or of a subscription (`topic`).
     * @internal
     * @param {{topic?: string, expires_in?: number}} ask
     */
    _onRefresh(ask: {
        topic?: string;
        expires_in?: number;
    }): void;
    /**
     * Sends a new token on the built-in `refresh` route: the connection's, or with `topic` a
     * subscription's. Resolves with the reply, `{expires_in}` (ms; `null`: no expiry); rejects
     * with the server's error (`unauthorized`, `token_expired` ...). The client does this by
     * itself when it has a `getToken`.
     * @param {string} token
     * @param {string} [topic]
     * @returns {Promise<{topic?: string, expires_in: number | null}>}
     */
    refresh(token: string, topic?: string): Promise<{
        topic?: string;
        expires_in: number | null;
    }>;
    /**
     * Sends (or renews, after a reconnect) a subscription.
     * @internal
     * @param {Subscription} sub
     */
    _join(sub: Subscription): void;
    /**
     * @internal
     * @param {Subscription} sub
     * @param {object} data
     * @param {Position | null} position
     * @param {() => boolean} current
     */
    _subscribe(sub: Subscription, data: object, position: Position | null, current: () => boolean): void;
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
export class Subscription<E extends {
    [event: string]: any;
} = {
    [event: string]: any;
}> extends Emitter<TopicEvents<E>> {
    /**
     * Use `sb.subscribe()`.
     * @param {Switchboard<any>} client
     * @param {string} topic
     * @param {SubscribeOptions} [options]
     */
    constructor(client: Switchboard<any>, topic: string, { recover, last, since, getToken }?: SubscribeOptions);
    /** @type {SubscribeOptions["getToken"] | null} */
    getToken: SubscribeOptions["getToken"] | null;
    /** @type {Switchboard<any>} */
    client: Switchboard<any>;
    /** @type {string} */
    topic: string;
    /** @type {boolean} */
    recover: boolean;
    /** @type {number | undefined} */
    last: number | undefined;
    /** @type {"joining" | "joined" | "closed"} */
    state: "joining" | "joined" | "closed";
    /** @type {string | null} the topic history's epoch (topics with history) */
    epoch: string | null;
    /** @type {number | null} the last seen publication's seq */
    seq: number | null;
    /** @type {boolean | null} the last recovery's outcome (null: none asked yet) */
    recovered: boolean | null;
    /** @internal @type {boolean} */
    _confirmed: boolean;
    /** @internal @type {(() => void)[] | null} */
    _buffer: (() => void)[] | null;
    /** @internal @type {Map<string, any>} */
    _presence: Map<string, any>;
    /** @internal @type {Set<PresenceListener>} */
    _presenceFns: Set<PresenceListener>;
    /** @internal @type {(sub: Subscription<E>) => void} */
    _resolve: (sub: Subscription<E>) => void;
    /** @internal @type {(err: SwitchboardError) => void} */
    _reject: (err: SwitchboardError) => void;
    /** @internal @type {Promise<Subscription<E>>} */
    _ready: Promise<Subscription<E>>;
    /**
     * The last seen position (`{epoch, seq}`), or null on topics without history. Saved, it can
     * be passed back as `since` after a page reload.
     * @returns {Position | null}
     */
    get position(): Position | null;
    /**
     * The topic's presence (a view kept up to date by this subscription).
     * @returns {Presence}
     */
    presence(): Presence;
    /**
     * Leaves the topic. Listeners get nothing more.
     * @returns {Promise<void>}
     */
    unsubscribe(): Promise<void>;
    /**
     * @internal
     * @param {any} msg
     */
    _deliver(msg: any): void;
    /**
     * @internal
     * @param {SubscribeReply} reply
     * @param {boolean} askedRecovery
     */
    _joined(reply: SubscribeReply, askedRecovery: boolean): void;
    /**
     * @internal
     * @param {SwitchboardError} err
     */
    _fail(err: SwitchboardError): void;
    /**
     * @internal
     * @param {SwitchboardError} err
     */
    _end(err: SwitchboardError): void;
    /**
     * @internal
     * @param {() => void} fn
     */
    _run(fn: () => void): void;
    /** @internal */
    _flush(): void;
    /**
     * @internal
     * @param {string} event
     * @param {any} data
     */
    _applyPresence(event: string, data: any): void;
}
/**
 * Who is on a topic, from its `presence_state` and `presence_diff` deliveries, like Phoenix's
 * `Presence`: one entry per key (a user), with the metadata of the key's connections.
 */
export class Presence {
    /** @param {Subscription} subscription */
    constructor(subscription: Subscription);
    /** @type {Subscription} */
    subscription: Subscription;
    /**
     * One item per present key.
     * @returns {PresenceItem[]}
     */
    list(): PresenceItem[];
    /**
     * One key's metas, or undefined when the key is not present.
     * @param {string} key
     * @returns {any[] | undefined}
     */
    get(key: string): any[] | undefined;
    /**
     * Calls `fn(list, {joins, leaves})` after every presence change (joins and leaves are lists
     * of `{key, metas}`); returns a function that removes it.
     * @param {PresenceListener} fn
     * @returns {() => void}
     */
    onChange(fn: PresenceListener): () => void;
}
export type ReconnectOptions = {
    /**
     * ms before the first retry.
     */
    initialDelay?: number | undefined;
    /**
     * cap on the delay; a connection that stayed up this long
     * also starts the backoff over.
     */
    maxDelay?: number | undefined;
    /**
     * growth of the delay per failed attempt.
     */
    factor?: number | undefined;
    /**
     * share of the delay taken off at random (0: none, 1: full).
     */
    jitter?: number | undefined;
    /**
     * consecutive attempts before giving up.
     */
    maxAttempts?: number | undefined;
    /**
     * after the server closed an open connection with 1001
     * (going away) or 1012 (service restart: a drain before a deploy), the first retry comes
     * after a random delay of 0 to this many ms, so that the clients of a drained node spread
     * out over the other nodes instead of arriving together.
     */
    restartJitter?: number | undefined;
    /**
     * overrides which close
     * codes are retried (default: all but 1000, 1008 and 4000-4099).
     */
    shouldRetry?: ((code: number, reason: string) => boolean) | undefined;
};
export type SwitchboardOptions = {
    /**
     * default request timeout in ms (0: none).
     */
    timeout?: number | undefined;
    /**
     * backoff settings, or `false` for none.
     */
    reconnect?: false | ReconnectOptions | undefined;
    /**
     * the channel's route key: a field, a dotted path
     * (`"meta.action"`) or `"$request.body.action"`.
     */
    routeKey?: string | undefined;
    /**
     * the WebSocket constructor (default: the global one).
     */
    WebSocket?: {
        new (url: string | URL, protocols?: string | string[]): WebSocket;
        prototype: WebSocket;
        readonly CONNECTING: 0;
        readonly OPEN: 1;
        readonly CLOSING: 2;
        readonly CLOSED: 3;
    } | undefined;
    /**
     * how to reach the server: a
     * WebSocket, the HTTP transport (a Server-Sent Events stream down, `POST`s up:
     * docs/http-transport.md), or `"auto"`: a WebSocket first, the HTTP transport when the
     * upgrade fails or does not open within `fallbackAfterMs`.
     */
    transport?: "auto" | "websocket" | "http" | undefined;
    /**
     * on `"auto"`, how long a WebSocket may take to open
     * before the client falls back to HTTP.
     */
    fallbackAfterMs?: number | undefined;
    /**
     * on `"auto"`, after a fallback to HTTP, how often
     * a WebSocket is tried again in the background; when one opens the client moves over to it.
     */
    websocketRetryMs?: number | undefined;
    /**
     * how long the HTTP stream's first event may
     * take: a stream that stays silent longer is held back by a buffering proxy (an `"error"`
     * with code `stream_buffered`, and a failed attempt).
     */
    streamOpenTimeoutMs?: number | undefined;
    /**
     * the `fetch` function of the HTTP transport (default: the
     * global one).
     */
    fetch?: typeof fetch | undefined;
    /**
     * fetches the
     * connection's token: before every attempt (it goes in the URL's `tokenParam` query
     * parameter) and when the server asks for a new one (`refresh`). After the server closed
     * with 4401 (token expired) it is called with `reason: "expired"`: fetch a fresh token then,
     * never a cached one.
     */
    getToken?: ((context: TokenContext) => (string | Promise<string>)) | undefined;
    /**
     * the query parameter the token goes in.
     */
    tokenParam?: string | undefined;
    /**
     * runs on every
     * open, before subscriptions are renewed: a new connection is a new session on the server,
     * so this is where an app logs in again (requests work inside it). Its error is reported as
     * an `"error"` event and the subscriptions are renewed all the same.
     */
    onOpen?: ((info: {
        reconnected: boolean;
    }) => (void | Promise<void>)) | undefined;
};
/**
 * Why a token is asked for: `"connect"` (the first attempt), `"reconnect"` (a later one),
 * `"expired"` (a later one after the server closed with 4401: the old token expired),
 * `"refresh"` (the server asked for a new one while connected).
 */
export type TokenContext = {
    reason: "connect" | "reconnect" | "expired" | "refresh";
};
/**
 * A way to reach the server: `"websocket"`, or `"http"` (a stream down, `POST`s up).
 */
export type TransportName = "websocket" | "http";
/**
 * Why a subscription's token is asked for: `"subscribe"` (the first subscribe),
 * `"resubscribe"` (after a reconnect), `"refresh"` (the server asked for a new one).
 */
export type TopicTokenContext = {
    topic: string;
    reason: "subscribe" | "resubscribe" | "refresh";
};
/**
 * The `"refresh"` event: the server asks for a new token (of the connection, or of `topic`'s
 * subscription) before the old one expires in `expiresIn` ms. `"refreshed"`: a new one was
 * accepted, valid for `expiresIn` ms (`null`: no expiry).
 */
export type RefreshInfo = {
    topic?: string;
    expiresIn: number | null;
};
/**
 * A position in a topic's history: saved, it can be passed back as `since`.
 */
export type Position = {
    epoch: string;
    seq: number;
};
/**
 * What comes with a delivery: its topic and event, and on topics with history its position.
 */
export type DeliveryMeta = {
    topic: string;
    event: string;
    epoch?: string;
    seq?: number;
};
/**
 * `request()` options.
 */
export type RequestOptions = {
    /**
     * in ms, overrides the client's (0: none).
     */
    timeout?: number | undefined;
};
/**
 * `subscribe()` options.
 */
export type SubscribeOptions = {
    /**
     * after a reconnect, ask for what was missed.
     */
    recover?: boolean | undefined;
    /**
     * on the first subscribe, replay up to this many recent publications.
     */
    last?: number | undefined;
    /**
     * on the first subscribe, recover from a position saved earlier.
     */
    since?: Position | undefined;
    /**
     * the
     * topic's own token, for topics that need one: sent with every subscribe, and when the
     * server asks for a new one.
     */
    getToken?: ((context: TopicTokenContext) => (string | Promise<string>)) | undefined;
};
/**
 * The server's reply to a subscribe (topics with history: the position; after a recovery
 * request: whether it succeeded).
 */
export type SubscribeReply = {
    epoch?: string;
    seq?: number;
    recovered?: boolean;
    [field: string]: any;
};
/**
 * the `"open"` event
 */
export type OpenInfo = {
    reconnected: boolean;
};
/**
 * the `"close"` event
 */
export type CloseInfo = {
    code: number;
    reason: string;
    reconnect: boolean;
};
/**
 * The `"reconnecting"` event: the next attempt is in `delay` ms.
 */
export type ReconnectingInfo = {
    attempt: number;
    delay: number;
    code: number;
    reason: string;
};
/**
 * one present key and its connections' metadata
 */
export type PresenceItem = {
    key: string;
    metas: any[];
};
export type PresenceDiff = {
    joins: PresenceItem[];
    leaves: PresenceItem[];
};
export type PresenceListener = (list: PresenceItem[], diff: PresenceDiff) => void;
/**
 * A client's events and their listeners' arguments; any other name is a server push, `(data)`.
 */
export type SwitchboardEvents = {
    open: [info: OpenInfo];
    close: [info: CloseInfo];
    reconnecting: [info: ReconnectingInfo];
    error: [error: SwitchboardError];
    reply: [data: any, route: string];
    delivery: [data: any, meta: DeliveryMeta];
    binary: [data: ArrayBuffer];
    refresh: [info: RefreshInfo];
    refreshed: [info: RefreshInfo];
    transport: [name: TransportName];
};
/**
 * A subscription's events; any other name is a delivery of that event, `(data, meta)`, and
 * `"*"` gets all deliveries.
 */
export type SubscriptionEvents = {
    recovered: [recovered: boolean, reply: SubscribeReply];
    error: [error: SwitchboardError];
    unsubscribed: [error: SwitchboardError];
    refresh: [info: RefreshInfo];
    refreshed: [info: RefreshInfo];
    "*": [data: any, meta: DeliveryMeta];
};
/**
 * an event map that also takes any other name
 */
export type WithOthers<M extends object> = M & {
    [event: string]: any[];
};
/**
 * What a channel's generated types say (`switchboard::schema`, docs/typescript.md): each
 * route's payload and reply, the events the server pushes, the topics with their events, the
 * error codes. The client's type parameter: `new Switchboard<ChatChannel>(url)`.
 */
export type ChannelTypes = {
    routes: {
        [route: string]: {
            payload: any;
            reply: any;
        };
    };
    pushes: {
        [event: string]: any;
    };
    topics: {
        [topic: string]: {
            [event: string]: any;
        };
    };
    errors: string;
};
/**
 * The client's default type parameter: any route, event and topic, with data of any type.
 */
export type UntypedChannel = {
    routes: {
        [route: string]: {
            payload: any;
            reply: any;
        };
    };
    pushes: {
        [event: string]: any;
    };
    topics: {
        [topic: string]: {
            [event: string]: any;
        };
    };
    errors: string;
};
/**
 * A route of channel `C`.
 */
export type RouteName<C extends ChannelTypes> = keyof C["routes"] & string;
/**
 * A topic of channel `C` (its patterns, such as `room:${string}`).
 */
export type TopicName<C extends ChannelTypes> = keyof C["topics"] & string;
/**
 * What `request(route, ...)` takes after the route: the payload (which may be left out when the
 * route takes none) and the options.
 */
export type RequestArgs<C extends ChannelTypes, K extends RouteName<C>> = undefined extends C["routes"][K]["payload"] ? [data?: C["routes"][K]["payload"], options?: RequestOptions] : [data: C["routes"][K]["payload"], options?: RequestOptions];
/**
 * What `send(route, ...)` takes after the route: the payload.
 */
export type SendArgs<C extends ChannelTypes, K extends RouteName<C>> = undefined extends C["routes"][K]["payload"] ? [data?: C["routes"][K]["payload"]] : [data: C["routes"][K]["payload"]];
/**
 * A client's events: its own, and the pushes of channel `C`, `(data)`.
 */
export type ClientEvents<C extends ChannelTypes> = SwitchboardEvents & { [E in keyof C["pushes"]]: [data: C["pushes"][E]]; };
/**
 * A subscription's events: its own, and the topic's events `E`, `(data, meta)`; `"*"` gets
 * them all.
 */
export type TopicEvents<E extends {
    [event: string]: any;
}> = {
    recovered: [recovered: boolean, reply: SubscribeReply];
    error: [error: SwitchboardError];
    "*": [data: E[keyof E], meta: DeliveryMeta];
} & { [K in keyof E]: [data: E[K], meta: DeliveryMeta]; };
export type Timer = ReturnType<typeof setTimeout>;
export type PendingRequest = {
    resolve: (data: any) => void;
    reject: (err: SwitchboardError) => void;
    route: string;
    timer: Timer | null;
};
export type TransportEvents = {
    /**
     * the connection is open: frames can be sent
     */
    open: () => void;
    /**
     * a text or binary frame arrived
     */
    frame: (data: string | ArrayBuffer) => void;
    /**
     * the connection or the attempt ended
     * (close codes as a WebSocket's: 1006 for a failed attempt or a lost connection)
     */
    close: (code: number, reason: string) => void;
    /**
     * a problem worth reporting
     */
    error: (err: SwitchboardError) => void;
    /**
     * the server refused
     * this frame (too large: `payload_too_large`); the connection goes on
     */
    refused: (frame: string | ArrayBuffer, code: string) => void;
};
export type Transport = {
    name: TransportName;
    /**
     * starts connecting
     */
    open: () => void;
    /**
     * throws when closed
     */
    send: (data: string | ArrayBuffer | ArrayBufferView) => void;
    /**
     * resolves once closed
     */
    close: (code?: number) => Promise<void>;
};
/**
 * Listener bookkeeping shared by the client and subscriptions.
 * @template {{[event: string]: any[]}} M the events: name -> the listener's arguments
 */
declare class Emitter<M extends {
    [event: string]: any[];
}> {
    /**
     * Adds a listener; returns a function that removes it.
     * @template {keyof M & string} K
     * @param {K} event
     * @param {(...args: M[K]) => void} fn
     * @returns {() => void}
     */
    on<K extends keyof M & string>(event: K, fn: (...args: M[K]) => void): () => void;
    /**
     * Adds a listener that runs once; returns a function that removes it.
     * @template {keyof M & string} K
     * @param {K} event
     * @param {(...args: M[K]) => void} fn
     * @returns {() => void}
     */
    once<K extends keyof M & string>(event: K, fn: (...args: M[K]) => void): () => void;
    /**
     * Removes a listener added with `on`.
     * @template {keyof M & string} K
     * @param {K} event
     * @param {(...args: M[K]) => void} fn
     */
    off<K extends keyof M & string>(event: K, fn: (...args: M[K]) => void): void;
    /**
     * @internal
     * @param {string} event
     * @param {...any} args
     */
    _emit(event: string, ...args: any[]): void;
    #private;
}
export {};
