//! Decoding a client message: one pass validates the frame as JSON and finds the route key,
//! `ref` and `data` as ranges of the frame's text; nothing is copied, and `data` is later
//! deserialized straight from the frame into the handler's type.
//!
//! The pass is a strict JSON parser that keeps nothing: a frame is accepted exactly when
//! `serde_json::from_str::<serde_json::Value>` accepts it and it is an object (the protocol
//! answers `bad_json` otherwise), so a frame is never answered as if it were valid when it is
//! not, whichever of its fields the handler reads. The details, as serde_json applies them:
//!
//! - whitespace is space, tab, line feed and carriage return, before and after any token;
//!   nothing but whitespace may follow the object; a byte order mark is not whitespace;
//! - strings: no raw control character (U+0000 to U+001F, NUL included), escapes only
//!   `\" \\ \/ \b \f \n \r \t \uXXXX`, and a UTF-16 surrogate in a `\u` escape must be a high
//!   one followed at once by a `\u` low one;
//! - numbers follow RFC 8259's grammar: `-`, then `0` or a digit string not starting with `0`,
//!   then optionally `.` and digits, `e`/`E`, a sign and digits. Their size is not limited:
//!   a number beyond `f64`'s range is valid JSON and accepted (the one place where
//!   `serde_json::Value`, which must store it as an `f64`, refuses; a payload type that reads
//!   such a number refuses it when it is deserialized);
//! - literals `true`, `false`, `null`; no comments, trailing commas, `NaN` or single quotes;
//! - nesting: at most 127 objects and arrays open at once, the message itself included
//!   (serde_json's recursion limit: the 128th is refused);
//! - keys are compared after unescaping (`"\u0074ype"` is `type`);
//! - a key given twice: the last one wins, as in `serde_json::Value` (and JavaScript's
//!   `JSON.parse`), for the route key, `ref` and `data` as for any other; every occurrence is
//!   validated.

use std::ops::Range;

use bytestring::ByteString;

use super::RouteKey;
use crate::error::ChannelError;

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
    pub error: ChannelError,
    /// The message's `ref` (raw JSON), so that the error frame answers it.
    pub reference: Option<String>,
}

impl Envelope {
    /// Decodes a client text frame. Errors are the protocol's: `bad_json`, `missing_route`,
    /// `bad_ref`.
    pub fn decode(text: ByteString, key: &RouteKey) -> Result<Envelope, Rejected> {
        let scan = scan(&text, &key.path).map_err(|e| Rejected {
            error: ChannelError::BadJson(e.to_owned()),
            reference: None,
        })?;
        let reference = match scan.reference {
            None => None,
            Some(r) if &text[r.clone()] == "null" => None,
            // The scan validated it: a string or a number is valid JSON as it stands, and is
            // echoed verbatim into the reply.
            Some(r) if matches!(text.as_bytes()[r.start], b'"' | b'-' | b'0'..=b'9') => Some(r),
            Some(_) => {
                return Err(Rejected {
                    error: ChannelError::BadRef,
                    reference: None,
                })
            }
        };
        let missing = || Rejected {
            error: ChannelError::MissingRoute(key.to_string()),
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

/// One pass over the message: the top-level object's keys are read and every value is
/// validated to its end (see the module's documentation for the rules); the values of the
/// route key, `ref` and `data` are kept as ranges. Then a nested route key is followed through
/// its (already validated) sub-objects.
fn scan(text: &str, route_path: &[Box<str>]) -> Result<Scan, &'static str> {
    let mut out = Scan::default();
    let b = text.as_bytes();
    let end = object(text, 0, |key, value| {
        // Not `else if`: with a route key such as `data.kind`, `data` is both.
        if key == &*route_path[0] {
            out.route = Some(value.clone());
        }
        if key == "ref" {
            out.reference = Some(value.clone());
        }
        if key == "data" {
            out.data = Some(value);
        }
    })?;
    if skip_ws(b, end) != b.len() {
        return Err("trailing characters after the message");
    }
    // Nested route keys: follow the path through the sub-objects.
    for segment in &route_path[1..] {
        let Some(r) = out.route.take() else { break };
        if b[r.start] != b'{' {
            break;
        }
        let mut found = None;
        object(&text[..r.end], r.start, |key, value| {
            if key == &**segment {
                found = Some(value);
            }
        })?;
        out.route = found;
    }
    Ok(out)
}

/// Objects and arrays open at once, the message itself included, beyond which a message is
/// refused: serde_json's recursion limit (it refuses the 128th).
const MAX_DEPTH: u32 = 127;

/// Bytes that end the plain run of a string's contents: the closing quote, a backslash (an
/// escape), and the control characters, which JSON forbids raw in a string.
static STRING_STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = true;
        c += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// A parse step: the index just past what it read, or why the message is not JSON.
type Step = Result<usize, &'static str>;

#[inline(always)]
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    // Most tokens are followed by no whitespace: one comparison tells (all four are <= ' ').
    if b.get(i).is_some_and(|&c| c > b' ') {
        return i;
    }
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = b.get(i) {
        i += 1;
    }
    i
}

/// The object at `i` (after optional whitespace); `f` gets each key (unescaped when it had
/// escapes) and its value's range. Returns the index past the closing brace.
fn object(s: &str, i: usize, mut f: impl FnMut(&str, Range<usize>)) -> Step {
    let b = s.as_bytes();
    let mut i = skip_ws(b, i);
    if b.get(i) != Some(&b'{') {
        return Err("expected a JSON object");
    }
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return Ok(i + 1);
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return Err("expected a string key");
        }
        let key_start = i;
        let (key_end, escaped) = string(b, i)?;
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return Err("expected `:` after an object key");
        }
        i = skip_ws(b, i + 1);
        let value_start = i;
        i = value(b, i)?;
        if escaped {
            // Validated already: serde_json only decodes it.
            let key: String = serde_json::from_str(&s[key_start..key_end])
                .map_err(|_| "invalid escape in a key")?;
            f(&key, value_start..i);
        } else {
            // The quotes are ASCII, so these are char boundaries of the (UTF-8) text.
            f(&s[key_start + 1..key_end - 1], value_start..i);
        }
        i = skip_ws(b, i);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => return Ok(i + 1),
            _ => return Err("expected `,` or `}` in an object"),
        }
    }
}

