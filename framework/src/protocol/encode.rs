//! Encoding outgoing frames: replies, error frames, pushes and topic deliveries.

use bytestring::ByteString;
use serde::Serialize;

use crate::error::ChannelError;

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

    fn value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<&mut Self, ChannelError> {
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
) -> Result<ByteString, ChannelError> {
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
    err: &ChannelError,
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
) -> Result<ByteString, ChannelError> {
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
            &ChannelError::UnknownRoute("x".into()),
        );
        let v: serde_json::Value = serde_json::from_str(&f).unwrap();
        assert_eq!(v["ref"], 3);
        assert_eq!(v["ok"], false);
        assert_eq!(v["error"]["code"], "unknown_route");
        let f = encode_event("tick", &serde_json::json!([1])).unwrap();
        assert_eq!(&*f, r#"{"event":"tick","data":[1]}"#);
    }
}
