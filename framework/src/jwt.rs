//! JSON Web Tokens for connections and refreshes (feature `jwt`), on the
//! [`jsonwebtoken`](https://docs.rs/jsonwebtoken) crate with its pure-Rust crypto.
//!
//! A [`Verifier`] holds one key (HS256 secret, RS256 or ES256 public key) and the checks:
//! the signature and its algorithm, `exp` (always required), `nbf` (when present), `aud` and
//! `iss` (when set: then required), all with a leeway for clock skew (default 60 s). It is
//! usable in one line from `on_connect` ([`Verifier::verify_connect`]: the token of an
//! `Authorization: Bearer` header or a `?token=` query parameter, and the connection's expiry
//! from `exp`) and from `on_refresh` ([`Verifier::verify`], whose
//! [`expires_at`](Verified::expires_at) is what the refresh handler returns).
//!
//! ```
//! use std::time::Duration;
//! use serde::Deserialize;
//! use switchboard::jwt::Verifier;
//! use switchboard::prelude::*;
//!
//! #[derive(Clone, Deserialize)]
//! struct Claims { sub: String }
//!
//! #[switchboard::on_connect]
//! async fn connect(req: ConnectRequest, jwt: actix_web::web::Data<Verifier>) -> Result<Claims, ChannelError> {
//!     jwt.verify_connect(&req)
//! }
//!
//! let jwt = Verifier::hs256(b"a secret of at least 32 bytes....")
//!     .expect("a secret")
//!     .audience("chat")
//!     .issuer("https://auth.example.com")
//!     .leeway(Duration::from_secs(5));
//! let refresh = jwt.clone();
//! let route = ChannelRoute::<Claims>::new("/ws")
//!     .on_connect(connect)
//!     .user(|c: &Claims| c.sub.clone())
//!     .on_refresh(move |ch: Channel<Claims>, token: String| {
//!         let jwt = refresh.clone();
//!         async move {
//!             let verified = jwt.verify::<Claims>(&token)?;
//!             ch.set_session(verified.claims);
//!             Ok(verified.expires_at)
//!         }
//!     });
//! let app = actix_web::App::new()
//!     .app_data(actix_web::web::Data::new(jwt))
//!     .service(route);
//! ```

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::de::DeserializeOwned;

use crate::channel::ConnectRequest;
use crate::error::ChannelError;

/// A key that could not be read: a configuration mistake, found at startup.
#[derive(Debug, thiserror::Error)]
#[error("invalid {what} key: {source}")]
pub struct KeyError {
    what: &'static str,
    #[source]
    source: jsonwebtoken::errors::Error,
}

/// Verifies JSON Web Tokens: one key, one algorithm, and the claims checks. Cheap to clone.
///
/// ```
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
/// use switchboard::jwt::Verifier;
///
/// let v = Verifier::hs256(b"0123456789abcdef0123456789abcdef").unwrap().audience("api");
/// // A token signed elsewhere (here by jsonwebtoken itself).
/// let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 600;
/// let token = jsonwebtoken::encode(
///     &jsonwebtoken::Header::default(),
///     &serde_json::json!({"sub": "ann", "aud": "api", "exp": exp}),
///     &jsonwebtoken::EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef").unwrap(),
/// )
/// .unwrap();
/// let ok = v.verify::<serde_json::Value>(&token).unwrap();
/// assert_eq!(ok.claims["sub"], "ann");
/// assert!(ok.expires_at.unwrap() > SystemTime::now() + Duration::from_secs(590));
/// assert_eq!(v.verify::<serde_json::Value>("not.a.token").unwrap_err().code(), "unauthorized");
/// ```
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    key: DecodingKey,
    validation: Validation,
    query_param: String,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.inner.validation.algorithms)
            .field("aud", &self.inner.validation.aud)
            .field("iss", &self.inner.validation.iss)
            .field("leeway", &self.inner.validation.leeway)
            .finish()
    }
}

/// A verified token: its claims, and when it stops being accepted.
#[derive(Clone, Debug)]
pub struct Verified<C> {
    /// The claims, deserialized.
    pub claims: C,
    /// `exp` plus the leeway: when the verifier stops accepting the token. What a refresh
    /// handler returns, and what [`Verifier::verify_connect`] gives the connection.
    pub expires_at: Option<SystemTime>,
}

impl Verifier {
    fn with(key: DecodingKey, alg: Algorithm) -> Self {
        let mut validation = Validation::new(alg);
        validation.validate_nbf = true;
        validation.validate_exp = true;
        Verifier {
            inner: Arc::new(Inner {
                key,
                validation,
                query_param: "token".into(),
            }),
        }
    }

    fn inner_mut(&mut self) -> &mut Inner {
        Arc::make_mut(&mut self.inner)
    }

