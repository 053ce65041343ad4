//! RS256 / ES256 identity through the real gateway: keys from a JWKS (the token's `kid`
//! picks one) or a PEM file, `iss` / `aud`, algorithm confusion refused, and keys
//! re-read by `POST /admin/reload`. Keys are made at test time.

use crate::common::*;
use jsonwebtoken::Algorithm;

const ISSUER: &str = "https://shop.example";
const AUDIENCE: &str = "flashgate";

struct Env {
    gw: Gateway,
    cfg: TestConfig,
    _store: TestStore,
    _redis: RedisServer,
}

/// A gateway verifying `alg` with the key file `keys` (written as `keys.pem`/`keys.json`).
async fn env(alg: &str, keys: &str, tweak: impl FnOnce(&mut TestConfig)) -> Env {
    let redis = RedisServer::start();
    let store = TestStore::start().await;
    let mut cfg = TestConfig::new(&redis.url(), &store.url());
    cfg.campaign(
        CampaignSpec::new("sale")
            .item("a", 100, 100)
            .per_user_limit(100),
    );
    let file = if keys.starts_with('{') {
        "keys.json"
    } else {
        "keys.pem"
    };
    std::fs::write(cfg.dir().join(file), keys).unwrap();
    cfg.set_str("identity", "jwt_algorithm", alg)
        .set_str("identity", "jwt_public_keys", file)
        // No shared secret is needed for public-key algorithms.
        .remove_env("FLASHGATE_JWT_SECRET");
    tweak(&mut cfg);
    let gw = Gateway::start(cfg.load()).await;
    gw.wait_ready().await;
    Env {
        gw,
        cfg,
        _store: store,
        _redis: redis,
    }
}

fn claims(user: &str) -> serde_json::Value {
    serde_json::json!({"sub": user, "exp": unix_now() + 600, "iss": ISSUER, "aud": AUDIENCE})
}

/// The status of a buy with `Authorization: Bearer <token>`.
async fn buy(e: &Env, token: &str) -> u16 {
    let auth = format!("Bearer {token}");
    let res = send(
        "POST",
        &e.gw.buy_url("sale", "a"),
        &[("authorization", &auth)],
        None,
    )
    .await;
    if res.status != 201 {
        assert_eq!(
            res.json()["type"],
            "urn:flashgate:problem:unauthenticated",
            "{}",
            res.text()
        );
    }
    res.status
}

