//! What travels through Redis: publications and presence diffs on a topic's channel (and in its
//! history stream), presence entries in its hash.
//!
//! A publication is `P <seq> <epoch> <exclude> <event length> <event><data>`: `seq` and `epoch`
//! are `0 -` on topics without history, `exclude` is a connection id or `-`, and `data` the
//! JSON payload as the publisher serialized it. A presence diff is `D <epoch> <version> <diff
//! JSON>`: the version counts diffs within the epoch, which changes when Redis loses the counter.
//! Each node decodes a message once and builds the frame its subscribers share from it.

use std::sync::Arc;

use serde_json::value::RawValue;

use crate::engine::{Presence, Publication, Publish};
use crate::id::ConnectionId;

/// A message from a topic's channel, decoded.
#[derive(Clone)]
pub(crate) enum Incoming {
    /// A publication, with its place in the topic's history when it has one.
    Publication {
        publication: Publication,
        position: Option<(Arc<str>, u64)>,
        exclude: Option<ConnectionId>,
    },
    /// A presence diff and the presence version (epoch, number) it made.
    Diff {
        publication: Publication,
        version: (Arc<str>, u64),
    },
}

impl Incoming {
    pub(crate) fn publication(&self) -> &Publication {
        match self {
            Incoming::Publication { publication, .. } | Incoming::Diff { publication, .. } => {
                publication
            }
        }
    }
}

/// The part of a publication the publishing node writes: `<exclude> <event length>
/// <event><data>` (the script puts `P <seq> <epoch> ` in front on topics with history).
pub(crate) fn body(p: &Publish) -> Vec<u8> {
    let data = p.data.get();
    let mut out = Vec::with_capacity(32 + p.event.len() + data.len());
    match p.exclude {
        Some(id) => out.extend_from_slice(id.to_string().as_bytes()),
        None => out.push(b'-'),
    }
    out.push(b' ');
    out.extend_from_slice(p.event.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(p.event.as_bytes());
    out.extend_from_slice(data.as_bytes());
    out
}

/// A whole publication message for a topic without history.
pub(crate) fn plain_message(p: &Publish) -> Vec<u8> {
    let mut out = b"P 0 - ".to_vec();
    out.extend_from_slice(&body(p));
    out
}

/// Splits off the text before the next space.
fn field<'a>(rest: &mut &'a [u8]) -> Result<&'a str, String> {
    let i = memchr::memchr(b' ', rest).ok_or("truncated message")?;
    let f = std::str::from_utf8(&rest[..i]).map_err(|_| "message header is not UTF-8")?;
    *rest = &rest[i + 1..];
    Ok(f)
}

fn number(s: &str) -> Result<u64, String> {
    s.parse()
        .map_err(|_| format!("bad number `{s}` in message"))
}

fn raw(bytes: &[u8]) -> Result<Arc<RawValue>, String> {
    let text = String::from_utf8(bytes.to_vec()).map_err(|_| "payload is not UTF-8")?;
    RawValue::from_string(text)
        .map(Arc::from)
        .map_err(|e| format!("payload is not JSON: {e}"))
}

/// Decodes a message of `topic`'s channel or history.
pub(crate) fn decode(topic: &Arc<str>, msg: &[u8]) -> Result<Incoming, String> {
    let (kind, mut rest) = match msg {
        [k, b' ', rest @ ..] => (*k, rest),
        _ => return Err("message too short".into()),
    };
    match kind {
        b'P' => {
            let seq = number(field(&mut rest)?)?;
            let epoch = field(&mut rest)?;
            let position = (epoch != "-").then(|| (Arc::<str>::from(epoch), seq));
            let exclude = match field(&mut rest)? {
                "-" => None,
                id => Some(id.parse().map_err(|_| "bad excluded connection id")?),
            };
            let len = number(field(&mut rest)?)? as usize;
            if rest.len() < len {
                return Err("truncated event name".into());
            }
            let event = std::str::from_utf8(&rest[..len]).map_err(|_| "event is not UTF-8")?;
            let data = raw(&rest[len..])?;
            let publication =
                Publication::new(topic.clone(), Arc::from(event), data, position.clone());
            Ok(Incoming::Publication {
                publication,
                position,
                exclude,
            })
        }
        b'D' => {
            let epoch = Arc::<str>::from(field(&mut rest)?);
            let version = (epoch, number(field(&mut rest)?)?);
            let data = raw(rest)?;
            let publication =
                Publication::new(topic.clone(), Arc::from("presence_diff"), data, None);
            Ok(Incoming::Diff {
                publication,
                version,
            })
        }
        _ => Err(format!("unknown message kind `{}`", kind as char)),
    }
}

