//! TLS to the store (the proxy's upstream and the `http` sink): rustls with the `ring`
//! provider, no OpenSSL.
//!
//! Owns the trust roots: the system's (read once at start through
//! `rustls-native-certs`) plus the PEM certificates of `upstream.ca_file`. Certificates
//! are always verified (name and chain); there is no switch to turn that off.

use std::path::Path;
use std::sync::Arc;

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    BadCaFile { path: String, reason: String },
    #[error("no trust roots: the system has none (install ca-certificates) and upstream.ca_file is not set")]
    NoRoots,
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
}

/// The certificates of a PEM file; at least one, every one parsable.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let shown = path.display().to_string();
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        path: shown.clone(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCaFile {
            path: shown.clone(),
            reason: format!("not a PEM certificate file: {e}"),
        })?;
    let mut roots = RootCertStore::empty();
    for cert in &certs {
        roots.add(cert.clone()).map_err(|e| TlsError::BadCaFile {
            path: shown.clone(),
            reason: format!("unusable certificate: {e}"),
        })?;
    }
    if certs.is_empty() {
        return Err(TlsError::BadCaFile {
            path: shown,
            reason: "holds no PEM certificate".into(),
        });
    }
    Ok(certs)
}

/// A client configuration trusting the system's roots and the certificates of `ca_file`.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    // Unreadable system certificates are skipped: one bad file in /etc/ssl must not
    // take the gateway down; an empty result with no ca_file is refused below.
    let native = rustls_native_certs::load_native_certs();
    if !native.errors.is_empty() {
        tracing::debug!(errors = ?native.errors, "some system certificates were not loaded");
    }
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        for cert in read_ca_file(path)? {
            roots.add(cert)?;
        }
    }
    if roots.is_empty() {
        return Err(TlsError::NoRoots);
    }
    config(roots)
}

/// A configuration trusting nothing: for a connector that never speaks TLS (`http://`).
pub fn no_roots() -> Arc<ClientConfig> {
    config(RootCertStore::empty()).expect("the ring provider supports the default versions")
}

fn config(roots: RootCertStore) -> Result<Arc<ClientConfig>, TlsError> {
    // The provider is named, not taken from the process default: no feature unification
    // elsewhere in the tree can make rustls pick another one, or panic choosing.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// An HTTP/1 connector speaking TLS to `https://` URIs and plain TCP to `http://` ones.
pub fn https_connector(
    tls: Arc<ClientConfig>,
    mut http: HttpConnector,
) -> HttpsConnector<HttpConnector> {
    http.enforce_http(false);
    HttpsConnectorBuilder::new()
        .with_tls_config(Arc::unwrap_or_clone(tls))
        .https_or_http()
        .enable_http1()
        .wrap_connector(http)
}
