//! TLS to the store (the proxy's upstream and the `http` sink), to Redis (`rediss://`),
//! to PostgreSQL (the `postgres` sink) and to RabbitMQ (the `rabbitmq` sink, `amqps://`):
//! rustls with the `ring` provider, no OpenSSL.
//!
//! Owns the trust roots: the system's (read once at start through
//! `rustls-native-certs`) plus the PEM certificates of a `ca_file` (`upstream.ca_file`,
//! `redis.ca_file`, `orders.postgres_ca_file`, `orders.rabbitmq_ca_file`). Certificates are always verified (name
//! and chain); there is no switch to turn that off.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Once};
use std::task::{Context, Poll};

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    BadCaFile { path: String, reason: String },
    #[error("no trust roots: the system has none (install ca-certificates) and no ca_file is set")]
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
    for cert in trusted(ca_file)? {
        roots.add(cert)?;
    }
    config(roots)
}

/// The system's roots and the certificates of `ca_file` as one PEM bundle: what redis-rs
/// takes as its root certificates (it builds its own rustls configuration from them).
pub fn roots_pem(ca_file: Option<&Path>) -> Result<Vec<u8>, TlsError> {
    use base64::Engine as _;
    let mut pem = String::new();
    for cert in trusted(ca_file)? {
        let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    Ok(pem.into_bytes())
}

/// The trust roots: the system's that rustls can use, then those of `ca_file`; never
/// empty.
fn trusted(ca_file: Option<&Path>) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    // Unreadable or unusable system certificates are skipped: one bad file in /etc/ssl
    // must not take the gateway down; an empty result with no ca_file is refused below.
    let native = rustls_native_certs::load_native_certs();
    if !native.errors.is_empty() {
        tracing::debug!(errors = ?native.errors, "some system certificates were not loaded");
    }
    let mut certs: Vec<_> = native
        .certs
        .into_iter()
        .filter(|cert| RootCertStore::empty().add(cert.clone()).is_ok())
        .collect();
    if let Some(path) = ca_file {
        certs.extend(read_ca_file(path)?);
    }
    if certs.is_empty() {
        return Err(TlsError::NoRoots);
    }
    Ok(certs)
}

/// Makes rustls' process-wide default provider the `ring` one, once. redis-rs builds its
/// TLS configuration with `ClientConfig::builder()`, which takes that default: installed
/// before the first Redis connection, no other crate's choice (or none) can decide it.
pub fn install_default_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err: a provider is installed already (by an embedding program); keep it.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
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

/// TLS for tokio-postgres (the `postgres` sink): a verified rustls handshake, under the
/// URL's `sslmode` (tokio-postgres decides whether to ask for TLS: `disable` never,
/// `prefer` when the server offers it, `require` always).
#[derive(Clone)]
pub struct PostgresTls {
    config: Arc<ClientConfig>,
}

impl PostgresTls {
    pub fn new(config: Arc<ClientConfig>) -> PostgresTls {
        PostgresTls { config }
    }
}

impl<S> tokio_postgres::tls::MakeTlsConnect<S> for PostgresTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PostgresTlsStream<S>;
    type TlsConnect = PostgresTlsConnect;
    type Error = std::io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<PostgresTlsConnect, std::io::Error> {
        // Called for unix sockets too (with no name), where PostgreSQL never speaks TLS:
        // an unusable name is an error only when a handshake needs it.
        let name = ServerName::try_from(domain)
            .map(|n| n.to_owned())
            .map_err(|e| format!("{domain:?} is not a TLS server name: {e}"));
        Ok(PostgresTlsConnect {
            connector: tokio_rustls::TlsConnector::from(self.config.clone()),
            name,
        })
    }
}

pub struct PostgresTlsConnect {
    connector: tokio_rustls::TlsConnector,
    name: Result<ServerName<'static>, String>,
}

impl<S> tokio_postgres::tls::TlsConnect<S> for PostgresTlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PostgresTlsStream<S>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<PostgresTlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let name = self.name.map_err(std::io::Error::other)?;
            let inner = self.connector.connect(name, stream).await?;
            Ok(PostgresTlsStream { inner })
        })
    }
}

pin_project_lite::pin_project! {
    /// A TLS connection to PostgreSQL. No channel binding is offered: SCRAM
    /// authenticates without `-PLUS`, as over a connection without TLS.
    pub struct PostgresTlsStream<S> {
        #[pin]
        inner: tokio_rustls::client::TlsStream<S>,
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for PostgresTlsStream<S> {
    fn channel_binding(&self) -> tokio_postgres::tls::ChannelBinding {
        tokio_postgres::tls::ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for PostgresTlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for PostgresTlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