/// A value of the message's object, starting at `i`.
fn value(b: &[u8], i: usize) -> Step {
    match b.get(i) {
        Some(b'"') => Ok(string(b, i)?.0),
        Some(b'{' | b'[') => nested(b, i),
        Some(b't') => literal(b, i, b"true"),
        Some(b'f') => literal(b, i, b"false"),
        Some(b'n') => literal(b, i, b"null"),
        Some(b'-' | b'0'..=b'9') => number(b, i),
        None => Err("unexpected end of input"),
        Some(_) => Err("expected a JSON value"),
    }
}

/// The object or array at `i`, a value of the message's object, validated to its end.
/// Iterative, with one bit per open bracket (1 = object): deep nesting costs neither stack nor
/// allocation.
fn nested(b: &[u8], mut i: usize) -> Step {
    let mut stack: u128 = 0;
    // The message's own object is open.
    let mut depth: u32 = 1;
    loop {
        // A value starts at `i`.
        match b.get(i) {
            Some(&c @ (b'{' | b'[')) => {
                if depth == MAX_DEPTH {
                    return Err("nested too deeply");
                }
                depth += 1;
                let is_object = c == b'{';
                stack = (stack << 1) | u128::from(is_object);
                i = skip_ws(b, i + 1);
                let close = if is_object { b'}' } else { b']' };
                if b.get(i) != Some(&close) {
                    if is_object {
                        i = member_key(b, i)?;
                    }
                    continue;
                }
                // Empty: closed below.
            }
            Some(b'"') => i = string(b, i)?.0,
            Some(b't') => i = literal(b, i, b"true")?,
            Some(b'f') => i = literal(b, i, b"false")?,
            Some(b'n') => i = literal(b, i, b"null")?,
            Some(b'-' | b'0'..=b'9') => i = number(b, i)?,
            None => return Err("unexpected end of input"),
            Some(_) => return Err("expected a JSON value"),
        }
        // After a value (or at the closing bracket of an empty one): a comma, or closings.
        loop {
            i = skip_ws(b, i);
            let in_object = stack & 1 == 1;
            match b.get(i) {
                Some(b',') => {
                    i = skip_ws(b, i + 1);
                    if in_object {
                        i = member_key(b, i)?;
                    }
                    break;
                }
                Some(b'}') if in_object => {}
                Some(b']') if !in_object => {}
                _ if in_object => return Err("expected `,` or `}` in an object"),
                _ => return Err("expected `,` or `]` in an array"),
            }
            i += 1;
            stack >>= 1;
            depth -= 1;
            if depth == 1 {
                return Ok(i);
            }
        }
    }
}

/// A key of a nested object, its colon and the whitespace up to its value.
fn member_key(b: &[u8], i: usize) -> Step {
    if b.get(i) != Some(&b'"') {
        return Err("expected a string key");
    }
    let i = skip_ws(b, string(b, i)?.0);
    if b.get(i) != Some(&b':') {
        return Err("expected `:` after an object key");
    }
    Ok(skip_ws(b, i + 1))
}

/// The string whose opening quote is at `i`: the index past its closing quote, and whether it
/// had escapes.
#[inline]
fn string(b: &[u8], mut i: usize) -> Result<(usize, bool), &'static str> {
    i += 1;
    let mut escaped = false;
    loop {
        i = plain_run(b, i);
        match b.get(i) {
            Some(b'"') => return Ok((i + 1, escaped)),
            Some(b'\\') => {
                escaped = true;
                i = escape(b, i + 1)?;
            }
            Some(_) => return Err("control character in a string"),
            None => return Err("unterminated string"),
        }
    }
}

/// The escape after a backslash (at `i`). A `\u` escape of a UTF-16 surrogate must be a high
/// one followed at once by a `\u` escape of a low one: serde_json refuses lone surrogates in
/// strings (they are no Unicode scalar value).
#[cold]
fn escape(b: &[u8], i: usize) -> Step {
    match b.get(i) {
        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(i + 1),
        Some(b'u') => {
            let n = hex4(b, i + 1)?;
            let i = i + 5;
            match n {
                0xDC00..=0xDFFF => Err("lone low surrogate in a \\u escape"),
                0xD800..=0xDBFF => {
                    if b.get(i) != Some(&b'\\') || b.get(i + 1) != Some(&b'u') {
                        return Err("high surrogate without a low one in a \\u escape");
                    }
                    match hex4(b, i + 2)? {
                        0xDC00..=0xDFFF => Ok(i + 6),
                        _ => Err("high surrogate without a low one in a \\u escape"),
                    }
                }
                _ => Ok(i),
            }
        }
        None => Err("unterminated string"),
        Some(_) => Err("invalid escape"),
    }
}