/// A presence entry as stored: `node \n key as JSON \n meta as JSON`.
pub(crate) fn entry_parts(key: &str, meta: &serde_json::Value) -> (String, String) {
    let key = serde_json::to_string(key).unwrap_or_else(|_| "\"\"".into());
    let meta = serde_json::to_string(meta).unwrap_or_else(|_| "null".into());
    (key, meta)
}

/// Presence from stored entries; entries that do not parse are skipped.
pub(crate) fn presence(entries: &[Vec<u8>]) -> Presence {
    let mut out = Presence::new();
    for e in entries {
        let mut parts = e.splitn(3, |b| *b == b'\n');
        let (_node, key, meta) = match (parts.next(), parts.next(), parts.next()) {
            (Some(n), Some(k), Some(m)) => (n, k, m),
            _ => continue,
        };
        let (Ok(key), Ok(meta)) = (
            serde_json::from_slice::<String>(key),
            serde_json::from_slice::<serde_json::Value>(meta),
        ) else {
            continue;
        };
        out.entry(key).or_default().metas.push(meta);
    }
    out
}

/// A `presence_state` delivery.
pub(crate) fn presence_state(topic: &Arc<str>, presence: &Presence) -> Option<Publication> {
    let raw = serde_json::value::to_raw_value(presence).ok()?;
    Some(Publication::new(
        topic.clone(),
        Arc::from("presence_state"),
        Arc::from(raw),
        None,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publications_round_trip() {
        let topic: Arc<str> = "room:a".into();
        let id = ConnectionId::next();
        let p = Publish {
            topic: topic.clone(),
            event: "said it".into(),
            data: Arc::from(RawValue::from_string(r#"{"t":"a b"}"#.into()).unwrap()),
            exclude: Some(id),
        };
        let Incoming::Publication {
            publication,
            position,
            exclude,
        } = decode(&topic, &plain_message(&p)).unwrap()
        else {
            panic!("not a publication")
        };
        assert_eq!(position, None);
        assert_eq!(exclude, Some(id));
        assert_eq!(
            &*publication.frame,
            r#"{"topic":"room:a","event":"said it","data":{"t":"a b"}}"#
        );
        let mut with_seq = b"P 7 ep0 ".to_vec();
        with_seq.extend_from_slice(&body(&p));
        let Incoming::Publication { publication, .. } = decode(&topic, &with_seq).unwrap() else {
            panic!("not a publication")
        };
        assert_eq!(publication.seq, Some(7));
        assert_eq!(publication.epoch.as_deref(), Some("ep0"));
    }

    #[test]
    fn diffs_and_entries() {
        let topic: Arc<str> = "t".into();
        let Incoming::Diff {
            publication,
            version,
        } = decode(&topic, br#"D 1700000000123456 3 {"joins":{},"leaves":{}}"#).unwrap()
        else {
            panic!("not a diff")
        };
        assert_eq!(version, (Arc::from("1700000000123456"), 3));
        assert_eq!(&*publication.event, "presence_diff");
        let (k, m) = entry_parts("a\nb", &serde_json::json!({"x": "1\n2"}));
        let entry = format!("node\n{k}\n{m}").into_bytes();
        let p = presence(&[entry]);
        assert_eq!(p["a\nb"].metas, vec![serde_json::json!({"x": "1\n2"})]);
        assert!(decode(&topic, b"X 1").is_err());
        assert!(decode(&topic, b"P 1 e - 99 ab").is_err());
    }
}
