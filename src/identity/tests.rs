//! Identity and client-IP rules, without a network.

use super::*;
use http::HeaderValue;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use crate::identity::X_FORWARDED_FOR;

const SECRET: &str = "test-secret-0123456789";

fn jwt_identity() -> Identity {
    jwt_identity_on(&Clock::system())
}

fn jwt_identity_on(clock: &Clock) -> Identity {
    let cfg = IdentityConfig::new(IdentityMode::Jwt);
    let secrets = Secrets {
        jwt_secret: Some(SECRET.into()),
        ..Secrets::default()
    };
    Identity::from_config(&cfg, &secrets, clock).unwrap()
}

fn header_identity() -> Identity {
    let cfg = IdentityConfig::new(IdentityMode::Header);
    Identity::from_config(&cfg, &Secrets::default(), &Clock::system()).unwrap()
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
    let cfg = IdentityConfig::new(IdentityMode::Jwt);
    let err = Identity::from_config(&cfg, &Secrets::default(), &Clock::system()).unwrap_err();
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
    assert_eq!(id.user_id(&bearer(&t), true).unwrap(), "u123");
    // Scheme is case-insensitive.
    let mut h = HeaderMap::new();
    h.insert(AUTHORIZATION, format!("bearer {t}").parse().unwrap());
    assert_eq!(id.user_id(&h, true).unwrap(), "u123");
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
            matches!(id.user_id(&bearer(t), true), Err(IdentityError::Invalid(_))),
            "accepted {t}"
        );
    }
    // alg=none with an empty signature.
    let none = format!(
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
        "eyJzdWIiOiJ1IiwiZXhwIjo0MTAyNDQ0ODAwfQ"
    );
    assert!(id.user_id(&bearer(&none), true).is_err());
}

/// A refusal's `detail` names what is wrong with the token, not another claim.
#[test]
fn a_refused_token_is_refused_for_its_own_reason() {
    let id = jwt_identity();
    let why = |t: &str| match id.user_id(&bearer(t), true) {
        Err(IdentityError::Invalid(why)) => why,
        other => panic!("{t}: {other:?}"),
    };
    let exp = now() + 60;
    let hs = |claims| token(Algorithm::HS256, SECRET, claims);
    assert_eq!(
        why(&hs(serde_json::json!({"sub": "u"}))),
        "token lacks the `exp` claim (expiry)"
    );
    assert_eq!(
        why(&hs(serde_json::json!({"sub": "u", "exp": "tomorrow"}))),
        "token claim `exp` (expiry) must be a whole number of seconds"
    );
    assert_eq!(
        why(&hs(serde_json::json!({"exp": exp}))),
        "token lacks the `sub` claim (the user id)"
    );
    assert_eq!(
        why(&hs(serde_json::json!({"sub": 7, "exp": exp}))),
        "token claim `sub` (the user id) must be a string"
    );
    let none = format!(
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
        "eyJzdWIiOiJ1IiwiZXhwIjo0MTAyNDQ0ODAwfQ"
    );
    assert_eq!(why(&none), "token algorithm not accepted");
    assert_eq!(why("not.a.jwt"), "malformed token");
}

