//! Real TCP both sides: a tiny hyper upstream on 127.0.0.1:0 that echoes what it got.

use std::convert::Infallible;
use std::future::{Future, Pending};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::*;
use crate::config::HumanDuration;
use crate::identity::Origin;

const CLIENT_IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 1));

/// A client straight from the Internet.
const CLIENT: Origin = Origin {
    peer: CLIENT_IP,
    client_ip: CLIENT_IP,
    peer_trusted: false,
};

/// A request that came through a trusted proxy at 10.0.0.9.
const VIA_PROXY: Origin = Origin {
    peer: IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 9)),
    client_ip: CLIENT_IP,
    peer_trusted: true,
};

// === the upstream ===

/// Serves `handler` on a fresh port until the test's runtime ends.
async fn spawn_upstream<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = Result<Response<Incoming>, Infallible>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let conn =
                http1::Builder::new().serve_connection(TokioIo::new(tcp), service_fn(handler));
            tokio::spawn(conn);
        }
    });
    addr
}

/// Streams the request body back; method, target and every request header come back as
/// `x-echo-*` headers. Adds hop-by-hop headers of its own that must not reach the client.
async fn echo(req: Request<Incoming>) -> Result<Response<Incoming>, Infallible> {
    let mut res = Response::builder()
        .header("x-echo-method", req.method().as_str())
        .header("x-echo-uri", req.uri().to_string())
        .header("connection", "x-upstream-secret")
        .header("x-upstream-secret", "s3cret")
        .header("keep-alive", "timeout=5")
        .header("proxy-authenticate", "Basic")
        .header("trailer", "x-checksum")
        .header("upgrade", "h2c");
    for (name, value) in req.headers() {
        res = res.header(format!("x-echo-{name}"), value);
    }
    Ok(res.body(req.into_body()).unwrap())
}

/// Never answers.
fn silent(_: Request<Incoming>) -> Pending<Result<Response<Incoming>, Infallible>> {
    std::future::pending()
}

fn proxy_to(url: String, timeout: Duration) -> Proxy {
    Proxy::new(&UpstreamConfig {
        url,
        timeout: HumanDuration(timeout),
        idle_timeout: HumanDuration(Duration::from_secs(60)),
        ca_file: None,
    })
    .unwrap()
}

async fn echo_proxy(path: &str) -> Proxy {
    let addr = spawn_upstream(echo).await;
    proxy_to(format!("http://{addr}{path}"), Duration::from_secs(5))
}

fn header<'a>(res: &'a Response<ProxyBody>, name: &str) -> Option<&'a str> {
    res.headers().get(name).map(|v| v.to_str().unwrap())
}

async fn body_bytes(res: Response<ProxyBody>) -> Bytes {
    res.into_body().collect().await.unwrap().to_bytes()
}

// === pass-through ===

#[tokio::test]
async fn get_keeps_method_path_query_and_host() {
    let proxy = echo_proxy("").await;
    let req = Request::get("/a/b?x=1&y=%20z")
        .header("host", "shop.example")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = proxy.forward(req, CLIENT, Some("rid-1")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "x-echo-method"), Some("GET"));
    assert_eq!(header(&res, "x-echo-uri"), Some("/a/b?x=1&y=%20z"));
    assert_eq!(header(&res, "x-echo-host"), Some("shop.example"));
    assert_eq!(header(&res, "x-echo-x-forwarded-for"), Some("198.51.100.1"));
    assert_eq!(header(&res, "x-echo-x-forwarded-proto"), Some("http"));
    assert_eq!(header(&res, "x-echo-x-request-id"), Some("rid-1"));
}

#[tokio::test]
async fn base_path_of_the_upstream_is_prefixed() {
    let proxy = echo_proxy("/store/").await;
    let req = Request::get("http://shop.example/a?x=1")
        .header("host", "shop.example")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = proxy.forward(req, CLIENT, None).await.unwrap();
    assert_eq!(header(&res, "x-echo-uri"), Some("/store/a?x=1"));
    assert_eq!(header(&res, "x-echo-x-request-id"), None);
}

