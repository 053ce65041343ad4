//! `bench_ceiling` — the HTTP ceiling for benchmarks: a bare hyper server answering every
//! request with the same 409 problem+json body flashgate's sold-out path sends, on the
//! same runtime and builder settings. Usage: `bench_ceiling [127.0.0.1:18409]`

use std::convert::Infallible;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

const BODY: &[u8] =
    br#"{"detail":"the item is sold out","status":409,"title":"Sold out","type":"urn:flashgate:problem:sold-out"}"#;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18409".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("bench_ceiling on http://{addr}");
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let svc = service_fn(|_req| async {
                let mut r = Response::new(Full::new(Bytes::from_static(BODY)));
                *r.status_mut() = StatusCode::CONFLICT;
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/problem+json"),
                );
                Ok::<_, Infallible>(r)
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
