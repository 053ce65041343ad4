//! The `http` sink: `POST orders.http_url` with the order JSON,
//! `Idempotency-Key: <order_id>` and a `Flashgate-Signature` made with the sink secret.
//! Any 2xx means persisted; anything else is retried by the outbox consumer.
//! A second charge's refund is keyed `<order_id>:<payment_id>`, so the store's dedupe by
//! order never swallows it.
//! An `https://` URL is verified like the store (system roots + `upstream.ca_file`).
//! One request per entry, its answer bounded by `orders.sink_timeout`; the outbox runs up
//! to `orders.delivery_concurrency` of them at once.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

use super::{DeliverFuture, Sink, SinkError};
use crate::signature::sign;
use crate::stock::outbox::Entry;

pub struct HttpSink {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: Uri,
    secret: Option<Vec<u8>>,
    timeout: Duration,
}

impl HttpSink {
    /// `ca_file`: extra trust roots for an `https://` URL (`upstream.ca_file`).
    pub fn new(
        url: &str,
        secret: Option<&str>,
        timeout: Duration,
        ca_file: Option<&Path>,
    ) -> Result<HttpSink, SinkError> {
        let url: Uri = url
            .parse()
            .map_err(|e| SinkError::Config(format!("orders.http_url: {e}")))?;
        let tls = match url.scheme_str() {
            Some("http") => crate::tls::no_roots(),
            Some("https") => crate::tls::client_config(ca_file)
                .map_err(|e| SinkError::Config(format!("orders.http_url: {e}")))?,
            _ => {
                return Err(SinkError::Config(
                    "orders.http_url must be an http:// or https:// URL".into(),
                ))
            }
        };
        let connector = crate::tls::https_connector(tls, HttpConnector::new());
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(HttpSink {
            client,
            url,
            secret: secret.map(|s| s.as_bytes().to_vec()),
            timeout,
        })
    }

    async fn post(&self, entry: &Entry) -> Result<(), SinkError> {
        let body = super::body(entry);
        let key = super::idempotency_key(entry);
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(self.url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", key);
        if let Some(secret) = &self.secret {
            let t = time::OffsetDateTime::now_utc().unix_timestamp();
            req = req.header("flashgate-signature", sign(secret, &body, t));
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| SinkError::Config(e.to_string()))?;
        let res = tokio::time::timeout(self.timeout, self.client.request(req))
            .await
            .map_err(|_| SinkError::Unreachable(format!("no answer within {:?}", self.timeout)))?
            .map_err(|e| SinkError::Unreachable(e.to_string()))?;
        let status = res.status();
        // Drain the body so the connection goes back to the pool; the status already
        // decided the outcome.
        let _ = tokio::time::timeout(self.timeout, res.into_body().collect()).await;
        if status.is_success() {
            Ok(())
        } else {
            Err(SinkError::Refused(format!("store answered {status}")))
        }
    }
}

impl Sink for HttpSink {
    fn name(&self) -> &'static str {
        "http"
    }

    fn deliver<'a>(&'a self, entries: &'a [Entry]) -> DeliverFuture<'a> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(entries.len());
            for e in entries {
                out.push(self.post(e).await);
            }
            out
        })
    }
}
