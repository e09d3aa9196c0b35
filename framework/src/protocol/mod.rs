//! The wire protocol: JSON text frames in, JSON text frames out.
//!
//! ```text
//! client → server   {"type": "<route>", "ref": "r1" | 7, "data": <payload>}
//! reply (ref)       {"ref": "r1", "ok": true, "data": <value>}
//!                   {"ref": "r1", "ok": false, "error": {"code": "...", "message": "..."}}
//! reply (no ref)    {"type": "<route>", "data": <value>}         (nothing when the handler returns ())
//! error (no ref)    {"type": "<route>", "ok": false, "error": {...}}   ("type" when the route is known)
//! push              {"event": "<event>", "data": <value>}
//! ```
//!
//! The full text is `docs/protocol.md`. Decoding borrows from the frame: the route key, the
//! `ref` and the `data` are ranges of the original text, so a message is parsed once and its
//! payload is deserialized straight from the frame into the handler's type.

use std::fmt;
use std::ops::Range;

use bytestring::ByteString;
use serde::Serialize;

use crate::error::Error;

/// Close codes the framework uses (RFC 6455 §7.4.1).
pub mod close_code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The server is going away (shutdown) or the peer was idle too long.
    pub const GOING_AWAY: u16 = 1001;
    /// A frame broke the WebSocket protocol.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// Policy violation: used for slow consumers under the `close` policy.
    pub const POLICY: u16 = 1008;
    /// A frame was larger than the channel's maximum frame size.
    pub const TOO_BIG: u16 = 1009;
    /// Internal error.
    pub const INTERNAL: u16 = 1011;
    /// Try again later: used for slow consumers under the `close` policy.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// Where the route key sits in a client message: a field path in the JSON body.
///
/// Accepts a plain field name (`"type"`, `"action"`), a dotted path (`"meta.action"`), or AWS
/// API Gateway's route selection expression (`"$request.body.action"`).
///
/// ```
/// use switchboard::protocol::RouteKey;
///
/// let key = RouteKey::parse("$request.body.action").unwrap();
/// assert_eq!(key.to_string(), "action");
/// assert!(RouteKey::parse("$request.header.x").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteKey {
    path: Vec<Box<str>>,
}

impl Default for RouteKey {
    fn default() -> Self {
        RouteKey {
            path: vec!["type".into()],
        }
    }
}

impl fmt::Display for RouteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path.join("."))
    }
}

/// An invalid route key expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid route key expression `{0}`: use a field name, a dotted path or `$request.body.<field>`")]
pub struct InvalidRouteKey(pub String);

impl RouteKey {
    /// Parses a field name, a dotted path, or `$request.body.<path>`.
    pub fn parse(expr: &str) -> Result<Self, InvalidRouteKey> {
        let path = if let Some(rest) = expr.strip_prefix("$request.body.") {
            rest
        } else if expr.starts_with('$') {
            return Err(InvalidRouteKey(expr.to_owned()));
        } else {
            expr
        };
        let segments: Vec<Box<str>> = path.split('.').map(Into::into).collect();
        if segments.iter().any(|s| s.is_empty()) {
            return Err(InvalidRouteKey(expr.to_owned()));
        }
        Ok(RouteKey { path: segments })
    }

    /// The name replies without a `ref` use for the route: the last segment of the path.
    pub fn reply_field(&self) -> &str {
        self.path.last().map_or("type", |s| s)
    }
}

/// A decoded client message: ranges into the frame's text, nothing copied.
#[derive(Clone, Debug)]
pub struct Envelope {
    text: ByteString,
    route: RouteText,
    reference: Option<Range<usize>>,
    data: Option<Range<usize>>,
}

#[derive(Clone, Debug)]
enum RouteText {
    Slice(Range<usize>),
    // The route key had JSON escapes: decoded once into its own string.
    Owned(Box<str>),
}

/// A client message that could not be routed, with its `ref` when it had a usable one.
#[derive(Debug)]
pub struct Rejected {
    /// `bad_json`, `missing_route` or `bad_ref`.
    pub error: Error,
    /// The message's `ref` (raw JSON), so that the error frame answers it.
    pub reference: Option<String>,
}

