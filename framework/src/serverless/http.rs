//! HTTP for the serverless side: the `awc` client behind the gateway's calls to functions and
//! the connections client's calls to a connections API (plain HTTP, and HTTPS with the `tls`
//! feature), one exchange with its timeout and size limit, reading a request body up to a
//! limit, reading headers, and percent-encoding.

use std::cell::OnceCell;
use std::time::Duration;

use actix_web::error::PayloadError;
use actix_web::http::header::{AsHeaderName, HeaderMap};
use actix_web::http::{Method, StatusCode};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use percent_encoding::{utf8_percent_encode, AsciiSet, PercentEncode, NON_ALPHANUMERIC};

/// Everything but the unreserved characters (`A-Z a-z 0-9 - _ . ~`) percent-encoded: path
/// segments (connection ids hold `+`, `/`, `=`), query keys and values, SigV4's canonical
/// forms.
pub(crate) const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `s` with everything but the [`UNRESERVED`] characters percent-encoded.
pub(crate) fn encode(s: &str) -> PercentEncode<'_> {
    utf8_percent_encode(s, UNRESERVED)
}

/// A header's value, if present and valid UTF-8.
pub(crate) fn header(headers: &HeaderMap, name: impl AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Whose calls a client makes: each has a connection pool of its own size.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Pool {
    /// The gateway's calls to functions, from the connections' threads.
    Functions,
    /// A connections client's calls to a connections API, from the client thread.
    ConnectionsApi,
}

impl Pool {
    fn limit(self) -> usize {
        match self {
            Pool::Functions => 1024,
            Pool::ConnectionsApi => 100,
        }
    }
}

thread_local! {
    /// `awc` clients are not `Send`: one client (and connection pool) per thread and
    /// [`Pool`], made on first use.
    static CLIENTS: [OnceCell<awc::Client>; 2] = const { [OnceCell::new(), OnceCell::new()] };
}

/// A client with a pool of at most `pool_limit` connections. No redirects (an answer is the
/// function's or the API's own), and no client-wide timeout: each call sets its own.
fn client(pool_limit: usize) -> awc::Client {
    let connector = awc::Connector::new().limit(pool_limit);
    #[cfg(feature = "tls")]
    let connector = connector.rustls_0_23(tls::config());
    awc::Client::builder()
        .disable_redirects()
        .timeout(Duration::from_secs(3600))
        .connector(connector)
        .finish()
}

/// One HTTP exchange.
pub(crate) struct Request {
    pub(crate) method: Method,
    pub(crate) url: String,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: Bytes,
    /// For the whole exchange, the answer's body included.
    pub(crate) timeout: Duration,
    /// The largest answer body read.
    pub(crate) limit: usize,
}

/// An answer, read whole.
pub(crate) struct Response {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Response {
    /// A header's value; empty when absent or not UTF-8.
    pub(crate) fn header(&self, name: &str) -> &str {
        header(&self.headers, name).unwrap_or("")
    }
}

/// Why an exchange did not bring an answer.
#[derive(Debug)]
pub(crate) enum Failure {
    /// No (whole) answer within the request's timeout.
    TimedOut,
    /// The request did not go out or was not answered (connection refused, DNS, TLS).
    Unreachable(awc::error::SendRequestError),
    /// The answer's body is larger than the request's limit.
    TooLarge,
    /// The answer's body broke off.
    Broken(PayloadError),
}

/// Performs `req` with a client of `pool` on this thread.
pub(crate) async fn send(pool: Pool, req: Request) -> Result<Response, Failure> {
    let timeout = req.timeout;
    let exchange = async move {
        let mut call = CLIENTS.with(|clients| {
            clients[pool as usize]
                .get_or_init(|| client(pool.limit()))
                .request(req.method, &req.url)
        });
        for (name, value) in &req.headers {
            call = call.insert_header((*name, value.as_str()));
        }
        let mut resp = call
            .timeout(timeout)
            .send_body(req.body)
            .await
            .map_err(|e| match e {
                awc::error::SendRequestError::Timeout => Failure::TimedOut,
                e => Failure::Unreachable(e),
            })?;
        let body = resp.body().limit(req.limit).await.map_err(|e| match e {
            PayloadError::Overflow => Failure::TooLarge,
            // awc's own timeout (the request's), while the body was still coming.
            PayloadError::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => Failure::TimedOut,
            e => Failure::Broken(e),
        })?;
        Ok(Response {
            status: resp.status(),
            headers: resp.headers().clone(),
            body,
        })
    };
    actix_rt::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Err(Failure::TimedOut))
}

/// Why a request body could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// Larger than the limit.
    TooLarge,
    /// The request broke off or was malformed.
    Broken(PayloadError),
}

/// Reads a request body, up to `limit` bytes.
pub(crate) async fn read_body(
    mut payload: impl Stream<Item = Result<Bytes, PayloadError>> + Unpin,
    limit: usize,
) -> Result<Bytes, ReadError> {
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(ReadError::Broken)?;
        if body.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

#[cfg(feature = "tls")]
mod tls {
    use std::sync::{Arc, OnceLock};

    use rustls::{ClientConfig, RootCertStore};
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;

    /// Built once per process: the webpki roots (Mozilla's), plus the PEM certificates in the
    /// file `SSL_CERT_FILE` names (a private CA, as OpenSSL-based tools read it).
    pub(super) fn config() -> Arc<ClientConfig> {
        static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
        CONFIG.get_or_init(|| Arc::new(build())).clone()
    }

    fn build() -> ClientConfig {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = std::env::var_os("SSL_CERT_FILE") {
            match extra_roots(&path) {
                Ok(certs) => {
                    let (added, ignored) = roots.add_parsable_certificates(certs);
                    if ignored > 0 {
                        tracing::warn!(
                            "SSL_CERT_FILE {}: {ignored} certificate(s) could not be used ({added} added)",
                            path.to_string_lossy()
                        );
                    }
                }
                Err(e) => tracing::warn!(
                    "SSL_CERT_FILE {} is not read: {e}; only the webpki roots are trusted",
                    path.to_string_lossy()
                ),
            }
        }
        // Only ring is compiled in: its provider, explicitly, whatever else the process has.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = match ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
        {
            Ok(builder) => builder.with_root_certificates(roots).with_no_client_auth(),
            // ring supports the default versions; this cannot fail short of a broken build.
            Err(e) => unreachable!("ring supports TLS 1.2 and 1.3: {e}"),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config
    }

    fn extra_roots(
        path: &std::ffi::OsStr,
    ) -> Result<Vec<CertificateDer<'static>>, rustls_pki_types::pem::Error> {
        CertificateDer::pem_file_iter(path)?.collect()
    }
}
