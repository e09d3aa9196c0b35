//! What the serverless services check about who calls them: bearer tokens (sent by the
//! gateway and the connections client, checked by functions and the connections API), and the
//! "local and direct" rule for a service configured without any secret.

use std::net::SocketAddr;

use actix_web::http::header::{self, HeaderMap};
use actix_web::HttpRequest;
use sha2::{Digest, Sha256};

use super::http;

/// The token of an `Authorization: Bearer <token>` header (the scheme in any case, the token
/// trimmed).
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    crate::channel::bearer(http::header(headers, header::AUTHORIZATION)?)
}

/// The `Authorization` header value that carries `token`.
pub(crate) fn bearer_header(token: &str) -> String {
    format!("Bearer {token}")
}

/// Compares two secrets in time independent of where they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // Hash first: equal-length digests, and the length of the secret does not leak.
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Headers that reverse proxies, load balancers and CDNs add to say whom they forward for (or
/// that they are in the path at all), by their lowercase names: a request carrying any of them
/// came through a proxy, whatever the peer address says. The standard `Forwarded` and `Via`;
/// the de facto `X-Real-IP` (nginx), `True-Client-IP` (Akamai, Cloudflare),
/// `X-Original-Forwarded-For` (ingress-nginx behind another proxy), `CF-Connecting-IP(v6)`
/// (Cloudflare), `Fastly-Client-IP`, `X-Client-IP`, `X-Cluster-Client-IP`,
/// `X-Envoy-External-Address` and `X-Azure-ClientIP`; and every `X-Forwarded-*`
/// ([`PROXY_PREFIX`]).
const PROXY_HEADERS: [&str; 12] = [
    "forwarded",
    "via",
    "x-real-ip",
    "true-client-ip",
    "x-original-forwarded-for",
    "cf-connecting-ip",
    "cf-connecting-ipv6",
    "fastly-client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "x-envoy-external-address",
    "x-azure-clientip",
];

/// `X-Forwarded-For`, `-Host`, `-Proto`, `-Port`, `-Prefix`, `-Server`, `-Ssl`, ...: any header
/// whose name starts with this is a proxy's.
const PROXY_PREFIX: &str = "x-forwarded";

/// Whether a header (by its name, lowercase as `HeaderName`s are) is one a proxy adds.
fn is_proxy_header(name: &str) -> bool {
    name.starts_with(PROXY_PREFIX) || PROXY_HEADERS.contains(&name)
}

/// Whether the request comes straight from this host: a loopback peer, and none of the headers
/// a proxy adds ([`PROXY_HEADERS`], [`PROXY_PREFIX`]). What an API without credentials (and a
/// function without a token) serves: the startup check ([`refuse_unsecured`]) only sees the
/// bound address, and a reverse proxy on the same host (or a unix socket, which has no peer
/// address) would otherwise open them to anyone. The list cannot be complete (a proxy can be
/// configured to add nothing): it catches the usual setups, and the safe configuration remains
/// a secret.
pub(crate) fn local_and_direct(req: &HttpRequest) -> bool {
    let loopback = req.peer_addr().is_some_and(|a| a.ip().is_loopback());
    loopback && !req.headers().keys().any(|h| is_proxy_header(h.as_str()))
}

/// The startup check of a service without any secret configured: it may only be bound to a
/// loopback address. Panics (at `App` registration) otherwise, naming `what` is served, what
/// secret is `missing` and how to configure one.
pub(crate) fn refuse_unsecured(
    secured: bool,
    addr: SocketAddr,
    what: impl std::fmt::Display,
    missing: &str,
    configure: &str,
) {
    if !secured && !addr.ip().is_loopback() {
        panic!(
            "switchboard: refusing to serve {what} on {addr} without {missing}: \
             configure {configure}, or bind a loopback address"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use actix_web::http::header::HeaderValue;

    #[test]
    fn proxy_headers() {
        for name in [
            "forwarded",
            "via",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-proto",
            "x-forwarded-port",
            "x-forwarded-prefix",
            "x-forwarded-server",
            "x-forwarded",
            "x-real-ip",
            "true-client-ip",
            "x-original-forwarded-for",
            "cf-connecting-ip",
            "cf-connecting-ipv6",
            "fastly-client-ip",
            "x-client-ip",
            "x-cluster-client-ip",
            "x-envoy-external-address",
            "x-azure-clientip",
        ] {
            // As actix-web reads them: any case on the wire, lowercase names.
            let upper = name.to_ascii_uppercase();
            let h = header::HeaderName::from_bytes(upper.as_bytes()).unwrap();
            assert!(is_proxy_header(h.as_str()), "{name}");
        }
        for name in [
            "host",
            "authorization",
            "content-type",
            "user-agent",
            "x-request-id",
        ] {
            assert!(!is_proxy_header(name), "{name}");
        }
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"token", b"token"));
        assert!(!constant_time_eq(b"token", b"tokem"));
        assert!(!constant_time_eq(b"token", b"token2"));
    }

    #[test]
    fn bearer_tokens() {
        let with = |value: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            h
        };
        assert_eq!(bearer_token(&with("Bearer s3cret")), Some("s3cret"));
        assert_eq!(bearer_token(&with("bearer  s3cret ")), Some("s3cret"));
        assert_eq!(bearer_token(&with("Basic czNjcmV0")), None);
        assert_eq!(bearer_token(&with("Bearer")), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
        assert_eq!(bearer_header("s3cret"), "Bearer s3cret");
    }
}