#[tokio::test]
async fn rs256_from_a_jwks_picks_the_key_by_kid_and_refuses_confusion() {
    let (k1, k2, stranger) = (SigningKey::rsa(), SigningKey::rsa(), SigningKey::rsa());
    let e = env("RS256", &jwks(&[("k1", &k1), ("k2", &k2)]), |cfg| {
        cfg.set_str("identity", "issuer", ISSUER)
            .set_str("identity", "audience", AUDIENCE);
    })
    .await;
    assert_eq!(buy(&e, &k1.sign(&claims("u1"), Some("k1"))).await, 201);
    assert_eq!(buy(&e, &k2.sign(&claims("u2"), Some("k2"))).await, 201);

    // A key named but another one signing, an unknown kid, no kid among two keys.
    assert_eq!(buy(&e, &k2.sign(&claims("u3"), Some("k1"))).await, 401);
    assert_eq!(
        buy(&e, &stranger.sign(&claims("u3"), Some("k3"))).await,
        401
    );
    assert_eq!(buy(&e, &k1.sign(&claims("u3"), None)).await, 401);
    // Another algorithm of the same family.
    assert_eq!(
        buy(&e, &k1.sign_as(Algorithm::RS384, &claims("u3"), Some("k1"))).await,
        401
    );
    // HS256 with the public key (as a PEM, and as the JWKS text) for the secret.
    for secret in [k1.public_pem.clone(), jwks(&[("k1", &k1)])] {
        let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let forged = jsonwebtoken::encode(
            &header,
            &claims("u3"),
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap();
        assert_eq!(buy(&e, &forged).await, 401);
    }
    // alg none, unsigned.
    let b64 = |v: serde_json::Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let none = format!(
        "{}.{}.",
        b64(serde_json::json!({"alg": "none", "typ": "JWT", "kid": "k1"})),
        b64(claims("u3"))
    );
    assert_eq!(buy(&e, &none).await, 401);
    // Issuer and audience.
    let mut wrong_iss = claims("u3");
    wrong_iss["iss"] = "https://evil.example".into();
    assert_eq!(buy(&e, &k1.sign(&wrong_iss, Some("k1"))).await, 401);
    let mut no_aud = claims("u3");
    no_aud.as_object_mut().unwrap().remove("aud");
    assert_eq!(buy(&e, &k1.sign(&no_aud, Some("k1"))).await, 401);
    let mut other_aud = claims("u3");
    other_aud["aud"] = "someone-else".into();
    assert_eq!(buy(&e, &k1.sign(&other_aud, Some("k1"))).await, 401);
    // An HS256 token made with the gateway's old shared secret means nothing here.
    assert_eq!(buy(&e, &jwt("u3")).await, 401);
    assert_eq!(e.gw.item_stats("sale", "a").await["pending"], 2);
}

#[tokio::test]
async fn es256_from_a_pem_public_key() {
    let (key, other) = (SigningKey::ec(), SigningKey::ec());
    let e = env("ES256", &key.public_pem, |_| {}).await;
    // A PEM file holds one key: a token's kid does not matter.
    assert_eq!(buy(&e, &key.sign(&claims("e1"), None)).await, 201);
    assert_eq!(buy(&e, &key.sign(&claims("e2"), Some("any"))).await, 201);
    assert_eq!(buy(&e, &other.sign(&claims("e3"), None)).await, 401);
    // An RSA-signed token cannot use the EC key.
    let rsa = SigningKey::rsa();
    assert_eq!(buy(&e, &rsa.sign(&claims("e3"), None)).await, 401);
}

async fn reload(e: &Env) -> TestResponse {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let url = e.gw.admin_url("/admin/reload");
    send("POST", &url, &[("authorization", &auth)], None).await
}

#[tokio::test]
async fn public_keys_are_reread_on_reload_and_a_bad_file_changes_nothing() {
    let (old, new) = (SigningKey::rsa(), SigningKey::rsa());
    let e = env("RS256", &jwks(&[("old", &old)]), |_| {}).await;
    assert_eq!(buy(&e, &old.sign(&claims("r1"), Some("old"))).await, 201);

    // A broken file: refused, the running keys stay.
    std::fs::write(e.cfg.dir().join("keys.json"), "{\"keys\": [").unwrap();
    let res = reload(&e).await;
    assert_eq!(res.status, 400, "{}", res.text());
    assert!(res.text().contains("jwt_public_keys"), "{}", res.text());
    assert_eq!(buy(&e, &old.sign(&claims("r2"), Some("old"))).await, 201);

    // Rotation: the new key in, the old one out.
    std::fs::write(e.cfg.dir().join("keys.json"), jwks(&[("new", &new)])).unwrap();
    assert_eq!(reload(&e).await.status, 200);
    assert_eq!(buy(&e, &new.sign(&claims("r3"), Some("new"))).await, 201);
    assert_eq!(buy(&e, &old.sign(&claims("r4"), Some("old"))).await, 401);
}

#[test]
fn the_config_refuses_missing_or_unusable_public_keys() {
    let redis_url = "redis://127.0.0.1:1/0";
    let mut cfg = TestConfig::new(redis_url, "http://127.0.0.1:1");
    cfg.set_str("identity", "jwt_algorithm", "RS256");
    let err = cfg.try_load().unwrap_err().to_string();
    assert!(err.contains("identity.jwt_public_keys"), "{err}");

    std::fs::write(cfg.dir().join("ec.pem"), SigningKey::ec().public_pem).unwrap();
    cfg.set_str("identity", "jwt_public_keys", "ec.pem");
    let err = cfg.try_load().unwrap_err().to_string();
    assert!(
        err.contains("identity.jwt_public_keys"),
        "an EC key for RS256: {err}"
    );

    cfg.set_str("identity", "jwt_algorithm", "HS512");
    let err = cfg.try_load().unwrap_err().to_string();
    assert!(err.contains("jwt_algorithm"), "{err}");
}