impl Envelope {
    /// Decodes a client text frame. Errors are the protocol's: `bad_json`, `missing_route`,
    /// `bad_ref`.
    pub fn decode(text: ByteString, key: &RouteKey) -> Result<Envelope, Rejected> {
        let scan = scan(&text, &key.path).map_err(|e| Rejected {
            error: Error::BadJson(e.to_owned()),
            reference: None,
        })?;
        let reference = match scan.reference {
            None => None,
            Some(r) if &text[r.clone()] == "null" => None,
            Some(r) => {
                let first = text.as_bytes()[r.start];
                // Echoed verbatim into the reply, so it must be exactly valid JSON.
                let valid =
                    || serde_json::from_str::<serde::de::IgnoredAny>(&text[r.clone()]).is_ok();
                if (first == b'"' || first == b'-' || first.is_ascii_digit()) && valid() {
                    Some(r)
                } else {
                    return Err(Rejected {
                        error: Error::BadRef,
                        reference: None,
                    });
                }
            }
        };
        let missing = || Rejected {
            error: Error::MissingRoute(key.to_string()),
            reference: reference.clone().map(|r| text[r].to_owned()),
        };
        let route = match scan.route {
            Some(r) if text.as_bytes()[r.start] == b'"' => {
                let raw = &text[r.clone()];
                if raw.contains('\\') {
                    let s: String = serde_json::from_str(raw).map_err(|_| missing())?;
                    RouteText::Owned(s.into_boxed_str())
                } else {
                    RouteText::Slice(r.start + 1..r.end - 1)
                }
            }
            _ => return Err(missing()),
        };
        Ok(Envelope {
            route,
            reference,
            data: scan.data,
            text,
        })
    }

    /// The route key's value.
    pub fn route(&self) -> &str {
        match &self.route {
            RouteText::Slice(r) => &self.text[r.clone()],
            RouteText::Owned(s) => s,
        }
    }

    /// The `ref` as raw JSON (a string with its quotes, or a number), if the client sent one.
    pub fn reference(&self) -> Option<&str> {
        self.reference.as_ref().map(|r| &self.text[r.clone()])
    }

    /// The `data` as raw JSON, if present.
    pub fn data(&self) -> Option<&str> {
        self.data.as_ref().map(|r| &self.text[r.clone()])
    }

    /// The whole frame.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// Where the three fields are in a message, as byte ranges of its text.
#[derive(Default)]
struct Scan {
    route: Option<Range<usize>>,
    reference: Option<Range<usize>>,
    data: Option<Range<usize>>,
}

/// One pass over the message: the top-level object's keys are read, values are skipped by
/// their structure (strings, brackets, literals) without being parsed. `data` is parsed once,
/// later, straight into the handler's type, which validates it; a syntax error there is
/// reported as `bad_json` too.
fn scan(text: &str, route_path: &[Box<str>]) -> Result<Scan, &'static str> {
    let mut out = Scan::default();
    let mut sc = Scanner {
        s: text,
        b: text.as_bytes(),
        i: 0,
    };
    sc.object(|key, value| {
        if key == &*route_path[0] {
            out.route = Some(value);
        } else if key == "ref" {
            out.reference = Some(value);
        } else if key == "data" {
            out.data = Some(value);
        }
    })?;
    sc.ws();
    if sc.i != sc.b.len() {
        return Err("trailing characters after the message");
    }
    // Nested route keys: follow the path through the sub-objects.
    for segment in &route_path[1..] {
        let Some(r) = out.route.take() else { break };
        let mut inner = Scanner {
            s: &text[..r.end],
            b: &text.as_bytes()[..r.end],
            i: r.start,
        };
        if inner.peek() != Some(b'{') {
            break;
        }
        let mut found = None;
        inner.object(|key, value| {
            if key == &**segment {
                found = Some(value);
            }
        })?;
        out.route = found;
    }
    Ok(out)
}

/// Bytes that matter while skipping an object or array.
static STRUCTURAL: [bool; 256] = {
    let mut t = [false; 256];
    t[b'"' as usize] = true;
    t[b'{' as usize] = true;
    t[b'}' as usize] = true;
    t[b'[' as usize] = true;
    t[b']' as usize] = true;
    t
};

/// Nesting deeper than this is refused, like serde_json's recursion limit.
const MAX_DEPTH: u32 = 128;

