//! The `awc` client behind the gateway's calls to functions and the connections client's calls
//! to a connections API: plain HTTP, and HTTPS with the `tls` feature.

use std::time::Duration;

/// A client with a pool of at most `pool_limit` connections. No redirects (an answer is the
/// function's or the API's own), and no client-wide timeout: each call sets its own.
pub(crate) fn client(pool_limit: usize) -> awc::Client {
    let connector = awc::Connector::new().limit(pool_limit);
    #[cfg(feature = "tls")]
    let connector = connector.rustls_0_23(tls::config());
    awc::Client::builder()
        .disable_redirects()
        .timeout(Duration::from_secs(3600))
        .connector(connector)
        .finish()
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
                        log::warn!(
                            "SSL_CERT_FILE {}: {ignored} certificate(s) could not be used ({added} added)",
                            path.to_string_lossy()
                        );
                    }
                }
                Err(e) => log::warn!(
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
