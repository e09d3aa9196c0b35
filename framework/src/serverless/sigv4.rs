//! AWS Signature Version 4 (`AWS4-HMAC-SHA256`): verifying what the AWS SDKs send to the
//! connections API, and signing what [`ConnectionsClient`](super::ConnectionsClient) sends.
//!
//! The canonical request follows the SigV4 specification for services other than S3: the URI
//! path is encoded twice (each byte of the path as sent that is not unreserved or `/` becomes
//! `%XX`), query parameters are decoded, strictly re-encoded and sorted, the signed headers'
//! values are trimmed with inner runs of spaces collapsed, and the payload hash is the SHA-256
//! of the body.

use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use percent_encoding::{percent_decode_str, percent_encode, AsciiSet};
use sha2::{Digest, Sha256};

use super::{http, time};

type HmacSha256 = Hmac<Sha256>;

pub(crate) const ALGORITHM: &str = "AWS4-HMAC-SHA256";
pub(crate) const SERVICE: &str = "execute-api";

pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn hmac(key: &[u8], data: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length.
    let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac
}

fn hmac_bytes(key: &[u8], data: &[u8]) -> [u8; 32] {
    hmac(key, data).finalize().into_bytes().into()
}

/// The derived signing key of a secret for one day, region and service.
pub(crate) fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k = hmac_bytes(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k = hmac_bytes(&k, region.as_bytes());
    let k = hmac_bytes(&k, service.as_bytes());
    hmac_bytes(&k, b"aws4_request")
}

/// SigV4's URI encoding: unreserved characters (`A-Z a-z 0-9 - _ . ~`) stay, `/` stays when
/// `keep_slash`, every other byte becomes `%XX` (upper-case hex).
pub(crate) fn uri_encode(input: &[u8], keep_slash: bool) -> String {
    const UNRESERVED_AND_SLASH: &AsciiSet = &http::UNRESERVED.remove(b'/');
    let set = if keep_slash {
        UNRESERVED_AND_SLASH
    } else {
        http::UNRESERVED
    };
    percent_encode(input, set).to_string()
}

/// The canonical query string: parameters decoded, re-encoded strictly, sorted.
pub(crate) fn canonical_query(raw: &str) -> String {
    let mut pairs: Vec<(String, String)> = raw
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let enc = |s: &str| {
                let bytes: Vec<u8> = percent_decode_str(s).collect();
                uri_encode(&bytes, false)
            };
            (enc(k), enc(v))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// A header value as SigV4 signs it: trimmed, inner runs of spaces collapsed.
fn canonical_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for word in v.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// What a request looks like to the signature: borrowed from an incoming request, or built for
/// an outgoing one.
pub(crate) struct Signable<'a> {
    pub(crate) method: &'a str,
    /// The path as it is sent on the wire (still percent-encoded).
    pub(crate) path: &'a str,
    /// The raw query string, without `?`.
    pub(crate) query: &'a str,
    /// Every header of the request (name, value); names in any case.
    pub(crate) headers: Vec<(&'a str, &'a str)>,
    pub(crate) payload_hash: &'a str,
}

impl Signable<'_> {
    /// The canonical request for these signed headers (lower-case names, `;`-separated,
    /// sorted). `double_encode`: the path is URI-encoded once more (SigV4 for every service but
    /// S3); without it, the path is used as sent.
    fn canonical_request(&self, signed_headers: &str, double_encode: bool) -> String {
        let path = if self.path.is_empty() { "/" } else { self.path };
        let uri = if double_encode {
            uri_encode(path.as_bytes(), true)
        } else {
            path.to_owned()
        };
        let mut headers = String::new();
        for name in signed_headers.split(';') {
            let values: Vec<String> = self
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| canonical_value(v))
                .collect();
            headers.push_str(name);
            headers.push(':');
            headers.push_str(&values.join(","));
            headers.push('\n');
        }
        format!(
            "{}\n{}\n{}\n{}\n{}\n{}",
            self.method,
            uri,
            canonical_query(self.query),
            headers,
            signed_headers,
            self.payload_hash
        )
    }
}

fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

/// The parts of an `Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=...,
/// Signature=...` header.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Authorization<'a> {
    pub(crate) access_key: &'a str,
    pub(crate) date: &'a str,
    pub(crate) region: &'a str,
    pub(crate) service: &'a str,
    pub(crate) signed_headers: &'a str,
    pub(crate) signature: &'a str,
}