struct Scanner<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8, what: &'static str) -> Result<(), &'static str> {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(what)
        }
    }

    /// An object; `f` gets each key (unescaped only when it had escapes) and its value's range.
    fn object(&mut self, mut f: impl FnMut(&str, Range<usize>)) -> Result<(), &'static str> {
        self.eat(b'{', "expected a JSON object")?;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.ws();
            let key = self.string()?;
            self.eat(b':', "expected `:` after an object key")?;
            self.ws();
            let value = self.value()?;
            // The quotes are ASCII, so these are char boundaries of the (UTF-8) text.
            let raw_key = &self.s[key.start + 1..key.end - 1];
            if raw_key.contains('\\') {
                let k: String =
                    serde_json::from_str(&self.s[key]).map_err(|_| "invalid escape in a key")?;
                f(&k, value)
            } else {
                f(raw_key, value)
            }
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err("expected `,` or `}` in an object"),
            }
        }
    }

    /// A string with its quotes. Its contents are not checked here: keys and the route are
    /// compared or re-escaped, `ref` is validated by serde, `data` when it is deserialized.
    fn string(&mut self) -> Result<Range<usize>, &'static str> {
        let start = self.i;
        if self.peek() != Some(b'"') {
            return Err("expected a string");
        }
        self.i += 1;
        loop {
            let rest = self.b.get(self.i..).unwrap_or_default();
            match memchr::memchr2(b'"', b'\\', rest) {
                None => return Err("unterminated string"),
                Some(off) if rest[off] == b'"' => {
                    self.i += off + 1;
                    return Ok(start..self.i);
                }
                Some(off) => self.i += off + 2,
            }
        }
    }

    /// Any value, skipped by its structure.
    fn value(&mut self) -> Result<Range<usize>, &'static str> {
        let start = self.i;
        match self.peek() {
            Some(b'"') => {
                self.string()?;
            }
            Some(b'{' | b'[') => self.nested()?,
            Some(b't') => self.literal(b"true")?,
            Some(b'f') => self.literal(b"false")?,
            Some(b'n') => self.literal(b"null")?,
            Some(b'-' | b'0'..=b'9') => {
                while matches!(
                    self.peek(),
                    Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                ) {
                    self.i += 1;
                }
            }
            None => return Err("unexpected end of input"),
            Some(_) => return Err("expected a JSON value"),
        }
        Ok(start..self.i)
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), &'static str> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err("expected a JSON value")
        }
    }

    /// An object or array: brackets must pair up; strings inside are skipped whole.
    fn nested(&mut self) -> Result<(), &'static str> {
        // One bit per open bracket (1 = object): pairs are checked without allocating.
        let mut stack: u128 = 0;
        let mut depth: u32 = 0;
        loop {
            // Everything but quotes and brackets is skipped without looking closer.
            let rest = self.b.get(self.i..).unwrap_or_default();
            self.i += rest
                .iter()
                .position(|&c| STRUCTURAL[c as usize])
                .unwrap_or(rest.len());
            match self.peek() {
                None => return Err("unexpected end of input"),
                Some(b'"') => {
                    self.string()?;
                    continue;
                }
                Some(c @ (b'{' | b'[')) => {
                    if depth == MAX_DEPTH {
                        return Err("nested too deeply");
                    }
                    stack = (stack << 1) | u128::from(c == b'{');
                    depth += 1;
                }
                Some(c @ (b'}' | b']')) => {
                    if stack & 1 != u128::from(c == b'}') {
                        return Err("mismatched brackets");
                    }
                    stack >>= 1;
                    depth -= 1;
                    if depth == 0 {
                        self.i += 1;
                        return Ok(());
                    }
                }
                Some(_) => {}
            }
            self.i += 1;
        }
    }
}

/// Builds outgoing frames. Every encoder writes straight into one buffer: the envelope's
/// fixed parts as literals, the values through serde.
pub(crate) struct FrameBuf(Vec<u8>);

impl FrameBuf {
    pub(crate) fn with_capacity(n: usize) -> Self {
        FrameBuf(Vec::with_capacity(n))
    }

    fn raw(&mut self, s: &str) -> &mut Self {
        self.0.extend_from_slice(s.as_bytes());
        self
    }

    fn string(&mut self, s: &str) -> &mut Self {
        // Writing a &str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.0, s);
        self
    }

    fn value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<&mut Self, Error> {
        serde_json::to_writer(&mut self.0, v)?;
        Ok(self)
    }

    fn finish(self) -> ByteString {
        match String::from_utf8(self.0) {
            Ok(s) => ByteString::from(s),
            // serde_json only writes UTF-8, and the literals are ASCII.
            Err(e) => ByteString::from(String::from_utf8_lossy(e.as_bytes()).into_owned()),
        }
    }
}

