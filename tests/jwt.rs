//! The `jwt` feature's verifier: HS256, RS256 and ES256 keys; exp, nbf, aud and iss; leeway;
//! and in a channel's `on_connect` and `on_refresh` on a real server. Tokens are signed here
//! with `jsonwebtoken`; the key pairs in `tests/jwt_keys` are test-only.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::{web, App};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde::Deserialize;
use serde_json::{json, Value};
use switchboard::jwt::Verifier;
use switchboard::prelude::*;
use switchboard::testing::{TestError, TestServer};

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const RSA: &[u8] = include_bytes!("jwt_keys/rsa.pem");
const RSA_PUB: &[u8] = include_bytes!("jwt_keys/rsa.pub.pem");
const OTHER_RSA_PUB: &[u8] = include_bytes!("jwt_keys/other_rsa.pub.pem");
const EC: &[u8] = include_bytes!("jwt_keys/ec.pem");
const EC_PUB: &[u8] = include_bytes!("jwt_keys/ec.pub.pem");

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs(claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET).unwrap(),
    )
    .unwrap()
}

fn code(r: Result<switchboard::jwt::Verified<Value>, ChannelError>) -> String {
    match r {
        Ok(v) => panic!("accepted: {:?}", v.claims),
        Err(e) => e.code().to_owned(),
    }
}

#[test]
fn hs256_checks_signature_exp_aud_and_iss() {
    let v = Verifier::hs256(SECRET)
        .unwrap()
        .audience("chat")
        .issuer("auth")
        .leeway(Duration::ZERO);
    let exp = now() + 600;
    let good = json!({"sub": "ann", "aud": "chat", "iss": "auth", "exp": exp});
    let ok = v.verify::<Value>(&hs(&good)).unwrap();
    assert_eq!(ok.claims["sub"], "ann");
    assert_eq!(ok.expires_at, Some(UNIX_EPOCH + Duration::from_secs(exp)));

    let with = |k: &str, val: Value| {
        let mut c = good.clone();
        c[k] = val;
        hs(&c)
    };
    assert_eq!(
        code(v.verify(&with("exp", json!(now() - 10)))),
        "token_expired"
    );
    assert_eq!(code(v.verify(&with("aud", json!("other")))), "unauthorized");
    assert_eq!(code(v.verify(&with("iss", json!("evil")))), "unauthorized");
    let mut no_exp = good.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_eq!(code(v.verify(&hs(&no_exp))), "unauthorized");
    let mut no_aud = good.clone();
    no_aud.as_object_mut().unwrap().remove("aud");
    assert_eq!(code(v.verify(&hs(&no_aud))), "unauthorized");

    // Signed with another secret, or tampered with.
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &good,
        &EncodingKey::from_secret(b"another secret, just as long....").unwrap(),
    )
    .unwrap();
    let err = v.verify::<Value>(&forged).unwrap_err();
    assert_eq!(err.code(), "unauthorized");
    assert!(err.message().contains("signature"), "{}", err.message());
    assert_eq!(code(v.verify("garbage")), "unauthorized");
    assert!(Verifier::hs256(b"").is_err());
}

#[test]
fn nbf_and_leeway() {
    let strict = Verifier::hs256(SECRET).unwrap().leeway(Duration::ZERO);
    let lenient = Verifier::hs256(SECRET)
        .unwrap()
        .leeway(Duration::from_secs(60));
    let t = now();
    // Expired 30 s ago: within a minute's leeway, which also extends when it stops counting.
    let late = hs(&json!({"sub": "ann", "exp": t - 30}));
    assert_eq!(code(strict.verify(&late)), "token_expired");
    let ok = lenient.verify::<Value>(&late).unwrap();
    assert_eq!(
        ok.expires_at,
        Some(UNIX_EPOCH + Duration::from_secs(t + 30))
    );
    // Not valid before 30 s from now: the leeway lets it through, not 120 s.
    let soon = hs(&json!({"sub": "ann", "exp": t + 600, "nbf": t + 30}));
    let err = strict.verify::<Value>(&soon).unwrap_err();
    assert_eq!(err.code(), "unauthorized");
    assert!(err.message().contains("nbf"), "{}", err.message());
    lenient.verify::<Value>(&soon).unwrap();
    let later = hs(&json!({"sub": "ann", "exp": t + 600, "nbf": t + 120}));
    assert_eq!(code(lenient.verify(&later)), "unauthorized");
}

