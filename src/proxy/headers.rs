//! Headers on their way through the proxy: hop-by-hop stripping (RFC 9110 §7.6.1), the
//! `Host` rule (RFC 9112 §3.2) and the forwarding headers with their trust rule.
//!
//! The trust rule, in one place: a TCP peer in `server.trusted_proxies` is a proxy of the
//! deployment, and the forwarding headers it sends (`X-Forwarded-*`, `Forwarded`,
//! `X-Real-IP`) and the `identity.mode = "header"` user header are its word, passed on.
//! From any other peer they are whatever the client typed: dropped, and the ones the
//! store relies on are written by us from what we saw.

use std::io::Write as _;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Version;

use crate::identity::Origin;

/// Always hop-by-hop; `Connection` may name more.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Client-written claims about the hops before us, believed from trusted proxies only.
/// `X-Forwarded-For` and `X-Forwarded-Proto` are rewritten rather than just dropped.
const FORWARDING_CLAIMS: [&str; 5] = [
    "forwarded",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-real-ip",
];

pub(super) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The scheme of our public listener (it speaks plain HTTP; TLS ends in front of it).
const LISTENER_SCHEME: HeaderValue = HeaderValue::from_static("http");

/// Longest `X-Request-Id` we take from a client.
const MAX_REQUEST_ID: usize = 128;

/// An `X-Request-Id` we take from a client: 1-128 of `A-Z a-z 0-9 . _ : -`. Ids go into
/// every log line of the request; anything wider (quotes, spaces, `=`) could forge log
/// fields, so it is replaced by one of ours.
pub fn valid_request_id(id: &str) -> bool {
    (1..=MAX_REQUEST_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// The comma-separated tokens of a `Connection` header value, trimmed.
pub(super) fn tokens(value: &HeaderValue) -> impl Iterator<Item = &[u8]> {
    value
        .as_bytes()
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
}

/// Removes the hop-by-hop headers, including those named in `Connection`. `Host` is
/// end-to-end whatever `Connection` says: a client naming it would otherwise make the
/// store see the request without the name it was sent to.
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Cloning the values (cheap, shared bytes) frees the map for removal; the Vec
    // allocates only when a `Connection` header is present.
    let named: Vec<HeaderValue> = headers
        .get_all(header::CONNECTION)
        .iter()
        .cloned()
        .collect();
    for name in named.iter().flat_map(tokens) {
        // An invalid name matches nothing and is ignored.
        if let Ok(name) = std::str::from_utf8(name) {
            if !name.eq_ignore_ascii_case("host") {
                headers.remove(name);
            }
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Puts `Connection: upgrade` and the `Upgrade` header back after stripping: the one
/// hop-by-hop pair a tunnel needs on both of its hops.
pub(super) fn keep_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// RFC 9112 §3.2: an HTTP/1.1 request has exactly one `Host`; an HTTP/1.0 one at most
/// one (without one, the client's HTTP/1.1 client sets the upstream's authority). Two
/// would let the store and a cache in front of it disagree on the target.
pub fn check_host(version: Version, headers: &HeaderMap) -> Result<(), &'static str> {
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Err("more than one Host header"),
        (None, _) if version >= Version::HTTP_11 => Err("an HTTP/1.1 request needs a Host header"),
        _ => Ok(()),
    }
}

/// Applies the trust rule and sets what the store relies on:
/// - `X-Forwarded-For`: the peer appended to a trusted proxy's chain; from anyone else,
///   the peer alone (a client's own entries are dropped, so the left-most entry the store
///   sees is never one the client made up).
/// - `X-Forwarded-Proto`: a trusted proxy's kept (set when absent); from anyone else, the
///   scheme of our listener.
/// - `Forwarded`, `X-Forwarded-Host`/`-Port`/`-Prefix`, `X-Real-IP` and the identity
///   header (`identity_header`, mode "header"): kept from a trusted proxy, else dropped.
/// - `X-Request-Id`: ours, when we have one.
pub(super) fn add_forwarding(
    headers: &mut HeaderMap,
    origin: Origin,
    identity_header: Option<&HeaderName>,
    request_id: Option<&str>,
) {
    let mut xff = Vec::with_capacity(64);
    if origin.peer_trusted {
        for value in headers.get_all(X_FORWARDED_FOR) {
            if !value.is_empty() {
                xff.extend_from_slice(value.as_bytes());
                xff.extend_from_slice(b", ");
            }
        }
        headers.entry(X_FORWARDED_PROTO).or_insert(LISTENER_SCHEME);
    } else {
        for name in FORWARDING_CLAIMS {
            headers.remove(name);
        }
        if let Some(name) = identity_header {
            headers.remove(name);
        }
        headers.insert(X_FORWARDED_PROTO, LISTENER_SCHEME);
    }
    // Writing to a Vec cannot fail.
    let _ = write!(xff, "{}", origin.peer.to_canonical());
    // Earlier values were valid header values, so their concatenation is one too.
    if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(xff)) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    if let Some(id) = request_id.and_then(|id| HeaderValue::from_str(id).ok()) {
        headers.insert(X_REQUEST_ID, id);
    }
}
