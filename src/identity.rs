//! Who is asking: the user id (JWT or trusted header) and the client IP (TCP peer, or
//! `X-Forwarded-For` walked from the right when the peer is a trusted proxy).
//!
//! Owns credential checks and the client-IP rule of SPEC §4. Never decides what a failure
//! means over HTTP (that is `http/problem.rs`), never logs tokens, and never trusts any
//! part of `X-Forwarded-For` that a non-proxy could have written.

use std::net::{IpAddr, SocketAddr};

use http::header::{HeaderName, AUTHORIZATION};
use http::HeaderMap;
use ipnet::IpNet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::config::{IdentityConfig, IdentityMode, Secrets};

/// Longest user id we accept, in bytes (user ids end up in Redis keys and order bodies).
pub const MAX_USER_ID_LEN: usize = 128;

/// Clock skew tolerated on `exp` / `nbf`, in seconds.
const JWT_LEEWAY_SECS: u64 = 5;

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
    /// `identity.mode = "jwt"` without a secret (construction only).
    #[error("identity mode \"jwt\" needs a JWT secret (see identity.jwt_secret_env)")]
    MissingSecret,
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
    /// Key and validation rules are built once: the hot path only decodes and verifies.
    Jwt {
        key: DecodingKey,
        validation: Box<Validation>,
    },
    /// A header set by the store's auth layer, parsed to a `HeaderName` once.
    Header(HeaderName),
}

impl std::fmt::Debug for Identity {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Source::Jwt { .. } => f.write_str("Identity(jwt HS256)"),
            Source::Header(h) => write!(f, "Identity(header {h})"),
        }
    }
}

/// The only claim we read; `exp` is checked by `jsonwebtoken` itself.
#[derive(serde::Deserialize)]
struct Claims {
    sub: String,
}

impl Identity {
    pub fn from_config(cfg: &IdentityConfig, secrets: &Secrets) -> Result<Identity, IdentityError> {
        let source = match cfg.mode {
            IdentityMode::Jwt => {
                let secret = secrets
                    .jwt_secret
                    .as_deref()
                    .filter(|s| !s.is_empty())
                    .ok_or(IdentityError::MissingSecret)?;
                Source::Jwt {
                    key: DecodingKey::from_secret(secret.as_bytes()),
                    validation: Box::new(jwt_validation()),
                }
            }
            IdentityMode::Header => {
                let name = HeaderName::from_bytes(cfg.header.as_bytes())
                    .map_err(|_| IdentityError::BadHeaderName(cfg.header.clone()))?;
                Source::Header(name)
            }
        };
        Ok(Identity { source })
    }