impl<'a> Authorization<'a> {
    pub(crate) fn parse(header: &'a str) -> Option<Authorization<'a>> {
        let rest = header.strip_prefix(ALGORITHM)?;
        if !rest.starts_with(' ') {
            return None;
        }
        let (mut credential, mut signed, mut signature) = (None, None, None);
        for part in rest.split(',') {
            let (k, v) = part.trim().split_once('=')?;
            match k {
                "Credential" => credential = Some(v),
                "SignedHeaders" => signed = Some(v),
                "Signature" => signature = Some(v),
                _ => {}
            }
        }
        let mut scope = credential?.split('/');
        let auth = Authorization {
            access_key: scope.next()?,
            date: scope.next()?,
            region: scope.next()?,
            service: scope.next()?,
            signed_headers: signed?,
            signature: signature?,
        };
        (scope.next() == Some("aws4_request") && scope.next().is_none()).then_some(auth)
    }

    fn scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.date, self.region, self.service
        )
    }
}

/// Why a signature was refused (the text goes into the 403's message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    Malformed(&'static str),
    UnknownKey,
    Stale,
    Mismatch,
}

impl Refusal {
    pub(crate) fn message(&self) -> String {
        match self {
            Refusal::Malformed(why) => format!("Authorization header malformed: {why}"),
            Refusal::UnknownKey => {
                "The security token included in the request is invalid.".to_owned()
            }
            Refusal::Stale => {
                "Signature expired: the request time is too far from the server time.".to_owned()
            }
            Refusal::Mismatch => "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.".to_owned(),
        }
    }
}

/// The checks that need no body: header shape, scope, key, clock. Returns the parsed header
/// and the secret of its key.
pub(crate) fn precheck<'a, 's>(
    auth: &'a str,
    amz_date: Option<&str>,
    region: Option<&str>,
    now: SystemTime,
    max_skew: Duration,
    secret_of: impl Fn(&str) -> Option<&'s str>,
) -> Result<(Authorization<'a>, &'s str), Refusal> {
    let auth = Authorization::parse(auth).ok_or(Refusal::Malformed("expected `AWS4-HMAC-SHA256 Credential=KEY/DATE/REGION/SERVICE/aws4_request, SignedHeaders=..., Signature=...`"))?;
    if auth.service != SERVICE {
        return Err(Refusal::Malformed(
            "the credential scope's service must be execute-api",
        ));
    }
    if region.is_some_and(|r| r != auth.region) {
        return Err(Refusal::Malformed(
            "the credential scope's region is not this API's",
        ));
    }
    let signed: Vec<&str> = auth.signed_headers.split(';').collect();
    if !signed.contains(&"host") {
        return Err(Refusal::Malformed("the host header must be signed"));
    }
    if signed
        .iter()
        .any(|h| h.is_empty() || h.bytes().any(|b| b.is_ascii_uppercase()))
    {
        return Err(Refusal::Malformed("SignedHeaders must be lower-case names"));
    }
    let amz_date = amz_date.ok_or(Refusal::Malformed("X-Amz-Date is missing"))?;
    let when = time::parse_amz_date(amz_date).ok_or(Refusal::Malformed("bad X-Amz-Date"))?;
    if !amz_date.starts_with(auth.date) || auth.date.len() != 8 {
        return Err(Refusal::Malformed(
            "the credential scope's date is not X-Amz-Date's",
        ));
    }
    let skew = now
        .duration_since(when)
        .or_else(|e| Ok::<_, ()>(e.duration()))
        .unwrap_or_default();
    if skew > max_skew {
        return Err(Refusal::Stale);
    }
    let secret = secret_of(auth.access_key).ok_or(Refusal::UnknownKey)?;
    Ok((auth, secret))
}

/// Verifies the signature (constant-time). Accepts the path encoded twice (the SigV4 rule for
/// every service but S3, what the AWS SDKs do for `execute-api`) or as sent.
pub(crate) fn verify(
    req: &Signable<'_>,
    auth: &Authorization<'_>,
    amz_date: &str,
    secret: &str,
) -> Result<(), Refusal> {
    let expected = hex::decode(auth.signature).map_err(|_| Refusal::Mismatch)?;
    let key = signing_key(secret, auth.date, auth.region, auth.service);
    let scope = auth.scope();
    for double in [true, false] {
        let canonical = req.canonical_request(auth.signed_headers, double);
        let mac = hmac(
            &key,
            string_to_sign(amz_date, &scope, &canonical).as_bytes(),
        );
        if mac.verify_slice(&expected).is_ok() {
            return Ok(());
        }
    }
    Err(Refusal::Mismatch)
}