#[test]
fn exp_and_nbf_follow_the_injected_clock() {
    let clock = Clock::fake(time::macros::datetime!(2026-11-11 00:00 UTC));
    let id = jwt_identity_on(&clock);
    let now = clock.now_secs();
    let live = token(
        Algorithm::HS256,
        SECRET,
        serde_json::json!({"sub": "u", "exp": now + 60}),
    );
    let early = token(
        Algorithm::HS256,
        SECRET,
        serde_json::json!({"sub": "e", "exp": now + 600, "nbf": now + 30}),
    );
    let detail = |t: &str| match id.user_id(&bearer(t), true) {
        Err(IdentityError::Invalid(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(id.user_id(&bearer(&live), true).unwrap(), "u"); // verified, then remembered
    assert_eq!(detail(&early), "token not yet valid");
    // Within the 5 s leeway either way, then beyond it: the remembered token expires too.
    clock.advance(std::time::Duration::from_secs(65));
    assert_eq!(id.user_id(&bearer(&live), true).unwrap(), "u");
    assert_eq!(id.user_id(&bearer(&early), true).unwrap(), "e");
    clock.advance(std::time::Duration::from_secs(1));
    assert_eq!(detail(&live), "token expired");
    // A token the system clock calls expired is in force on a clock set back.
    let old = token(
        Algorithm::HS256,
        SECRET,
        serde_json::json!({"sub": "o", "exp": now + 30}),
    );
    assert_eq!(detail(&old), "token expired");
    clock.set(time::macros::datetime!(2026-11-11 00:00 UTC));
    assert_eq!(id.user_id(&bearer(&old), true).unwrap(), "o");
    // A non-numeric `nbf` is no time, as jsonwebtoken reads it.
    let odd = token(
        Algorithm::HS256,
        SECRET,
        serde_json::json!({"sub": "n", "exp": now + 60, "nbf": "soon"}),
    );
    assert_eq!(id.user_id(&bearer(&odd), true).unwrap(), "n");
}

#[test]
fn jwt_missing_or_wrong_scheme() {
    let id = jwt_identity();
    assert_eq!(
        id.user_id(&HeaderMap::new(), true),
        Err(IdentityError::Missing)
    );
    let mut h = HeaderMap::new();
    h.insert(AUTHORIZATION, "Basic dTpw".parse().unwrap());
    assert!(matches!(
        id.user_id(&h, true),
        Err(IdentityError::Invalid(_))
    ));
    h.insert(AUTHORIZATION, "Bearer ".parse().unwrap());
    assert!(matches!(
        id.user_id(&h, true),
        Err(IdentityError::Invalid(_))
    ));
}

#[test]
fn header_mode() {
    let id = header_identity();
    let mut h = HeaderMap::new();
    assert_eq!(id.user_id(&h, true), Err(IdentityError::Missing));
    h.insert("x-user-id", "u-42".parse().unwrap());
    assert_eq!(id.user_id(&h, true).unwrap(), "u-42");
    for bad in ["", "a b", "tab\there"] {
        h.insert("x-user-id", HeaderValue::from_str(bad).unwrap());
        assert!(id.user_id(&h, true).is_err(), "accepted {bad:?}");
    }
    h.insert(
        "x-user-id",
        HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
    );
    assert!(id.user_id(&h, true).is_err());
    h.insert("x-user-id", "x".repeat(128).parse().unwrap());
    assert!(id.user_id(&h, true).is_ok());
    h.insert("x-user-id", "x".repeat(129).parse().unwrap());
    assert!(id.user_id(&h, true).is_err());
    // A second value is ambiguous: refused.
    h.insert("x-user-id", "u1".parse().unwrap());
    h.append("x-user-id", "u2".parse().unwrap());
    assert!(matches!(
        id.user_id(&h, true),
        Err(IdentityError::Invalid(_))
    ));
}

#[test]
fn header_mode_believes_only_trusted_peers() {
    let id = header_identity();
    assert_eq!(id.header_name().map(HeaderName::as_str), Some("x-user-id"));
    let mut h = HeaderMap::new();
    assert_eq!(id.user_id(&h, false), Err(IdentityError::Missing));
    h.insert("x-user-id", "victim".parse().unwrap());
    assert!(matches!(
        id.user_id(&h, false),
        Err(IdentityError::Invalid(_))
    ));
    assert_eq!(id.user_id(&h, true).unwrap(), "victim");
    // A JWT proves itself: the peer does not matter, and there is no header to strip.
    let jwt = jwt_identity();
    assert!(jwt.header_name().is_none());
    let t = token(
        Algorithm::HS256,
        SECRET,
        serde_json::json!({"sub": "u1", "exp": now() + 60}),
    );
    assert_eq!(jwt.user_id(&bearer(&t), false).unwrap(), "u1");
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
