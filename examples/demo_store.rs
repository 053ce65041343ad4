//! `demo_store` — the tiny store that flashgate fronts in the demo and benchmarks.
//!
//! Serves a product page on `/` (and echoes any other GET as plain text), and receives
//! paid orders on `POST /flashgate/orders`: it checks `Flashgate-Signature` when
//! `FLASHGATE_SINK_SECRET` is set, deduplicates by `Idempotency-Key`, and appends each
//! new order as one JSON line to the orders file.
//!
//! Usage: `demo_store [--listen 127.0.0.1:3000] [--orders var/orders.jsonl]`

use std::collections::HashSet;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use flashgate::signature::SignatureVerifier;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

const PAGE: &str = r#"<!doctype html><html><head><meta charset="utf-8"><title>Demo store</title></head>
<body><h1>Phone X 128G</h1><p>Flash sale: press buy at the start.</p>
<form method="post" action="/seckill/campaigns/demo/items/phone-x-128g-black/orders"><button>Buy</button></form>
</body></html>"#;

struct Store {
    /// Order ids already written: the sink contract is exactly-once at the store.
    seen: Mutex<(HashSet<String>, std::fs::File)>,
    verifier: Option<SignatureVerifier>,
}

fn reply(status: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(ctype),
    );
    r
}

async fn handle(store: Arc<Store>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method().clone(), req.uri().path()) {
        (Method::POST, "/flashgate/orders") => {
            let (parts, body) = req.into_parts();
            let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
                return reply(StatusCode::BAD_REQUEST, "text/plain", "unreadable body");
            };
            if let Some(v) = &store.verifier {
                let sig = parts
                    .headers
                    .get("flashgate-signature")
                    .and_then(|h| h.to_str().ok());
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                if v.verify(sig, &body, now).is_err() {
                    return reply(StatusCode::UNAUTHORIZED, "text/plain", "bad signature");
                }
            }
            let Some(key) = parts
                .headers
                .get("idempotency-key")
                .and_then(|h| h.to_str().ok())
            else {
                return reply(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    "missing Idempotency-Key",
                );
            };
            let mut guard = store.seen.lock().unwrap_or_else(|e| e.into_inner());
            let (seen, file) = &mut *guard;
            if seen.insert(key.to_string()) {
                let ok = file
                    .write_all(&body)
                    .and_then(|_| file.write_all(b"\n"))
                    .and_then(|_| file.sync_data());
                if ok.is_err() {
                    seen.remove(key);
                    return reply(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        "cannot write",
                    );
                }
            }
            reply(StatusCode::OK, "application/json", r#"{"stored":true}"#)
        }
        (Method::GET, "/") => reply(StatusCode::OK, "text/html; charset=utf-8", PAGE),
        (m, p) => reply(
            StatusCode::OK,
            "text/plain",
            format!("demo store: {m} {p}\n"),
        ),
    }
}

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

const USAGE: &str = "\
demo_store: the tiny store flashgate fronts in the demo and benchmarks

Usage: demo_store [--listen 127.0.0.1:3000] [--orders var/orders.jsonl]

  --listen ADDR   where to serve the product page and POST /flashgate/orders
  --orders FILE   paid orders, one JSON line each (created with its directory)

Environment: FLASHGATE_SINK_SECRET, when set, is the key Flashgate-Signature is
checked with on each order.
";

#[tokio::main]
async fn main() -> std::io::Result<()> {
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}");
        return Ok(());
    }
    let listen: SocketAddr = arg("--listen", "127.0.0.1:3000")
        .parse()
        .map_err(std::io::Error::other)?;
    let path = PathBuf::from(arg("--orders", "var/orders.jsonl"));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    // Orders already in the file count as seen, so a restarted store still deduplicates.
    let seen: HashSet<String> = std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["order_id"].as_str().map(str::to_string))
        .collect();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let secret = std::env::var("FLASHGATE_SINK_SECRET")
        .ok()
        .filter(|s| !s.is_empty());
    let store = Arc::new(Store {
        seen: Mutex::new((seen, file)),
        verifier: secret.map(|s| SignatureVerifier::new(Some(&s), Duration::from_secs(300))),
    });
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!(
        "demo store on http://{listen}, orders -> {}",
        path.display()
    );
    loop {
        let (stream, _) = listener.accept().await?;
        let store = store.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let store = store.clone();
                async move { Ok::<_, Infallible>(handle(store, req).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