#[tokio::test]
async fn post_body_and_end_to_end_headers_intact() {
    let proxy = echo_proxy("/").await;
    let req = Request::post("/cart/items")
        .header("host", "shop.example")
        .header("content-type", "application/json")
        .header("x-forwarded-proto", "https")
        .body(Full::new(Bytes::from_static(br#"{"sku":"a","qty":2}"#)))
        .unwrap();
    let res = proxy.forward(req, VIA_PROXY, None).await.unwrap();
    assert_eq!(header(&res, "x-echo-method"), Some("POST"));
    assert_eq!(header(&res, "x-echo-uri"), Some("/cart/items"));
    assert_eq!(
        header(&res, "x-echo-content-type"),
        Some("application/json")
    );
    assert_eq!(header(&res, "x-echo-x-forwarded-proto"), Some("https"));
    assert_eq!(header(&res, "content-length"), Some("19"));
    assert_eq!(body_bytes(res).await, &br#"{"sku":"a","qty":2}"#[..]);
}

#[tokio::test]
async fn forwarded_for_is_appended_to_existing_lines() {
    let proxy = echo_proxy("").await;
    let req = Request::get("/")
        .header("host", "shop.example")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-for", "10.0.0.1")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = proxy.forward(req, VIA_PROXY, None).await.unwrap();
    let xff: Vec<_> = res
        .headers()
        .get_all("x-echo-x-forwarded-for")
        .iter()
        .collect();
    assert_eq!(
        xff,
        ["203.0.113.7, 10.0.0.1, 10.0.0.9"],
        "the peer is appended"
    );
}

#[tokio::test]
async fn an_untrusted_peers_forwarding_claims_are_replaced() {
    let proxy = echo_proxy("").await;
    let req = Request::get("/")
        .header("host", "shop.example")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "evil.example")
        .header("forwarded", "for=1.2.3.4;proto=https")
        .header("x-real-ip", "1.2.3.4")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = proxy.forward(req, CLIENT, None).await.unwrap();
    assert_eq!(header(&res, "x-echo-x-forwarded-for"), Some("198.51.100.1"));
    assert_eq!(header(&res, "x-echo-x-forwarded-proto"), Some("http"));
    for name in ["x-forwarded-host", "forwarded", "x-real-ip"] {
        assert_eq!(header(&res, &format!("x-echo-{name}")), None, "{name}");
    }
}

#[tokio::test]
async fn hop_by_hop_headers_are_dropped_both_ways() {
    let proxy = echo_proxy("").await;
    let req = Request::post("/")
        .header("host", "shop.example")
        .header("connection", "x-secret, keep-alive")
        .header("x-secret", "s")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("te", "trailers")
        .header("trailer", "x-checksum")
        .header("transfer-encoding", "chunked")
        .header("upgrade", "websocket")
        .header("x-kept", "yes")
        .body(Full::new(Bytes::from_static(b"x")))
        .unwrap();
    let res = proxy.forward(req, CLIENT, None).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "x-echo-x-kept"), Some("yes"));
    for name in [
        "x-secret",
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        let echoed = format!("x-echo-{name}");
        assert_eq!(header(&res, &echoed), None, "{name} reached the upstream");
    }
    for name in [
        "connection",
        "x-upstream-secret",
        "keep-alive",
        "proxy-authenticate",
        "trailer",
        "upgrade",
    ] {
        assert_eq!(header(&res, name), None, "{name} reached the client");
    }
    assert_eq!(body_bytes(res).await, &b"x"[..]);
}

/// A request body whose chunks the test hands over one at a time.
struct ChanBody(mpsc::Receiver<Bytes>);

impl Body for ChanBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
    }
}

/// 1 MiB in 64 KiB chunks, each echoed back through the proxy before the next is sent:
/// neither body can have been buffered whole.
#[tokio::test]
async fn one_megabyte_streams_both_ways() {
    const CHUNK: usize = 64 * 1024;
    let proxy = echo_proxy("").await;
    let (tx, rx) = mpsc::channel(1);
    let req = Request::put("/upload")
        .header("host", "shop.example")
        .body(ChanBody(rx))
        .unwrap();
    let res = tokio::spawn(async move { proxy.forward(req, CLIENT, None).await.unwrap() });

    let run = async {
        tx.send(Bytes::from(vec![0u8; CHUNK])).await.unwrap();
        let mut res = res.await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, "transfer-encoding"), None);
        let mut got = 0;
        for i in 0..16u8 {
            if i > 0 {
                tx.send(Bytes::from(vec![i; CHUNK])).await.unwrap();
            }
            let mut this_chunk = 0;
            while this_chunk < CHUNK {
                let frame = res.body_mut().frame().await.unwrap().unwrap();
                let data = frame.into_data().unwrap();
                assert!(data.iter().all(|&b| b == i), "chunk {i} came back altered");
                this_chunk += data.len();
            }
            got += this_chunk;
        }
        drop(tx);
        assert!(res.body_mut().frame().await.is_none());
        got
    };
    let got = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("streaming stalled");
    assert_eq!(got, 16 * CHUNK);
}

