//! Close codes the framework uses (RFC 6455 §7.4.1).

/// Normal closure.
pub const NORMAL: u16 = 1000;
/// The server is going away (shutdown) or the peer was idle too long.
pub const GOING_AWAY: u16 = 1001;
/// A frame broke the WebSocket protocol.
pub const PROTOCOL_ERROR: u16 = 1002;
/// The connection ended without a close frame (never sent in one: a status for metrics and
/// logs).
pub const ABNORMAL: u16 = 1006;
/// A text message that is not UTF-8 (invalid frame payload data).
pub const INVALID_PAYLOAD: u16 = 1007;
/// Policy violation: used for slow consumers under the `close` policy.
pub const POLICY: u16 = 1008;
/// A frame was larger than the channel's maximum frame size.
pub const TOO_BIG: u16 = 1009;
/// Internal error.
pub const INTERNAL: u16 = 1011;
/// Service restart: the server is shutting down or restarting (a drain); reconnect soon,
/// preferably to another node.
pub const SERVICE_RESTART: u16 = 1012;
/// Try again later: used for slow consumers under the `close` policy.
pub const TRY_AGAIN_LATER: u16 = 1013;
/// The connection's token expired without a valid refresh: get a new one, then reconnect.
/// (4000–4099 tell the JavaScript client not to come back; this one does not.)
pub const TOKEN_EXPIRED: u16 = 4401;