/// The prefix of a successful reply: everything up to the value.
fn ok_prefix(buf: &mut FrameBuf, reference: Option<&str>, route_field: &str, route: &str) {
    match reference {
        Some(r) => {
            buf.raw("{\"ref\":").raw(r).raw(",\"ok\":true,\"data\":");
        }
        None => {
            buf.raw("{")
                .string(route_field)
                .raw(":")
                .string(route)
                .raw(",\"data\":");
        }
    }
}

/// `{"ref":R,"ok":true,"data":V}` or, without a ref, `{"type":"route","data":V}`.
pub(crate) fn encode_ok<T: Serialize + ?Sized>(
    reference: Option<&str>,
    route_field: &str,
    route: &str,
    value: &T,
) -> Result<ByteString, Error> {
    let mut buf = FrameBuf::with_capacity(256);
    ok_prefix(&mut buf, reference, route_field, route);
    buf.value(value)?.raw("}");
    Ok(buf.finish())
}

/// An error frame: `{"ref":R,"ok":false,"error":...}`, or without a ref
/// `{"type":route,"ok":false,"error":...}` (no `type` when the route is unknown).
pub(crate) fn encode_error(
    reference: Option<&str>,
    route_field: &str,
    route: Option<&str>,
    err: &Error,
) -> ByteString {
    let mut buf = FrameBuf::with_capacity(96);
    buf.raw("{");
    // A reply to a `ref` is identified by it; otherwise the route says what failed.
    match (reference, route) {
        (Some(r), _) => {
            buf.raw("\"ref\":").raw(r).raw(",");
        }
        (None, Some(route)) => {
            buf.string(route_field).raw(":").string(route).raw(",");
        }
        (None, None) => {}
    }
    buf.raw("\"ok\":false,\"error\":{\"code\":")
        .string(err.code())
        .raw(",\"message\":")
        .string(&err.message());
    if let Some(field) = err.field() {
        buf.raw(",\"field\":").string(field);
    }
    buf.raw("}}");
    buf.finish()
}

/// `{"event":E,"data":V}`.
pub(crate) fn encode_event<T: Serialize + ?Sized>(
    event: &str,
    data: &T,
) -> Result<ByteString, Error> {
    let mut buf = FrameBuf::with_capacity(256);
    buf.raw("{\"event\":").string(event).raw(",\"data\":");
    buf.value(data)?.raw("}");
    Ok(buf.finish())
}