/// Signs an outgoing request: returns the `Authorization` header value. `req.headers` must
/// hold `host` and `x-amz-date` (and whatever else should be signed).
pub(crate) fn sign(
    req: &Signable<'_>,
    amz_date: &str,
    access_key: &str,
    secret: &str,
    region: &str,
) -> String {
    let mut names: Vec<String> = req
        .headers
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .collect();
    names.sort();
    names.dedup();
    let signed_headers = names.join(";");
    let date = &amz_date[..8];
    let scope = format!("{date}/{region}/{SERVICE}/aws4_request");
    let canonical = req.canonical_request(&signed_headers, true);
    let key = signing_key(secret, date, region, SERVICE);
    let signature = hex::encode(
        hmac(
            &key,
            string_to_sign(amz_date, &scope, &canonical).as_bytes(),
        )
        .finalize()
        .into_bytes(),
    );
    format!("{ALGORITHM} Credential={access_key}/{scope}, SignedHeaders={signed_headers}, Signature={signature}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's published SigV4 test suite, case `get-vanilla`.
    #[test]
    fn aws_test_suite_get_vanilla() {
        let req = Signable {
            method: "GET",
            path: "/",
            query: "",
            headers: vec![
                ("Host", "example.amazonaws.com"),
                ("X-Amz-Date", "20150830T123600Z"),
            ],
            payload_hash: &sha256_hex(b""),
        };
        let canonical = req.canonical_request("host;x-amz-date", true);
        assert_eq!(
            canonical,
            "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let key = signing_key(
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "20150830",
            "us-east-1",
            "service",
        );
        let sts = string_to_sign(
            "20150830T123600Z",
            "20150830/us-east-1/service/aws4_request",
            &canonical,
        );
        let sig = hex::encode(hmac(&key, sts.as_bytes()).finalize().into_bytes());
        assert_eq!(
            sig,
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn sign_then_verify() {
        let hash = sha256_hex(b"hello");
        let mut req = Signable {
            method: "POST",
            path: "/@connections/L0SM9cOFvHcCIhw%3D",
            query: "b=2&a=1",
            headers: vec![
                ("host", "127.0.0.1:9000"),
                ("x-amz-date", "20240101T000000Z"),
            ],
            payload_hash: &hash,
        };
        let header = sign(&req, "20240101T000000Z", "AKID", "secret", "us-east-1");
        let now = time::parse_amz_date("20240101T000100Z").unwrap();
        let secrets = |k: &str| (k == "AKID").then_some("secret");
        let (auth, secret) = precheck(
            &header,
            Some("20240101T000000Z"),
            Some("us-east-1"),
            now,
            Duration::from_secs(300),
            secrets,
        )
        .unwrap();
        assert_eq!(verify(&req, &auth, "20240101T000000Z", secret), Ok(()));
        // Anything signed changes the signature.
        req.query = "b=3&a=1";
        assert_eq!(
            verify(&req, &auth, "20240101T000000Z", secret),
            Err(Refusal::Mismatch)
        );
        assert_eq!(
            verify(&req, &auth, "20240101T000000Z", "other").unwrap_err(),
            Refusal::Mismatch
        );
        // Stale, unknown key, wrong region.
        let later = now + Duration::from_secs(600);
        assert_eq!(
            precheck(
                &header,
                Some("20240101T000000Z"),
                None,
                later,
                Duration::from_secs(300),
                secrets
            )
            .unwrap_err(),
            Refusal::Stale
        );
        let none = |_: &str| None::<&str>;
        assert_eq!(
            precheck(
                &header,
                Some("20240101T000000Z"),
                None,
                now,
                Duration::from_secs(300),
                none
            )
            .unwrap_err(),
            Refusal::UnknownKey
        );
        assert!(matches!(
            precheck(
                &header,
                Some("20240101T000000Z"),
                Some("eu-west-1"),
                now,
                Duration::from_secs(300),
                secrets
            ),
            Err(Refusal::Malformed(_))
        ));
    }

    /// Requests signed by botocore 1.43's `SigV4Auth` (service `execute-api`, us-east-1, AWS's
    /// example key, 2024-02-09T17:05:19Z), computed once with a script and pasted here: a
    /// percent-encoded connection id holding `+`, `/` and `=` under a stage prefix, with a
    /// query; and a publish with a body and an encoded query value.
    const BOTO_KEY: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const BOTO_DATE: &str = "20240209T170519Z";
    const BOTO_DELETE: &str = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240209/us-east-1/execute-api/aws4_request, SignedHeaders=host;x-amz-date, Signature=723c8cc7d424fb85a131991fc317f36b167423d7a142da247619e230a9efd518";
    const BOTO_PUBLISH: &str = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240209/us-east-1/execute-api/aws4_request, SignedHeaders=host;x-amz-date, Signature=89fa0f1765361a484a895e7571e07f84c3bda3128f120ad35839a042e6538cad";

    fn boto_headers() -> Vec<(&'static str, &'static str)> {
        vec![("Host", "127.0.0.1:8080"), ("X-Amz-Date", BOTO_DATE)]
    }

    /// A request as the botocore vectors send it (their host and date headers).
    fn boto_request<'a>(
        method: &'a str,
        path: &'a str,
        query: &'a str,
        payload_hash: &'a str,
    ) -> Signable<'a> {
        Signable {
            method,
            path,
            query,
            headers: boto_headers(),
            payload_hash,
        }
    }

    fn boto_check(req: &Signable<'_>, header: &str) -> Result<(), Refusal> {
        let now = time::parse_amz_date(BOTO_DATE).unwrap();
        let secrets = |k: &str| (k == "AKIDEXAMPLE").then_some(BOTO_KEY);
        let (auth, secret) = precheck(
            header,
            Some(BOTO_DATE),
            Some("us-east-1"),
            now,
            Duration::from_secs(300),
            secrets,
        )?;
        verify(req, &auth, BOTO_DATE, secret)
    }

    #[test]
    fn botocore_vector_encoded_id_and_query() {
        let empty = sha256_hex(b"");
        let req = boto_request(
            "DELETE",
            "/prod/@connections/L0S%2BM9c%2FOFvHcCIhw%3D",
            "reason=kicked%20out&code=4001",
            &empty,
        );
        // botocore's canonical request, byte for byte.
        assert_eq!(
            req.canonical_request("host;x-amz-date", true),
            "DELETE\n/prod/%40connections/L0S%252BM9c%252FOFvHcCIhw%253D\ncode=4001&reason=kicked%20out\nhost:127.0.0.1:8080\nx-amz-date:20240209T170519Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(boto_check(&req, BOTO_DELETE), Ok(()));
        // Our signer produces the same signature.
        assert_eq!(
            sign(&req, BOTO_DATE, "AKIDEXAMPLE", BOTO_KEY, "us-east-1"),
            BOTO_DELETE
        );
        // The id decoded differently (`+` literal vs `%2B`) is another request.
        let other = Signable {
            path: "/prod/@connections/L0S+M9c%2FOFvHcCIhw%3D",
            ..req
        };
        assert_eq!(boto_check(&other, BOTO_DELETE), Err(Refusal::Mismatch));
    }

    #[test]
    fn botocore_vector_body_and_query() {
        let body = br#"{"text":"hi"}"#;
        let hash = sha256_hex(body);
        let req = boto_request(
            "POST",
            "/@topics/room%3Alobby",
            "exclude=L0S%2BM9c%2FOFvHcCIhw%3D&event=said",
            &hash,
        );
        assert_eq!(boto_check(&req, BOTO_PUBLISH), Ok(()));
        // A tampered body: its hash is signed.
        let tampered = sha256_hex(br#"{"text":"hi!"}"#);
        let req2 = Signable {
            payload_hash: &tampered,
            headers: boto_headers(),
            ..req
        };
        assert_eq!(boto_check(&req2, BOTO_PUBLISH), Err(Refusal::Mismatch));
        // A tampered query value.
        let req3 = Signable {
            query: "exclude=L0S%2BM9c%2FOFvHcCIhw%3D&event=sad",
            headers: boto_headers(),
            payload_hash: &hash,
            ..req2
        };
        assert_eq!(boto_check(&req3, BOTO_PUBLISH), Err(Refusal::Mismatch));
    }

    #[test]
    fn the_host_header_must_be_signed() {
        let header = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240209/us-east-1/execute-api/aws4_request, SignedHeaders=x-amz-date, Signature=723c8cc7d424fb85a131991fc317f36b167423d7a142da247619e230a9efd518";
        let empty = sha256_hex(b"");
        let req = boto_request("DELETE", "/", "", &empty);
        assert_eq!(
            boto_check(&req, header),
            Err(Refusal::Malformed("the host header must be signed"))
        );
        // `host` as a substring of another name does not count.
        let sneaky = header.replace("SignedHeaders=x-amz-date", "SignedHeaders=hostx;x-amz-date");
        assert_eq!(
            boto_check(&req, &sneaky),
            Err(Refusal::Malformed("the host header must be signed"))
        );
    }

    #[test]
    fn canonical_query_sorts_and_encodes() {
        assert_eq!(canonical_query("b=2&a=x%20y&c"), "a=x%20y&b=2&c=");
        assert_eq!(canonical_query("event=a:b"), "event=a%3Ab");
        assert_eq!(
            uri_encode(b"/@connections/a=", true),
            "/%40connections/a%3D"
        );
    }
}