/// Four hex digits at `i`, as a number.
fn hex4(b: &[u8], i: usize) -> Result<u32, &'static str> {
    let digits = b.get(i..i + 4).ok_or("unterminated \\u escape")?;
    digits.iter().try_fold(0u32, |n, &c| {
        let d = (c as char).to_digit(16).ok_or("invalid \\u escape")?;
        Ok(n * 16 + d)
    })
}

/// The number at `i`, by RFC 8259's grammar.
#[inline(always)]
fn number(b: &[u8], mut i: usize) -> Step {
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        // No leading zeros: `01` ends after the `0`, and the `1` is then out of place.
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits(b, i + 1),
        _ => return Err("invalid number"),
    }
    if b.get(i) == Some(&b'.') {
        let end = digits(b, i + 1);
        if end == i + 1 {
            return Err("invalid number");
        }
        i = end;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        let end = digits(b, i);
        if end == i {
            return Err("invalid number");
        }
        i = end;
    }
    Ok(i)
}

/// The end of the run of digits at `i`.
#[inline(always)]
fn digits(b: &[u8], mut i: usize) -> usize {
    // Eight bytes at a time: a byte is a digit when its high nibble is 3 and stays 3 once 6
    // is added (a carry out of a byte that is no digit only disturbs the bytes above it).
    while let Some(chunk) = b.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        let other = ((w & (ONES * 0xF0)) ^ (ONES * 0x30))
            | (((w.wrapping_add(ONES * 0x06)) & (ONES * 0xF0)) ^ (ONES * 0x30));
        if other != 0 {
            return i + (other.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(b'0'..=b'9') = b.get(i) {
        i += 1;
    }
    i
}

/// `0x01` in each byte of a word.
const ONES: u64 = 0x0101_0101_0101_0101;

/// Whether each byte of `w` is zero, in its high bit; exact for the lowest such byte (a borrow
/// from it may mark the bytes above).
#[inline(always)]
fn zero_bytes(w: u64) -> u64 {
    w.wrapping_sub(ONES) & !w & (ONES * 0x80)
}

/// The end of the plain run of a string's contents at `i`: the index of the first quote,
/// backslash or control character, or the end of the text.
#[inline(always)]
fn plain_run(b: &[u8], mut i: usize) -> usize {
    // Eight bytes at a time. Each test marks the lowest byte it looks for exactly (and maybe
    // some above it), so the lowest mark of the three is the first stop.
    while let Some(chunk) = b.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        let stops = zero_bytes(w ^ (ONES * u64::from(b'"')))
            | zero_bytes(w ^ (ONES * u64::from(b'\\')))
            // Below 0x20: subtracting 0x20 borrows, and the high bit was clear.
            | (w.wrapping_sub(ONES * 0x20) & !w & (ONES * 0x80));
        if stops != 0 {
            return i + (stops.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if STRING_STOP[usize::from(c)] {
            break;
        }
        i += 1;
    }
    i
}

fn literal(b: &[u8], i: usize, word: &[u8]) -> Step {
    if b[i..].starts_with(word) {
        Ok(i + word.len())
    } else {
        Err("expected a JSON value")
    }
}

/// The differential check of the scanner against serde_json's strict parser: run by the
/// property tests below and by the fuzz target in `framework/fuzz` (through the `fuzzing`
/// feature, as `switchboard::protocol::__fuzz`). Not an API.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzz {
    use std::borrow::Cow;

    use bytestring::ByteString;
    use serde_json::Value;

    use super::{Envelope, RouteKey};

    /// Route, `ref` and `data` of a routed frame; the error code and `ref` of a refused one.
    #[derive(Debug)]
    enum Outcome<J> {
        Routed {
            route: String,
            reference: Option<J>,
            data: Option<J>,
        },
        Refused {
            code: String,
            reference: Option<J>,
        },
    }

    /// Decodes `text` with the scanner and with `serde_json::from_str::<Value>`, and panics
    /// if they disagree: on accepting it, and then on the route, the `ref` and the `data` (as
    /// JSON values), or on the error code. `route_key` is a [`RouteKey`] expression.
    pub fn check(text: &str, route_key: &str) {
        let key = RouteKey::parse(route_key).expect("a valid route key");
        let got = scanner(text, &key);
        let (want, exact) = oracle(text, &key);
        // `Value` treats an object keyed by serde_json's private raw-value token
        // (`$serde_json::private::RawValue`, in any escaping) as a raw value and refuses it
        // unless the value is a string, although the text is valid JSON, as the scanner finds.
        // Where the scanner and serde_json's own grammar (`IgnoredAny`, which has no such
        // token) both find valid JSON, the oracle cannot judge the rest: skip it.
        let scanner_parsed = !matches!(&got, Outcome::Refused { code, .. } if code == "bad_json");
        let oracle_refused = matches!(&want, Outcome::Refused { code, .. } if code == "bad_json");
        if scanner_parsed
            && oracle_refused
            && serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
        {
            return;
        }
        // Values are compared when the oracle parsed the frame itself; when it had to replace
        // numbers beyond f64's range (see `strict`), only the outline is.
        let same = |got: &Option<String>, want: &Option<Value>| match (got, want) {
            (None, None) => true,
            (Some(g), Some(w)) => {
                !exact || serde_json::from_str::<Value>(g).ok().as_ref() == Some(w)
            }
            _ => false,
        };
        let agree = match (&got, &want) {
            (
                Outcome::Routed {
                    route: gr,
                    reference: gref,
                    data: gd,
                },
                Outcome::Routed {
                    route: wr,
                    reference: wref,
                    data: wd,
                },
            ) => gr == wr && same(gref, wref) && same(gd, wd),
            (
                Outcome::Refused {
                    code: gc,
                    reference: gref,
                },
                Outcome::Refused {
                    code: wc,
                    reference: wref,
                },
            ) => gc == wc && same(gref, wref),
            _ => false,
        };
        assert!(
            agree,
            "the scanner and serde_json disagree on {text:?} (route key `{route_key}`)\n  \
             scanner:    {got:?}\n  serde_json: {want:?}{}",
            if exact {
                ""
            } else {
                " (numbers out of f64's range replaced)"
            }
        );
    }

    fn scanner(text: &str, key: &RouteKey) -> Outcome<String> {
        match Envelope::decode(ByteString::from(text.to_owned()), key) {
            Ok(e) => Outcome::Routed {
                route: e.route().to_owned(),
                reference: e.reference().map(str::to_owned),
                data: e.data().map(str::to_owned),
            },
            Err(r) => Outcome::Refused {
                code: r.error.code().to_owned(),
                reference: r.reference,
            },
        }
    }

    /// What the protocol makes of the frame parsed by serde_json; and whether that parse was
    /// of the frame as it is.
    fn oracle(text: &str, key: &RouteKey) -> (Outcome<Value>, bool) {
        let refused = |code: &str, reference| Outcome::Refused {
            code: code.to_owned(),
            reference,
        };
        let Some((value, exact)) = strict(text) else {
            return (refused("bad_json", None), true);
        };
        let Value::Object(map) = value else {
            return (refused("bad_json", None), exact);
        };
        let reference = match map.get("ref") {
            None | Some(Value::Null) => None,
            Some(v @ (Value::String(_) | Value::Number(_))) => Some(v.clone()),
            Some(_) => return (refused("bad_ref", None), exact),
        };
        let mut route = map.get(&*key.path[0]);
        for segment in &key.path[1..] {
            route = route
                .and_then(Value::as_object)
                .and_then(|o| o.get(&**segment));
        }
        let outcome = match route {
            Some(Value::String(route)) => Outcome::Routed {
                route: route.clone(),
                reference,
                data: map.get("data").cloned(),
            },
            _ => refused("missing_route", reference),
        };
        (outcome, exact)
    }

    /// `serde_json::from_str::<Value>`, except that a number beyond f64's range, which the
    /// grammar allows but `Value` cannot hold, is replaced by `0` and the parse resumed; the
    /// flag says whether none was.
    fn strict(text: &str) -> Option<(Value, bool)> {
        let mut text = Cow::Borrowed(text);
        let mut exact = true;
        loop {
            let e = match serde_json::from_str::<Value>(&text) {
                Ok(v) => return Some((v, exact)),
                Err(e) if e.to_string().starts_with("number out of range") => e,
                Err(_) => return None,
            };
            // serde_json reports a position right after the number, or within it (in the
            // digits of a long exponent): the number starts at the first of the characters a
            // number has, before it, and ends where the grammar says it does.
            let b = text.as_bytes();
            let line_start = match e.line() {
                0 | 1 => 0,
                n => text
                    .match_indices('\n')
                    .nth(n - 2)
                    .map_or(b.len(), |(i, _)| i + 1),
            };
            let at = (line_start + e.column()).min(b.len());
            let in_number =
                |c: &u8| c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E');
            let start = at - b[..at].iter().rev().take_while(|c| in_number(c)).count();
            let end = start + number_prefix(&b[start..]);
            if start >= end {
                // The error is about text inside a string: serde_json parses the string value
                // of its private raw-value key as JSON (see `check`). Nothing here to judge.
                return None;
            }
            // A number that nothing can extend: what follows the old one stays as invalid as
            // it was (`1e400.5` must not become `0.5`).
            text.to_mut().replace_range(start..end, "0.0e0");
            exact = false;
        }
    }

    /// The length of the longest prefix of `s` that is a JSON number (RFC 8259).
    fn number_prefix(s: &[u8]) -> usize {
        let digits = |k: usize| {
            s[k.min(s.len())..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count()
        };
        let mut k = usize::from(s.first() == Some(&b'-'));
        match s.get(k) {
            Some(b'0') => k += 1,
            Some(b'1'..=b'9') => k += digits(k),
            _ => return 0,
        }
        if s.get(k) == Some(&b'.') && digits(k + 1) > 0 {
            k += 1 + digits(k + 1);
        }
        if let Some(b'e' | b'E') = s.get(k) {
            let sign = usize::from(matches!(s.get(k + 1), Some(b'+' | b'-')));
            let d = digits(k + 1 + sign);
            if d > 0 {
                k += 1 + sign + d;
            }
        }
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(s: &str) -> Result<Envelope, ChannelError> {
        Envelope::decode(ByteString::from(s.to_owned()), &RouteKey::default()).map_err(|r| r.error)
    }

    fn accepted_by_serde(s: &str) -> bool {
        serde_json::from_str::<serde_json::Value>(s).is_ok_and(|v| v.is_object())
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
    }

    /// Frames the scanner used to skip through without looking: every one is refused, as
    /// serde_json refuses it, wherever it sits (another field, `data`, `ref`, a key).
    #[test]
    fn invalid_json_anywhere_is_refused() {
        let cases = [
            // Structure.
            r#"{"type":"echo","ref":1,"data":1,"x":[1,,2]}"#,
            r#"{"type":"echo","x":[1,2,]}"#,
            r#"{"type":"echo","x":{"a":1,}}"#,
            r#"{"type":"echo","x":[,]}"#,
            r#"{"type":"echo","x":{"a" 1}}"#,
            r#"{"type":"echo","x":{"a":1 "b":2}}"#,
            r#"{"type":"echo","x":{1:2}}"#,
            r#"{"type":"echo","x":{'a':1}}"#,
            r#"{"type":"echo","x":[1 2]}"#,
            r#"{"type":"echo","x":[}"#,
            r#"{"type":"echo","data":{"a":[1]]}}"#,
            // Literals.
            r#"{"type":"echo","x":tru}"#,
            r#"{"type":"echo","x":truex}"#,
            r#"{"type":"echo","x":True}"#,
            r#"{"type":"echo","data":nul}"#,
            r#"{"type":"echo","x":[undefined]}"#,
            r#"{"type":"echo","x":NaN}"#,
            r#"{"type":"echo","x":-Infinity}"#,
            // Numbers.
            r#"{"type":"echo","x":01}"#,
            r#"{"type":"echo","x":-01}"#,
            r#"{"type":"echo","x":1.}"#,
            r#"{"type":"echo","x":.5}"#,
            r#"{"type":"echo","x":+1}"#,
            r#"{"type":"echo","x":1e}"#,
            r#"{"type":"echo","x":1e+}"#,
            r#"{"type":"echo","x":--1}"#,
            r#"{"type":"echo","x":1-2}"#,
            r#"{"type":"echo","x":0x10}"#,
            r#"{"type":"echo","data":[1.2.3]}"#,
            r#"{"type":"echo","ref":1.}"#,
            r#"{"type":"echo","ref":01}"#,
            // Strings.
            r#"{"type":"echo","x":"\q"}"#,
            r#"{"type":"echo","x":"\x41"}"#,
            r#"{"type":"echo","x":"\'"}"#,
            r#"{"type":"echo","x":"\u12"}"#,
            r#"{"type":"echo","x":"\u12G4"}"#,
            r#"{"type":"echo","x":"\uD800"}"#,
            r#"{"type":"echo","x":"\uDC00\uD800"}"#,
            r#"{"type":"echo","x":"\uD800\n"}"#,
            r#"{"type":"echo","x":"\uD800\u0041"}"#,
            r#"{"type":"echo","data":{"s":"\uDFFF"}}"#,
            r#"{"type":"echo","ref":"\uD800"}"#,
            "{\"type\":\"echo\",\"x\":\"a\tb\"}",
            "{\"type\":\"echo\",\"x\":\"a\nb\"}",
            "{\"type\":\"echo\",\"x\":\"a\u{0}b\"}",
            "{\"type\":\"echo\",\"data\":\"\u{1f}\"}",
            "{\"type\":\"ec\u{1}ho\"}",
            "{\"ty\u{7}pe\":\"echo\"}",
            r#"{"type":"echo","x\q":1}"#,
            // Comments, foreign whitespace and bytes, trailing bytes.
            r#"{"type":"echo",/* c */"data":1}"#,
            r#"{"type":"echo","data":[1 // c
            ]}"#,
            "{\"type\":\"echo\"}\u{0}",
            "{\"type\":\"echo\",\u{0}\"data\":1}",
            "{\"type\":\"echo\",\u{c}\"data\":1}",
            "{\"type\":\"echo\",\u{a0}\"data\":1}",
            "{\"type\":\"echo\",\u{feff}\"data\":1}",
            "\u{feff}{\"type\":\"echo\"}",
            r#"{"type":"echo"},"#,
            r#"{"type":"echo"}}"#,
        ];
        for bad in cases {
            assert!(!accepted_by_serde(bad), "serde_json accepts {bad:?}");
            assert_eq!(
                decode(bad)
                    .map(|e| e.route().to_owned())
                    .unwrap_err()
                    .code(),
                "bad_json",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn valid_json_is_accepted() {
        let cases = [
            // Huge numbers are valid JSON: accepted, and a `ref` is echoed as it came.
            r#"{"type":"a","ref":123456789012345678901234567890,"data":1e400}"#,
            r#"{"type":"a","x":-0.0e-0,"y":1E+2,"z":0.5e999999999999999999}"#,
            r#"{"type":"a","x":"\uD83D\uDE00 \u00e9 \/ \b\f\n\r\t \" \\","data":"\uDBFF\uDFFF"}"#,
            // Raw non-ASCII, DEL, and characters JavaScript but not JSON calls line breaks.
            "{\"type\":\"\u{e9}\u{1F600}\u{7f}\u{2028}\u{2029}\"}",
            " \t\r\n{ \"type\" : \"a\" , \"data\" : [ 1 , { } , [ ] ] } \t\r\n",
            r#"{"type":"a","data":{"":{"":[[],{}]}}}"#,
        ];
        for good in cases {
            let e = decode(good).unwrap_or_else(|e| panic!("{good:?}: {e:?}"));
            assert!(!e.route().is_empty());
        }
        let e = decode(cases[0]).unwrap();
        assert_eq!(e.reference(), Some("123456789012345678901234567890"));
        assert_eq!(e.data(), Some("1e400"));
    }

    #[test]
    fn nesting_is_limited_as_serde_json_limits_it() {
        // The message's object and 126 arrays: 127 open at once, the most serde_json takes.
        for (arrays, ok) in [(126, true), (127, false), (200, false), (100, true)] {
            let text = format!(
                r#"{{"type":"a","x":{}{}}}"#,
                "[".repeat(arrays),
                "]".repeat(arrays)
            );
            assert_eq!(accepted_by_serde(&text), ok, "serde_json, {arrays}");
            match decode(&text) {
                Ok(_) => assert!(ok, "{arrays} arrays accepted"),
                Err(e) => {
                    assert!(!ok, "{arrays} arrays refused");
                    assert_eq!(e.code(), "bad_json");
                }
            }
        }
        // Deep and unclosed, or closed by the wrong bracket.
        assert!(decode(&format!(r#"{{"type":"a","x":{}"#, "[".repeat(100_000))).is_err());
        assert!(decode(r#"{"type":"a","x":[{"a":[}]}]}"#).is_err());
    }

    #[test]
    fn duplicate_keys_take_the_last_like_serde_json() {
        let e = decode(r#"{"type":"a","ref":1,"data":1,"type":"b","ref":"r","data":[2]}"#).unwrap();
        assert_eq!(e.route(), "b");
        assert_eq!(e.reference(), Some(r#""r""#));
        assert_eq!(e.data(), Some("[2]"));
        // Escaped or not, a key is the same key.
        let e = decode(r#"{"\u0074ype":"a","type":"b","typ\u0065":"c"}"#).unwrap();
        assert_eq!(e.route(), "c");
        // The last decides: a later `ref` that is not usable makes the message `bad_ref`,
        // a later non-string route key makes it `missing_route`.
        assert_eq!(
            decode(r#"{"type":"a","ref":1,"ref":[]}"#)
                .unwrap_err()
                .code(),
            "bad_ref"
        );
        assert_eq!(
            decode(r#"{"type":"a","type":null}"#).unwrap_err().code(),
            "missing_route"
        );
        // Every occurrence is validated, the ones that lose included.
        assert_eq!(
            decode(r#"{"type":"a","data":[1,],"data":1}"#)
                .unwrap_err()
                .code(),
            "bad_json"
        );
        // A route key path whose first segment is `data` finds both.
        let key = RouteKey::parse("data.kind").unwrap();
        let e = Envelope::decode(
            ByteString::from_static(r#"{"data":{"kind":"k","n":1}}"#),
            &key,
        )
        .unwrap();
        assert_eq!(e.route(), "k");
        assert_eq!(e.data(), Some(r#"{"kind":"k","n":1}"#));
    }

    #[test]
    fn refs_are_valid_json_or_rejected() {
        assert_eq!(
            decode(r#"{"type":"a","ref":-}"#).unwrap_err().code(),
            "bad_json"
        );
        assert_eq!(
            decode(r#"{"type":"a","ref":"\q"}"#).unwrap_err().code(),
            "bad_json"
        );
        assert_eq!(
            decode(r#"{"type":"a","ref":true}"#).unwrap_err().code(),
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
        let e = decode(r#"{"\u0074ype":"join","\u0072\u0065\u0066":"r"}"#).unwrap();
        assert_eq!(e.route(), "join");
        assert_eq!(e.reference(), Some(r#""r""#));
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

    /// Found by the fuzzer: an object keyed by serde_json's private raw-value token is valid
    /// JSON (the scanner routes it); `Value` refuses it, which the check must not take for the
    /// scanner's mistake.
    #[test]
    fn serde_jsons_raw_value_token_is_just_a_key() {
        let text = "{\"meta\":\n\n\n\n{\"$serde_json::private::RawValue\":\n \n\ntrue}}";
        let got = Envelope::decode(ByteString::from(text), &RouteKey::default());
        assert_eq!(got.unwrap_err().error.code(), "missing_route");
        let routed = r#"{"type":"a","data":{"$serde_json::private::RawValue":true}}"#;
        let env = Envelope::decode(ByteString::from(routed), &RouteKey::default()).unwrap();
        assert_eq!(env.route(), "a");
        super::fuzz::check(text, "type");
        super::fuzz::check(routed, "type");
        super::fuzz::check(text, "meta.kind");
        // Its string value is parsed as JSON, and the error points into the string.
        let inner = " \n{\"$serde_json::private::RawValue\":\n\n\t\t \t\"10e400,\"5E+3tme\\/\\} ";
        super::fuzz::check(inner, "type");
        super::fuzz::check(
            r#"{"type":"a","data":{"$serde_json::private::RawValue":"1e400"}}"#,
            "type",
        );
    }

    /// The differential check's own oracle: numbers beyond f64's range are replaced, not
    /// refused, and the check passes on them.
    #[test]
    fn the_check_accepts_huge_numbers() {
        for text in [
            r#"{"type":"a","ref":1e400,"data":[1e999,-1E+400,2]}"#,
            "{\"type\":\"a\",\n\"data\":\n1e400}",
            r#"{"type":"a","data":1e400,"x":"\uD800"}"#,
            // Refused: what follows the huge number is not JSON.
            r#"{"type":"a","x":1e400.5}"#,
            r#"{"type":"a","x":[91e9500.05e1]}"#,
            r#"{"type":"a","x":1e99999999999999999999e}"#,
        ] {
            super::fuzz::check(text, "type");
        }
    }
}

/// Property tests: the scanner against serde_json on generated envelopes, valid and then
/// mutated byte by byte (`fuzz::check` compares them).
#[cfg(test)]
mod props {
    use proptest::prelude::*;
    use proptest::sample::Index;

    use super::fuzz::check;

    fn ws() -> impl Strategy<Value = String> {
        prop_oneof![4 => Just(String::new()), 1 => "[ \t\r\n]{1,3}"]
    }

    /// A JSON string literal, with escapes of every kind.
    fn string() -> impl Strategy<Value = String> {
        let part = prop_oneof![
            6 => "[a-z0-9 _]{1,4}",
            1 => "[é€\u{7f}\u{2028}😀]",
            1 => prop::sample::select(vec![
                r#"\""#, r"\\", r"\/", r"\b", r"\f", r"\n", r"\r", r"\t", r"\u0074", r"\u00E9",
                r"\u20ac", r"\uD83D\uDE00", r"\udbff\udfff", r"\u0000",
            ])
            .prop_map(str::to_owned),
        ];
        prop::collection::vec(part, 0..5).prop_map(|parts| format!("\"{}\"", parts.concat()))
    }

    fn number() -> impl Strategy<Value = String> {
        "-?(0|[1-9][0-9]{0,6})(\\.[0-9]{1,3})?([eE][+-]?[0-9]{1,2})?"
    }

    /// A key: often one the scanner looks for (escaped or not), or one that repeats.
    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => prop::sample::select(vec![
                r#""type""#, r#""ref""#, r#""data""#, r#""meta""#, r#""kind""#, r#""x""#,
                r#""\u0074ype""#, r#""r\u0065f""#, r#""d\u0061ta""#, r#""typ\u0065""#,
            ])
            .prop_map(str::to_owned),
            1 => string(),
        ]
    }

    fn value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            3 => string(),
            3 => number(),
            1 => prop::sample::select(vec!["true", "false", "null"]).prop_map(str::to_owned),
        ];
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec((ws(), inner.clone(), ws()), 0..4).prop_map(|items| {
                    let items: Vec<String> =
                        items.into_iter().map(|(a, v, b)| a + &v + &b).collect();
                    format!("[{}]", items.join(","))
                }),
                prop::collection::vec((ws(), key(), ws(), ws(), inner, ws()), 0..4).prop_map(
                    |members| {
                        let members: Vec<String> = members
                            .into_iter()
                            .map(|(a, k, b, c, v, d)| format!("{a}{k}{b}:{c}{v}{d}"))
                            .collect();
                        format!("{{{}}}", members.join(","))
                    }
                ),
            ]
        })
    }

    /// A client message: a route (usually a string), maybe a `ref` and `data`, a `meta` for
    /// the `meta.kind` route key, other members; in any order, with whitespace anywhere.
    fn envelope() -> impl Strategy<Value = String> {
        let route = prop_oneof![
            4 => prop::sample::select(vec![r#""echo""#, r#""join""#, r#""a\u0062c""#, r#""""#])
                .prop_map(str::to_owned),
            1 => value(),
        ];
        let reference = prop_oneof![
            2 => Just(None),
            2 => number().prop_map(Some),
            2 => string().prop_map(Some),
            1 => value().prop_map(Some),
        ];
        let meta = prop_oneof![
            2 => Just(None),
            1 => value().prop_map(|kind| Some(format!(r#"{{"kind":{kind}}}"#))),
        ];
        let extra = prop::collection::vec((key(), value()), 0..3);
        (
            prop::option::weighted(0.9, route),
            reference,
            prop::option::of(value()),
            meta,
            extra,
        )
            .prop_flat_map(|(route, reference, data, meta, extra)| {
                let mut members: Vec<(String, String)> = extra;
                let named = [
                    ("type", route),
                    ("ref", reference),
                    ("data", data),
                    ("meta", meta),
                ];
                for (k, v) in named {
                    if let Some(v) = v {
                        members.push((format!("\"{k}\""), v));
                    }
                }
                (Just(members).prop_shuffle(), prop::collection::vec(ws(), 6))
            })
            .prop_map(|(members, ws)| {
                let members: Vec<String> = members
                    .into_iter()
                    .map(|(k, v)| format!("{}{k}{}:{}{v}{}", ws[0], ws[1], ws[2], ws[3]))
                    .collect();
                format!("{}{{{}}}{}", ws[4], members.join(","), ws[5])
            })
    }

    /// What a mutation inserts or puts in place of a character: pieces of JSON, near-JSON
    /// (comments, other whitespace, bad escapes and numbers) and bytes JSON forbids.
    const SNIPPETS: &[&str] = &[
        ",",
        ",,",
        ":",
        "\"",
        "'",
        "{",
        "}",
        "[",
        "]",
        "{}",
        "[]",
        " ",
        "\t",
        "\n",
        "\r",
        "\u{b}",
        "\u{c}",
        "\u{a0}",
        "\u{feff}",
        "\u{0}",
        "\u{1}",
        "\u{1f}",
        "\u{7f}",
        "//c\n",
        "/*c*/",
        "#",
        "\\",
        "\\u",
        "\\u00",
        "\\uD800",
        "\\uDC00",
        "\\uD800\\uDC00",
        "\\x41",
        "\\'",
        "\\n",
        "0",
        "01",
        "-",
        "+",
        ".",
        "e",
        "E",
        "1.",
        ".5",
        "1e",
        "1e400",
        "tru",
        "nul",
        "True",
        "NaN",
        "Infinity",
        "undefined",
        "é",
        "😀",
        "\"type\":",
        "\"ref\":",
        "\"data\":",
        "null",
        "x",
    ];

    /// Where a targeted mutation inserts: next to the bytes where parsers go wrong.
    #[derive(Debug, Clone, Copy)]
    enum Anchor {
        /// Right after a quote: at the start of a string, or just past one.
        AfterQuote,
        /// Right before a closing bracket (a trailing comma, an unclosed value).
        BeforeClose,
        /// Right after `,`, `:`, `{` or `[` (a missing value, a second comma).
        AfterPunct,
        /// Right after a digit (inside a number, or just past one).
        AfterDigit,
    }

    impl Anchor {
        fn at(self, c: char) -> bool {
            match self {
                Anchor::AfterQuote => c == '"',
                Anchor::BeforeClose => c == '}' || c == ']',
                Anchor::AfterPunct => matches!(c, ',' | ':' | '{' | '['),
                Anchor::AfterDigit => c.is_ascii_digit(),
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Mutation {
        Insert(Index, &'static str),
        Near(Anchor, Index, &'static str),
        Replace(Index, &'static str),
        Delete(Index),
        Append(&'static str),
        Prepend(&'static str),
    }

    fn snippet() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            1 => prop::sample::select(&[",", ":", "{", "}", "[", "]", "\"", " ", "0", "."][..]),
            1 => prop::sample::select(SNIPPETS),
        ]
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        let anchor = prop::sample::select(
            &[
                Anchor::AfterQuote,
                Anchor::BeforeClose,
                Anchor::AfterPunct,
                Anchor::AfterDigit,
            ][..],
        );
        prop_oneof![
            3 => (any::<Index>(), snippet()).prop_map(|(i, s)| Mutation::Insert(i, s)),
            6 => (anchor, any::<Index>(), snippet()).prop_map(|(a, i, s)| Mutation::Near(a, i, s)),
            3 => (any::<Index>(), snippet()).prop_map(|(i, s)| Mutation::Replace(i, s)),
            3 => any::<Index>().prop_map(Mutation::Delete),
            1 => snippet().prop_map(Mutation::Append),
            1 => snippet().prop_map(Mutation::Prepend),
        ]
    }

    fn apply(text: &mut String, m: &Mutation) {
        // Positions are characters, so the text stays a `str` (as a text frame is).
        let at = |i: &Index, text: &String, past_end: bool| {
            let n = text.chars().count() + usize::from(past_end);
            (n > 0).then(|| {
                let c = i.index(n);
                text.char_indices().nth(c).map_or(text.len(), |(b, _)| b)
            })
        };
        match m {
            Mutation::Insert(i, s) => {
                let b = at(i, text, true).unwrap_or(0);
                text.insert_str(b, s);
            }
            Mutation::Near(anchor, i, s) => {
                let spots: Vec<usize> = text
                    .char_indices()
                    .filter(|&(_, c)| anchor.at(c))
                    .map(|(b, c)| match anchor {
                        Anchor::BeforeClose => b,
                        _ => b + c.len_utf8(),
                    })
                    .collect();
                if !spots.is_empty() {
                    text.insert_str(spots[i.index(spots.len())], s);
                }
            }
            Mutation::Replace(i, s) => {
                if let Some(b) = at(i, text, false) {
                    let len = text[b..].chars().next().map_or(0, char::len_utf8);
                    text.replace_range(b..b + len, s);
                }
            }
            Mutation::Delete(i) => {
                if let Some(b) = at(i, text, false) {
                    text.remove(b);
                }
            }
            Mutation::Append(s) => text.push_str(s),
            Mutation::Prepend(s) => text.insert_str(0, s),
        }
    }

    fn route_key() -> impl Strategy<Value = &'static str> {
        prop_oneof![6 => Just("type"), 1 => Just("meta.kind"), 1 => Just("data")]
    }

    proptest! {
        // One mutation leaves the rest of the message valid, so that the check tests what
        // it broke: the most telling cases, and the most of them.
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// Envelopes with one mutation.
        #[test]
        fn mutated_once_agrees(
            text in envelope(),
            m in mutation(),
            key in route_key(),
        ) {
            let mut text = text;
            apply(&mut text, &m);
            check(&text, key);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Valid envelopes: both accept them (or refuse them with the same protocol error),
        /// with the same route, `ref` and `data`.
        #[test]
        fn valid_envelopes_agree(text in envelope(), key in route_key()) {
            check(&text, key);
        }

        /// The same envelopes, broken (or not) by a few mutations.
        #[test]
        fn mutated_envelopes_agree(
            text in envelope(),
            mutations in prop::collection::vec(mutation(), 2..5),
            key in route_key(),
        ) {
            let mut text = text;
            for m in &mutations {
                apply(&mut text, m);
            }
            check(&text, key);
        }

        /// The word-at-a-time runs stop where a byte-at-a-time loop does.
        #[test]
        fn word_runs_stop_where_bytes_do(
            text in "(\\PC|[\u{0}-\u{1f}\"\\\\0-9])*",
            start in any::<Index>(),
        ) {
            let b = text.as_bytes();
            let i = start.index(b.len() + 1);
            let stop = |c: &u8| super::STRING_STOP[usize::from(*c)];
            let plain = i + b[i..].iter().take_while(|c| !stop(c)).count();
            prop_assert_eq!(super::plain_run(b, i), plain);
            let digits = i + b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
            prop_assert_eq!(super::digits(b, i), digits);
        }

        /// Short strings over JSON's alphabet: nearly all invalid, in every way.
        #[test]
        fn arbitrary_text_agrees(text in "[ {}\\[\\]\",:0-9a-z\\\\.eE+\\-\u{0}\t\n]{0,48}") {
            check(&text, "type");
            check(&format!("{{\"type\":\"a\",\"data\":{text}}}"), "type");
        }
    }
}
