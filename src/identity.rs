//! Who is asking: the user id (JWT or trusted header) and the client IP (TCP peer, or
//! `X-Forwarded-For` walked from the right when the peer is a trusted proxy).
//!
//! Owns credential checks and the client-IP rule of docs/api.md. Never decides what a failure
//! means over HTTP (that is `http/problem.rs`), never logs tokens, and never trusts any
//! part of `X-Forwarded-For` that a non-proxy could have written.

use std::net::{IpAddr, SocketAddr};

use http::header::{HeaderName, AUTHORIZATION};
use http::HeaderMap;
use ipnet::IpNet;
use std::sync::Arc;

use crate::clock::Clock;
use crate::config::{ConfigError, IdentityConfig, IdentityMode, Secrets};
use crate::identity::jwks::KeySet;

pub mod jwks;
mod jwt;
mod token_cache;

/// Longest user id we accept, in bytes (user ids end up in Redis keys and order bodies).
pub const MAX_USER_ID_LEN: usize = 128;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Why a request has no usable identity (or why the identity setup is unusable).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// No credentials at all: no `Authorization: Bearer` / no identity header.
    #[error("missing credentials")]
    Missing,
    /// Credentials present but unacceptable. The reason is safe to show to the client.
    #[error("invalid credentials: {0}")]
    Invalid(&'static str),
    /// `identity.mode = "jwt"` (HS256) without a secret (construction only).
    #[error("identity mode \"jwt\" needs a JWT secret (see identity.jwt_secret_env)")]
    MissingSecret,
    /// RS256 / ES256 without `identity.jwt_public_keys` (construction only).
    #[error("RS256 and ES256 need identity.jwt_public_keys")]
    MissingPublicKeys,
    /// The public key file is unusable (construction only).
    #[error("identity.jwt_public_keys: {0}")]
    PublicKeys(String),
    /// `identity.header` is not a valid HTTP header name (construction only).
    #[error("identity.header {0:?} is not a valid header name")]
    BadHeaderName(String),
}

// === impl Identity ===

/// Extracts the user id from a request. Built once at start (and on reload); cheap to use.
#[derive(Clone)]
pub struct Identity {
    source: Source,
}

#[derive(Clone)]
enum Source {
    /// Shared, because public keys are swapped in place on reload.
    Jwt(Arc<jwt::Jwt>),
    /// A header set by the store's auth layer, parsed to a `HeaderName` once.
    Header(HeaderName),
}

impl std::fmt::Debug for Identity {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Source::Jwt(j) => write!(f, "Identity(jwt {:?})", j.algorithm()),
            Source::Header(h) => write!(f, "Identity(header {h})"),
        }
    }
}

impl Identity {
    /// The identity `cfg` describes; tokens expire on `clock` (the sale's).
    pub fn from_config(
        cfg: &IdentityConfig,
        secrets: &Secrets,
        clock: &Clock,
    ) -> Result<Identity, IdentityError> {
        let source = match cfg.mode {
            IdentityMode::Jwt => Source::Jwt(Arc::new(jwt::Jwt::new(cfg, secrets, clock)?)),
            IdentityMode::Header => {
                let name = HeaderName::from_bytes(cfg.header.as_bytes())
                    .map_err(|_| IdentityError::BadHeaderName(cfg.header.clone()))?;
                Source::Header(name)
            }
        };
        Ok(Identity { source })
    }

    /// The identity header of `mode = "header"`: proxied requests from peers that are not
    /// trusted proxies must not carry it to the store.
    pub fn header_name(&self) -> Option<&HeaderName> {
        match &self.source {
            Source::Header(name) => Some(name),
            Source::Jwt(_) => None,
        }
    }

    /// Re-reads `identity.jwt_public_keys` (RS256 / ES256; `None` otherwise) without
    /// using them yet: a reload checks every file before it changes anything.
    pub fn read_keys(&self) -> Result<Option<Arc<KeySet>>, ConfigError> {
        match &self.source {
            Source::Jwt(j) => j.read_keys(),
            Source::Header(_) => Ok(None),
        }
    }

    /// Verifies tokens with `keys` from now on (from [`read_keys`](Self::read_keys)).
    pub fn use_keys(&self, keys: Arc<KeySet>) {
        if let Source::Jwt(j) = &self.source {
            j.use_keys(keys);
        }
    }

    /// The user id of this request, validated (see [`valid_user_id`]).
    ///
    /// `peer_trusted`: whether the TCP peer is one of `server.trusted_proxies`
    /// ([`ClientIp::is_trusted`]). The identity header is the word of the store's auth
    /// layer only when it comes through a trusted proxy; from anyone else it is a claim
    /// the client made up, so the request has no identity. JWTs carry their own proof
    /// and are believed from anyone.
    pub fn user_id(
        &self,
        headers: &HeaderMap,
        peer_trusted: bool,
    ) -> Result<String, IdentityError> {
        match &self.source {
            Source::Jwt(j) => check_user_id(j.subject(bearer_token(headers)?)?),
            Source::Header(name) if !peer_trusted => Err(if headers.contains_key(name) {
                IdentityError::Invalid("the identity header is honoured only from trusted proxies")
            } else {
                IdentityError::Missing
            }),
            Source::Header(name) => {
                let value = single_value(headers, name)?;
                let s = value
                    .to_str()
                    .map_err(|_| IdentityError::Invalid("user id is not printable ASCII"))?;
                check_user_id(s.to_owned())
            }
        }
    }
}