    /// The user id of this request, validated (see [`valid_user_id`]).
    pub fn user_id(&self, headers: &HeaderMap) -> Result<String, IdentityError> {
        match &self.source {
            Source::Jwt { key, validation } => {
                let token = bearer_token(headers)?;
                let data = jsonwebtoken::decode::<Claims>(token, key, validation)
                    .map_err(|e| IdentityError::Invalid(jwt_reason(e.kind())))?;
                check_user_id(data.claims.sub)
            }
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

/// HS256 only (no `none`, no algorithm switching), `exp` and `sub` required, `nbf`
/// honoured when present. `aud` is not checked: the config names no audience of ours, and
/// the store's tokens are accepted as issued (add `identity.audience` to tighten this).
fn jwt_validation() -> Validation {
    let mut v = Validation::new(Algorithm::HS256);
    v.set_required_spec_claims(&["exp", "sub"]);
    v.leeway = JWT_LEEWAY_SECS;
    v.validate_exp = true;
    v.validate_nbf = true;
    v.validate_aud = false;
    v
}

fn jwt_reason(kind: &jsonwebtoken::errors::ErrorKind) -> &'static str {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::ExpiredSignature => "token expired",
        K::ImmatureSignature => "token not yet valid",
        K::InvalidSignature => "bad token signature",
        K::InvalidAlgorithm | K::InvalidAlgorithmName => "token algorithm must be HS256",
        K::MissingRequiredClaim(c) if c == "exp" => "token lacks the `exp` claim (expiry)",
        K::MissingRequiredClaim(_) => "token lacks the `sub` claim (the user id)",
        // `Claims` is read before the required claims are checked: serde sees `sub` first.
        K::Json(e) if e.to_string().starts_with("missing field `sub`") => {
            "token lacks the `sub` claim (the user id)"
        }
        K::Json(e) if e.is_data() => "token claim `sub` (the user id) must be a string",
        _ => "malformed token",
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
mod tests {
    use super::*;
    use http::HeaderValue;
    use jsonwebtoken::{EncodingKey, Header};

    const SECRET: &str = "test-secret-0123456789";

    fn jwt_identity() -> Identity {
        let cfg = IdentityConfig {
            mode: IdentityMode::Jwt,
            jwt_secret_env: "X".into(),
            header: "X-User-Id".into(),
        };
        let secrets = Secrets {
            jwt_secret: Some(SECRET.into()),
            ..Secrets::default()
        };
        Identity::from_config(&cfg, &secrets).unwrap()
    }

    fn header_identity() -> Identity {
        let cfg = IdentityConfig {
            mode: IdentityMode::Header,
            jwt_secret_env: "X".into(),
            header: "X-User-Id".into(),
        };
        Identity::from_config(&cfg, &Secrets::default()).unwrap()
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn token(alg: Algorithm, secret: &str, claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn bearer(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
        );
        h
    }

    #[test]
    fn jwt_mode_needs_a_secret() {
        let cfg = IdentityConfig {
            mode: IdentityMode::Jwt,
            jwt_secret_env: "X".into(),
            header: "X-User-Id".into(),
        };
        let err = Identity::from_config(&cfg, &Secrets::default()).unwrap_err();
        assert_eq!(err, IdentityError::MissingSecret);
    }

    #[test]
    fn valid_jwt_gives_sub() {
        let id = jwt_identity();
        let t = token(
            Algorithm::HS256,
            SECRET,
            serde_json::json!({"sub": "u123", "exp": now() + 60}),
        );
        assert_eq!(id.user_id(&bearer(&t)).unwrap(), "u123");
        // Scheme is case-insensitive.
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, format!("bearer {t}").parse().unwrap());
        assert_eq!(id.user_id(&h).unwrap(), "u123");
    }

    #[test]
    fn jwt_rejections() {
        let id = jwt_identity();
        let exp = now() + 60;
        let cases = [
            token(
                Algorithm::HS256,
                "other",
                serde_json::json!({"sub": "u", "exp": exp}),
            ),
            token(
                Algorithm::HS384,
                SECRET,
                serde_json::json!({"sub": "u", "exp": exp}),
            ),
            token(
                Algorithm::HS256,
                SECRET,
                serde_json::json!({"sub": "u", "exp": now() - 60}),
            ),
            token(Algorithm::HS256, SECRET, serde_json::json!({"sub": "u"})),
            token(Algorithm::HS256, SECRET, serde_json::json!({"exp": exp})),
            token(
                Algorithm::HS256,
                SECRET,
                serde_json::json!({"sub": "", "exp": exp}),
            ),
            token(
                Algorithm::HS256,
                SECRET,
                serde_json::json!({"sub": "a b", "exp": exp}),
            ),
            token(
                Algorithm::HS256,
                SECRET,
                serde_json::json!({"sub": "u", "exp": exp, "nbf": now() + 60}),
            ),
            token(
                Algorithm::HS256,
                SECRET,
                serde_json::json!({"sub": "x".repeat(129), "exp": exp}),
            ),
            "not.a.jwt".to_string(),
        ];
        for t in &cases {
            assert!(
                matches!(id.user_id(&bearer(t)), Err(IdentityError::Invalid(_))),
                "accepted {t}"
            );
        }
        // alg=none with an empty signature.
        let none = format!(
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
            "eyJzdWIiOiJ1IiwiZXhwIjo0MTAyNDQ0ODAwfQ"
        );
        assert!(id.user_id(&bearer(&none)).is_err());
    }

    #[test]
    fn jwt_missing_or_wrong_scheme() {
        let id = jwt_identity();
        assert_eq!(id.user_id(&HeaderMap::new()), Err(IdentityError::Missing));
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, "Basic dTpw".parse().unwrap());
        assert!(matches!(id.user_id(&h), Err(IdentityError::Invalid(_))));
        h.insert(AUTHORIZATION, "Bearer ".parse().unwrap());
        assert!(matches!(id.user_id(&h), Err(IdentityError::Invalid(_))));
    }

    #[test]
    fn header_mode() {
        let id = header_identity();
        let mut h = HeaderMap::new();
        assert_eq!(id.user_id(&h), Err(IdentityError::Missing));
        h.insert("x-user-id", "u-42".parse().unwrap());
        assert_eq!(id.user_id(&h).unwrap(), "u-42");
        for bad in ["", "a b", "tab\there"] {
            h.insert("x-user-id", HeaderValue::from_str(bad).unwrap());
            assert!(id.user_id(&h).is_err(), "accepted {bad:?}");
        }
        h.insert(
            "x-user-id",
            HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        );
        assert!(id.user_id(&h).is_err());
        h.insert("x-user-id", "x".repeat(128).parse().unwrap());
        assert!(id.user_id(&h).is_ok());
        h.insert("x-user-id", "x".repeat(129).parse().unwrap());
        assert!(id.user_id(&h).is_err());
        // A second value is ambiguous: refused.
        h.insert("x-user-id", "u1".parse().unwrap());
        h.append("x-user-id", "u2".parse().unwrap());
        assert!(matches!(id.user_id(&h), Err(IdentityError::Invalid(_))));
    }

    fn client_ip() -> ClientIp {
        ClientIp::new(&[
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
            "fd00::/8".parse().unwrap(),
        ])
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(X_FORWARDED_FOR, v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_spoofing_ignored() {
        let c = client_ip();
        let h = xff(&["1.1.1.1, 127.0.0.1"]);
        assert_eq!(c.resolve(ip("203.0.113.9"), &h), ip("203.0.113.9"));
        assert_eq!(
            c.resolve(ip("203.0.113.9"), &HeaderMap::new()),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn right_most_untrusted_chosen() {
        let c = client_ip();
        // Client wrote 6.6.6.6 itself; 198.51.100.7 is what our first proxy saw.
        let h = xff(&["6.6.6.6, 198.51.100.7, 10.1.2.3"]);
        assert_eq!(c.resolve(ip("127.0.0.1"), &h), ip("198.51.100.7"));
        // Several header lines are one list, in order.
        let h = xff(&["6.6.6.6", "198.51.100.7", "10.1.2.3,10.0.0.1"]);
        assert_eq!(c.resolve(ip("127.0.0.1"), &h), ip("198.51.100.7"));
        // Trusted peer without XFF: the peer.
        assert_eq!(
            c.resolve(ip("127.0.0.1"), &HeaderMap::new()),
            ip("127.0.0.1")
        );
        // All trusted: the left-most.
        let h = xff(&["10.9.9.9, 10.1.1.1"]);
        assert_eq!(c.resolve(ip("10.0.0.1"), &h), ip("10.9.9.9"));
        // IPv6, bracketed and with ports.
        let h = xff(&["[2001:db8::1]:443, fd00::2"]);
        assert_eq!(c.resolve(ip("fd00::1"), &h), ip("2001:db8::1"));
        let h = xff(&["198.51.100.7:5555"]);
        assert_eq!(c.resolve(ip("127.0.0.1"), &h), ip("198.51.100.7"));
    }

    #[test]
    fn garbage_entries_stop_the_walk() {
        let c = client_ip();
        let h = xff(&["198.51.100.7, nonsense, 10.1.2.3"]);
        assert_eq!(c.resolve(ip("127.0.0.1"), &h), ip("10.1.2.3"));
        let h = xff(&["198.51.100.7, garbage"]);
        assert_eq!(c.resolve(ip("127.0.0.1"), &h), ip("127.0.0.1"));
        let h = xff(&["198.51.100.7,,10.1.2.3"]);
        assert_eq!(c.resolve(ip("127.0.0.1"), &h), ip("10.1.2.3"));
        let h = xff(&["garbage, 198.51.100.7"]);
        assert_eq!(c.resolve(ip("127.0.0.1"), &h), ip("198.51.100.7"));
        let mut h = HeaderMap::new();
        h.insert(
            X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
        );
        assert_eq!(c.resolve(ip("127.0.0.1"), &h), ip("127.0.0.1"));
    }

    #[test]
    fn ipv4_mapped_peers_are_ipv4() {
        let c = client_ip();
        let h = xff(&["198.51.100.7"]);
        assert_eq!(c.resolve(ip("::ffff:127.0.0.1"), &h), ip("198.51.100.7"));
        assert_eq!(c.resolve(ip("::ffff:203.0.113.9"), &h), ip("203.0.113.9"));
        let h = xff(&["::ffff:198.51.100.7, ::ffff:10.0.0.5"]);
        assert_eq!(c.resolve(ip("127.0.0.1"), &h), ip("198.51.100.7"));
        // Trusted nets written in IPv4-mapped form match IPv4 peers too.
        let c = ClientIp::new(&["::ffff:192.0.2.0/120".parse().unwrap()]);
        assert!(c.is_trusted(ip("192.0.2.77")));
        assert!(!c.is_trusted(ip("192.0.3.1")));
    }
}