    /// HS256 with a shared secret (use at least 32 random bytes; an empty one is an error).
    pub fn hs256(secret: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        let key = DecodingKey::from_secret(secret.as_ref()).map_err(|source| KeyError {
            what: "HMAC",
            source,
        })?;
        Ok(Self::with(key, Algorithm::HS256))
    }

    /// RS256 with an RSA public key in PEM (`-----BEGIN PUBLIC KEY-----` or `RSA PUBLIC KEY`).
    pub fn rs256_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let key = DecodingKey::from_rsa_pem(pem).map_err(|source| KeyError {
            what: "RSA",
            source,
        })?;
        Ok(Self::with(key, Algorithm::RS256))
    }

    /// ES256 with a P-256 public key in PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn es256_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let key =
            DecodingKey::from_ec_pem(pem).map_err(|source| KeyError { what: "EC", source })?;
        Ok(Self::with(key, Algorithm::ES256))
    }

    /// Requires `aud` to be (or, for a list, contain) `aud`. Call again to accept several.
    /// Without it, tokens that have an `aud` are refused: they are meant for someone.
    pub fn audience(mut self, aud: &str) -> Self {
        let v = &mut self.inner_mut().validation;
        v.aud
            .get_or_insert_with(Default::default)
            .insert(aud.into());
        v.required_spec_claims.insert("aud".into());
        self
    }

    /// Requires `iss` to be `iss`. Call again to accept several issuers.
    pub fn issuer(mut self, iss: &str) -> Self {
        let v = &mut self.inner_mut().validation;
        v.iss
            .get_or_insert_with(Default::default)
            .insert(iss.into());
        v.required_spec_claims.insert("iss".into());
        self
    }

    /// Clock skew allowed on `exp` and `nbf`, in whole seconds (default 60 s).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.inner_mut().validation.leeway = leeway.as_secs();
        self
    }

    /// The query parameter [`verify_connect`](Self::verify_connect) reads when there is no
    /// `Authorization: Bearer` header (default `token`; browsers cannot set headers on a
    /// WebSocket).
    pub fn query_param(mut self, name: &str) -> Self {
        self.inner_mut().query_param = name.into();
        self
    }

    /// Verifies `token`: signature, algorithm, `exp`, `nbf`, `aud`, `iss`. An expired token is
    /// `token_expired`, anything else wrong `unauthorized` (both HTTP 401 on connect).
    pub fn verify<C: DeserializeOwned>(&self, token: &str) -> Result<Verified<C>, ChannelError> {
        let data = jsonwebtoken::decode::<serde_json::Value>(
            token,
            &self.inner.key,
            &self.inner.validation,
        )
        .map_err(refusal)?;
        let exp = data.claims.get("exp").and_then(serde_json::Value::as_u64);
        let claims = serde_json::from_value::<C>(data.claims)
            .map_err(|e| ChannelError::unauthorized(format!("unexpected token claims: {e}")))?;
        let expires_at = exp.map(|exp| {
            UNIX_EPOCH + Duration::from_secs(exp.saturating_add(self.inner.validation.leeway))
        });
        Ok(Verified { claims, expires_at })
    }

    /// Verifies the upgrade request's token (an `Authorization: Bearer` header, else the
    /// [query parameter](Self::query_param)), gives the connection the token's expiry
    /// ([`ConnectRequest::set_expiry`]) and returns the claims: a connect handler in one line.
    pub fn verify_connect<C: DeserializeOwned>(
        &self,
        req: &ConnectRequest,
    ) -> Result<C, ChannelError> {
        let token = match req.bearer_token() {
            Some(t) => Some(t.to_owned()),
            // Percent-decoded: clients build the query with `URLSearchParams` and the like.
            None => actix_web::web::Query::<std::collections::HashMap<String, String>>::from_query(
                req.request().query_string(),
            )
            .ok()
            .and_then(|q| q.into_inner().remove(&self.inner.query_param)),
        };
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ChannelError::unauthorized("a token is required"))?;
        let verified = self.verify::<C>(&token)?;
        if let Some(at) = verified.expires_at {
            req.set_expiry(at);
        }
        Ok(verified.claims)
    }
}

/// What a client is told about a token that failed.
fn refusal(e: jsonwebtoken::errors::Error) -> ChannelError {
    let why = match e.kind() {
        ErrorKind::ExpiredSignature => return ChannelError::TokenExpired,
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)",
        ErrorKind::InvalidAudience => "the token is not for this audience (aud)",
        ErrorKind::InvalidIssuer => "the token is not from the expected issuer (iss)",
        ErrorKind::InvalidSignature => "the token's signature does not verify",
        ErrorKind::InvalidAlgorithm => "the token's algorithm is not accepted",
        ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim",
        ErrorKind::InvalidClaimFormat(_) => "a claim of the token is malformed",
        _ => "the token is malformed",
    };
    ChannelError::unauthorized(why)
}