/// The value of `name`, which must appear exactly once: two values mean someone other
/// than the trusted layer added one, and picking either would be a guess.
fn single_value<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Result<&'a http::HeaderValue, IdentityError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next().ok_or(IdentityError::Missing)?;
    if values.next().is_some() {
        return Err(IdentityError::Invalid("identity header repeated"));
    }
    Ok(first)
}

/// `Authorization: Bearer <token>` (scheme case-insensitive, RFC 9110 §11.1).
fn bearer_token(headers: &HeaderMap) -> Result<&str, IdentityError> {
    let value = single_value(headers, &AUTHORIZATION)?;
    let value = value
        .to_str()
        .map_err(|_| IdentityError::Invalid("malformed Authorization header"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or(IdentityError::Invalid("expected a Bearer token"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(IdentityError::Invalid("expected a Bearer token"));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(IdentityError::Invalid("empty Bearer token"));
    }
    Ok(token)
}

/// A user id is 1..=128 bytes of printable ASCII without spaces (0x21..=0x7E).
pub fn valid_user_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_USER_ID_LEN && s.bytes().all(|b| b.is_ascii_graphic())
}

fn check_user_id(s: String) -> Result<String, IdentityError> {
    if valid_user_id(&s) {
        Ok(s)
    } else {
        Err(IdentityError::Invalid(
            "user id must be 1-128 printable ASCII characters without spaces",
        ))
    }
}

// === impl ClientIp ===

/// Who sent a request, as far as the edge can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// The TCP peer (canonical: IPv4-mapped IPv6 is IPv4).
    pub peer: IpAddr,
    /// See [`ClientIp::resolve`].
    pub client_ip: IpAddr,
    /// The TCP peer is one of `server.trusted_proxies`: its forwarding and identity
    /// headers are believed.
    pub peer_trusted: bool,
}

/// Resolves the client address of a request from the TCP peer and `X-Forwarded-For`.
#[derive(Debug, Clone, Default)]
pub struct ClientIp {
    trusted: Vec<IpNet>,
}

impl ClientIp {
    pub fn new(trusted_proxies: &[IpNet]) -> ClientIp {
        ClientIp {
            trusted: trusted_proxies.iter().map(|n| canonical_net(*n)).collect(),
        }
    }

    /// Whether `ip` (IPv4-mapped IPv6 counts as IPv4) is one of our trusted proxies.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The client address and whether the peer is a trusted proxy, in one go.
    pub fn origin(&self, peer: IpAddr, headers: &HeaderMap) -> Origin {
        Origin {
            peer: peer.to_canonical(),
            client_ip: self.resolve(peer, headers),
            peer_trusted: self.is_trusted(peer),
        }
    }

    /// The client address (canonical: IPv4-mapped IPv6 comes back as IPv4).
    ///
    /// An untrusted peer is the client, whatever its headers say. A trusted peer's
    /// `X-Forwarded-For` (all values, in order) is walked from the right: trusted proxies
    /// are skipped, the first other address is the client. An unparsable entry stops the
    /// walk at the last good address; if every entry is a trusted proxy, the left-most.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.is_trusted(peer) {
            return peer;
        }
        let mut last_good = peer;
        let entries = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .rev()
            .flat_map(|v| v.as_bytes().rsplit(|&b| b == b','));
        for entry in entries {
            let Some(ip) = parse_xff_entry(entry) else {
                break;
            };
            if !self.is_trusted(ip) {
                return ip;
            }
            last_good = ip;
        }
        last_good
    }
}

/// `::ffff:10.0.0.0/104` → `10.0.0.0/8`: addresses are compared in canonical form.
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(n) if n.prefix_len() >= 96 => n
            .addr()
            .to_ipv4_mapped()
            .and_then(|v4| ipnet::Ipv4Net::new(v4, n.prefix_len() - 96).ok())
            .map_or(net, IpNet::V4),
        _ => net,
    }
}

/// One `X-Forwarded-For` element: `1.2.3.4`, `2001:db8::1`, `[2001:db8::1]`, or with a
/// port (`1.2.3.4:80`, `[2001:db8::1]:80`) as some proxies write it.
fn parse_xff_entry(raw: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(raw).ok()?.trim();
    let ip = s
        .parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            s.strip_prefix('[')?
                .strip_suffix(']')?
                .parse::<std::net::Ipv6Addr>()
                .ok()
                .map(IpAddr::V6)
        })?;
    Some(ip.to_canonical())
}

#[cfg(test)]
mod tests;