#[test]
fn rs256_and_es256_keys() {
    let claims = json!({"sub": "ann", "exp": now() + 600});
    let rs = encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(RSA).unwrap(),
    )
    .unwrap();
    let es = encode(
        &Header::new(Algorithm::ES256),
        &claims,
        &EncodingKey::from_ec_pem(EC).unwrap(),
    )
    .unwrap();
    let rsv = Verifier::rs256_pem(RSA_PUB).unwrap();
    let esv = Verifier::es256_pem(EC_PUB).unwrap();
    assert_eq!(rsv.verify::<Value>(&rs).unwrap().claims["sub"], "ann");
    assert_eq!(esv.verify::<Value>(&es).unwrap().claims["sub"], "ann");
    // The wrong key, or the wrong algorithm for the key, is refused.
    let other = Verifier::rs256_pem(OTHER_RSA_PUB).unwrap();
    assert_eq!(code(other.verify(&rs)), "unauthorized");
    assert_eq!(code(rsv.verify(&es)), "unauthorized");
    assert_eq!(code(esv.verify(&rs)), "unauthorized");
    // An HS256 token cannot pass for an RS256 one (algorithm confusion).
    assert_eq!(code(rsv.verify(&hs(&claims))), "unauthorized");
    assert!(Verifier::rs256_pem(b"not a key").is_err());
    assert!(Verifier::es256_pem(RSA_PUB).is_err());
}

#[derive(Clone, Deserialize)]
struct Claims {
    sub: String,
}

#[switchboard::on_connect]
async fn connect(req: ConnectRequest, jwt: web::Data<Verifier>) -> Result<Claims, ChannelError> {
    jwt.verify_connect(&req)
}

#[switchboard::message("whoami")]
async fn whoami(ch: Channel<Claims>) -> Result<String, ChannelError> {
    Ok(ch.session().map(|c| c.sub).unwrap_or_default())
}

fn server() -> TestServer {
    let jwt = Verifier::hs256(SECRET)
        .unwrap()
        .audience("chat")
        .leeway(Duration::ZERO);
    let refresh = jwt.clone();
    let route = ChannelRoute::<Claims>::new("/ws")
        .on_connect(connect)
        .message(whoami)
        .on_refresh(move |ch: Channel<Claims>, token: String| {
            let jwt = refresh.clone();
            async move {
                let verified = jwt.verify::<Claims>(&token)?;
                ch.set_session(verified.claims);
                Ok(verified.expires_at)
            }
        });
    let jwt = web::Data::new(jwt);
    TestServer::start(move || App::new().app_data(jwt.clone()).service(route.clone()))
}

#[tokio::test]
async fn a_channel_verifies_on_connect_and_on_refresh() {
    let server = server();
    let token = |sub: &str, exp: u64| hs(&json!({"sub": sub, "aud": "chat", "exp": exp}));

    // A token in the query string, and one in an Authorization header.
    let mut c = server
        .connect(&format!("/ws?token={}", token("ann", now() + 2)))
        .await
        .unwrap();
    assert_eq!(c.request("whoami", json!(null)).await.unwrap(), "ann");
    let bearer = format!("Bearer {}", token("bob", now() + 600));
    let mut b = server
        .connect_with("/ws", &[("authorization", &bearer)])
        .await
        .unwrap();
    assert_eq!(b.request("whoami", json!(null)).await.unwrap(), "bob");

    // The expiry comes from `exp`: asked for a new token before it, refreshed in band.
    c.recv_matching(|f| f.get("refresh").is_some())
        .await
        .unwrap();
    let wrong_aud = hs(&json!({"sub": "eve", "aud": "other", "exp": now() + 600}));
    let err = c
        .request("refresh", json!({ "token": wrong_aud }))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, TestError::Reply { code, .. } if code == "unauthorized"),
        "{err}"
    );
    let reply = c
        .request("refresh", json!({"token": token("ann2", now() + 600)}))
        .await
        .unwrap();
    assert!(reply["expires_in"].as_u64().unwrap() > 500_000, "{reply}");
    assert_eq!(c.request("whoami", json!(null)).await.unwrap(), "ann2");

    // Refused upgrades: expired, wrong audience, no token.
    for (path, code) in [
        (
            format!("/ws?token={}", token("ann", now() - 5)),
            "token_expired",
        ),
        (
            format!(
                "/ws?token={}",
                hs(&json!({"sub": "x", "aud": "other", "exp": now() + 60}))
            ),
            "unauthorized",
        ),
        ("/ws".to_owned(), "unauthorized"),
    ] {
        match server.connect(&path).await {
            Err(TestError::Rejected { status, body }) => {
                assert_eq!(status, 401, "{path}");
                assert!(body.contains(code), "{path}: {body}");
            }
            other => panic!("{path}: {other:?}"),
        }
    }
}