/// The production body type, through a real front server and a real client.
#[tokio::test]
async fn incoming_bodies_through_a_front_server() {
    let proxy = echo_proxy("").await;
    let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front_addr = front.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, peer)) = front.accept().await {
            let proxy = proxy.clone();
            let svc = service_fn(move |req: Request<Incoming>| {
                let proxy = proxy.clone();
                async move {
                    let origin = Origin {
                        peer: peer.ip(),
                        client_ip: peer.ip(),
                        peer_trusted: false,
                    };
                    Ok::<_, Infallible>(proxy.forward(req, origin, Some("f1")).await.unwrap())
                }
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(tcp), svc));
        }
    });

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let body: Bytes = (0..1024 * 1024u32)
        .map(|i| (i % 251).to_le_bytes()[0])
        .collect();
    let req = Request::post(format!("http://{front_addr}/big?n=1"))
        .body(Full::new(body.clone()))
        .unwrap();
    let res = client.request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let echoed = |name: &str| {
        res.headers()
            .get(name)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(echoed("x-echo-uri"), "/big?n=1");
    assert_eq!(echoed("x-echo-x-forwarded-for"), "127.0.0.1");
    assert_eq!(echoed("x-echo-x-request-id"), "f1");
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), body);
}

// === failures ===

#[tokio::test]
async fn closed_port_is_bad_gateway() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let proxy = proxy_to(format!("http://{addr}"), Duration::from_secs(5));
    let req = Request::get("/")
        .header("host", "shop.example")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let err = proxy.forward(req, CLIENT, None).await.unwrap_err();
    assert_eq!(err, ForwardError::Unreachable);
}

#[tokio::test]
async fn silent_upstream_is_gateway_timeout() {
    let addr = spawn_upstream(silent).await;
    let proxy = proxy_to(format!("http://{addr}"), Duration::from_millis(200));
    let req = Request::get("/slow")
        .header("host", "shop.example")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let err = proxy.forward(req, CLIENT, None).await.unwrap_err();
    assert_eq!(err, ForwardError::Timeout);
}

#[tokio::test]
async fn connect_is_refused() {
    let proxy = proxy_to("http://127.0.0.1:9".into(), Duration::from_secs(1));
    let req = Request::connect("shop.example:443")
        .header("host", "shop.example")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let err = proxy.forward(req, CLIENT, None).await.unwrap_err();
    assert_eq!(err, ForwardError::ConnectMethod);
}

// === construction and URIs ===

#[test]
fn bad_upstream_urls_are_refused() {
    let new = |url: &str, ms| {
        Proxy::new(&UpstreamConfig {
            url: url.into(),
            timeout: HumanDuration(Duration::from_millis(ms)),
            idle_timeout: HumanDuration(Duration::from_secs(60)),
            ca_file: None,
        })
    };
    for url in ["not a url", "/relative", "ftp://x/", "http://x/?q=1"] {
        assert!(
            matches!(new(url, 1000), Err(ProxyError::InvalidUrl { .. })),
            "{url}"
        );
    }
    assert!(matches!(new("http://x", 0), Err(ProxyError::ZeroTimeout)));
    assert!(new("http://127.0.0.1:3000", 1000).is_ok());
    assert!(new("https://shop.example", 1000).is_ok(), "system roots");
}

#[test]
fn upstream_uris() {
    let uri = |base: &str, target: &str| {
        let p = proxy_to(base.into(), Duration::from_secs(1));
        p.inner
            .upstream_uri(&target.parse().unwrap())
            .unwrap()
            .to_string()
    };
    assert_eq!(uri("http://s:3000", "/a?b=1"), "http://s:3000/a?b=1");
    assert_eq!(uri("http://s:3000/", "/"), "http://s:3000/");
    assert_eq!(uri("http://s/shop", "/a"), "http://s/shop/a");
    assert_eq!(uri("http://s/shop/", "/a?b"), "http://s/shop/a?b");
    assert_eq!(
        uri("http://s/shop", "http://other/x?y"),
        "http://s/shop/x?y"
    );
    assert_eq!(uri("http://s/shop", "*"), "http://s*");
}
