//! Decoding a client message: one pass finds the route key, `ref` and `data` as ranges of
//! the frame's text; nothing is copied, and `data` is later deserialized straight from the
//! frame into the handler's type.

use std::ops::Range;

use bytestring::ByteString;

use super::RouteKey;
use crate::error::Error;

/// A decoded client message: ranges into the frame's text, nothing copied.
#[derive(Clone, Debug)]
pub(crate) struct Envelope {
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
pub(crate) struct Rejected {
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
    #[cfg_attr(not(feature = "gateway"), allow(dead_code))]
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
}