/// `{"topic":T,"event":E,["epoch":..,"seq":N,]"data":D}` with `data` already JSON.
pub(crate) fn encode_delivery(
    topic: &str,
    event: &str,
    position: Option<(&str, u64)>,
    data: &str,
) -> ByteString {
    let mut buf = FrameBuf::with_capacity(48 + topic.len() + event.len() + data.len());
    buf.raw("{\"topic\":")
        .string(topic)
        .raw(",\"event\":")
        .string(event);
    if let Some((epoch, seq)) = position {
        buf.raw(",\"epoch\":").string(epoch).raw(",\"seq\":");
        // Writing a u64 into a Vec cannot fail.
        let _ = buf.value(&seq);
    }
    buf.raw(",\"data\":").raw(data).raw("}");
    buf.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(s: &str) -> Result<Envelope, Error> {
        Envelope::decode(ByteString::from(s.to_owned()), &RouteKey::default()).map_err(|r| r.error)
    }

    #[test]
    fn decodes_the_three_fields_by_borrowing() {
        let e = decode(r#"{"type":"join","ref":"r1","data":{"room":"a"},"x":[1,2]}"#).unwrap();
        assert_eq!(e.route(), "join");
        assert_eq!(e.reference(), Some(r#""r1""#));
        assert_eq!(e.data(), Some(r#"{"room":"a"}"#));
        let e = decode(r#"{"ref":7,"type":"ping"}"#).unwrap();
        assert_eq!(e.reference(), Some("7"));
        assert_eq!(e.data(), None);
    }

    #[test]
    fn escaped_route_is_decoded() {
        let e = decode(r#"{"type":"jo\u0069n"}"#).unwrap();
        assert_eq!(e.route(), "join");
    }

    #[test]
    fn protocol_errors() {
        assert_eq!(decode("not json").unwrap_err().code(), "bad_json");
        assert_eq!(decode("[1,2]").unwrap_err().code(), "bad_json");
        assert_eq!(decode(r#"{"a":1} x"#).unwrap_err().code(), "bad_json");
        assert_eq!(decode(r#"{"data":1}"#).unwrap_err().code(), "missing_route");
        assert_eq!(decode(r#"{"type":3}"#).unwrap_err().code(), "missing_route");
        assert_eq!(
            decode(r#"{"type":"a","ref":{}}"#).unwrap_err().code(),
            "bad_ref"
        );
        assert!(decode(r#"{"type":"a","ref":null}"#)
            .unwrap()
            .reference()
            .is_none());
    }

    #[test]
    fn scanner_rejects_malformed_messages() {
        for bad in [
            "",
            "{",
            r#"{"type":"a""#,
            r#"{"type":"a",}"#,
            r#"{"type" "a"}"#,
            r#"{"type":"a","data":[1,2}"#,
            r#"{"type":"a","data":{"x":"unterminated}"#,
            r#"{"type":"a","data":tru}"#,
            r#"{"type":"a"} {}"#,
        ] {
            assert_eq!(decode(bad).unwrap_err().code(), "bad_json", "{bad:?}");
        }
        let deep = format!(
            r#"{{"type":"a","data":{}{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert_eq!(decode(&deep).unwrap_err().code(), "bad_json");
        let ok = format!(
            r#"{{"type":"a","data":{}{}}}"#,
            "[".repeat(100),
            "]".repeat(100)
        );
        assert!(decode(&ok).is_ok());
    }

    #[test]
    fn refs_are_valid_json_or_rejected() {
        assert_eq!(
            decode(r#"{"type":"a","ref":-}"#).unwrap_err().code(),
            "bad_ref"
        );
        assert_eq!(
            decode(r#"{"type":"a","ref":"\q"}"#).unwrap_err().code(),
            "bad_ref"
        );
        assert_eq!(
            decode(r#"{"type":"a","ref":1.5e3}"#).unwrap().reference(),
            Some("1.5e3")
        );
        let e = decode(r#"{"type":"a","ref":"x\"y","data":{"s":"}\"]"}}"#).unwrap();
        assert_eq!(e.reference(), Some(r#""x\"y""#));
        assert_eq!(e.data(), Some(r#"{"s":"}\"]"}"#));
    }

    #[test]
    fn escaped_keys_are_matched() {
        let e = decode(r#"{"typ\u0065":"join","d\u0061ta":1}"#).unwrap();
        assert_eq!(e.route(), "join");
        assert_eq!(e.data(), Some("1"));
    }

    #[test]
    fn custom_and_nested_route_keys() {
        let key = RouteKey::parse("$request.body.action").unwrap();
        let e =
            Envelope::decode(ByteString::from_static(r#"{"action":"go","data":1}"#), &key).unwrap();
        assert_eq!(e.route(), "go");
        let key = RouteKey::parse("meta.kind").unwrap();
        let e = Envelope::decode(
            ByteString::from_static(r#"{"meta":{"kind":"go","type":"x"},"data":1}"#),
            &key,
        )
        .unwrap();
        assert_eq!(e.route(), "go");
        assert_eq!(key.reply_field(), "kind");
        let missing =
            Envelope::decode(ByteString::from_static(r#"{"meta":{"x":1},"ref":4}"#), &key)
                .unwrap_err();
        assert_eq!(missing.error.code(), "missing_route");
        assert_eq!(missing.reference.as_deref(), Some("4"));
        assert!(RouteKey::parse("a..b").is_err());
    }

    #[test]
    fn encodes_frames() {
        let f = encode_ok(Some(r#""r1""#), "type", "join", &serde_json::json!({"n":1})).unwrap();
        assert_eq!(&*f, r#"{"ref":"r1","ok":true,"data":{"n":1}}"#);
        let f = encode_ok(None, "type", "join", &5).unwrap();
        assert_eq!(&*f, r#"{"type":"join","data":5}"#);
        let f = encode_error(
            Some("3"),
            "type",
            Some("x"),
            &Error::UnknownRoute("x".into()),
        );
        let v: serde_json::Value = serde_json::from_str(&f).unwrap();
        assert_eq!(v["ref"], 3);
        assert_eq!(v["ok"], false);
        assert_eq!(v["error"]["code"], "unknown_route");
        let f = encode_event("tick", &serde_json::json!([1])).unwrap();
        assert_eq!(&*f, r#"{"event":"tick","data":[1]}"#);
    }
}
