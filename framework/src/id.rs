//! Connection ids: unique across the processes of a deployment, printable like API Gateway's.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// The id of one connection.
///
/// Eleven bytes: five identify the process (random at start), six count connections in it. The
/// text form is 16 characters of standard base64, like `L0SM9cOFvHcCIhw=` in AWS API Gateway,
/// so ids travel in URLs percent-encoded.
///
/// ```
/// use switchboard::ConnectionId;
///
/// let id = ConnectionId::next();
/// let text = id.to_string();
/// assert_eq!(text.len(), 16);
/// assert_eq!(text.parse::<ConnectionId>().unwrap(), id);
/// assert_ne!(ConnectionId::next(), id);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId([u8; 11]);

static SEQ: AtomicU64 = AtomicU64::new(1);

fn node_prefix() -> [u8; 5] {
    static NODE: OnceLock<[u8; 5]> = OnceLock::new();
    *NODE.get_or_init(|| {
        // No RNG dependency for five bytes: the clock's nanoseconds, the pid and a stack
        // address mixed through std's randomly keyed SipHash.
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        let local = 0u8;
        h.write_usize(&local as *const u8 as usize);
        let v = h.finish().to_le_bytes();
        [v[0], v[1], v[2], v[3], v[4]]
    })
}

impl ConnectionId {
    /// A fresh id, never handed out before by this process.
    pub fn next() -> Self {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed).to_be_bytes();
        let node = node_prefix();
        let mut b = [0u8; 11];
        b[..5].copy_from_slice(&node);
        b[5..].copy_from_slice(&seq[2..]);
        ConnectionId(b)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 11] {
        &self.0
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 16];
        // 11 bytes always encode to 16 characters.
        let n = STANDARD
            .encode_slice(self.0, &mut buf)
            .map_err(|_| fmt::Error)?;
        f.write_str(std::str::from_utf8(&buf[..n]).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnectionId({self})")
    }
}

/// A string that is not a connection id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a connection id")]
pub struct InvalidConnectionId;

impl FromStr for ConnectionId {
    type Err = InvalidConnectionId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 16 {
            return Err(InvalidConnectionId);
        }
        let mut b = [0u8; 12];
        match STANDARD.decode_slice(s, &mut b) {
            Ok(11) => {
                let mut id = [0u8; 11];
                id.copy_from_slice(&b[..11]);
                Ok(ConnectionId(id))
            }
            _ => Err(InvalidConnectionId),
        }
    }
}

/// In a connect handler: the id the connection will have once it opens.
impl actix_web::FromRequest for ConnectionId {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &actix_web::HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        use actix_web::HttpMessage;
        let id = req.extensions().get::<ConnectionId>().copied();
        std::future::ready(id.ok_or_else(|| {
            actix_web::error::ErrorInternalServerError(
                "no connection id: not a channel's upgrade request",
            )
        }))
    }
}

impl serde::Serialize for ConnectionId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ConnectionId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_garbage() {
        assert!("abc".parse::<ConnectionId>().is_err());
        assert!("!!!!!!!!!!!!!!!!".parse::<ConnectionId>().is_err());
    }

    #[test]
    fn serde_round_trip() {
        let id = ConnectionId::next();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<ConnectionId>(&json).unwrap(), id);
    }
}
