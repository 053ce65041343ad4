//! Public keys for RS256 / ES256 JWTs (`identity.jwt_public_keys`): one PEM public key,
//! or a JWKS file whose keys a token's `kid` picks from.
//!
//! Owns reading and checking the key file, nothing else: verification is `identity`'s.
//! A key is kept only when it fits the configured algorithm (RSA for RS256, P-256 for
//! ES256; a JWK's own `alg`, when given, must name it; encryption keys are skipped), so
//! a token can never pick a key of another family.

use std::path::Path;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read: {0}")]
    Read(std::io::Error),
    #[error("not a JWKS file: {0}")]
    Jwks(serde_json::Error),
    #[error("not a {0:?} PEM public key: {1}")]
    Pem(Algorithm, jsonwebtoken::errors::Error),
    #[error("no key in the JWKS fits {0:?}")]
    NoUsableKey(Algorithm),
    #[error("key id {0:?} appears twice")]
    DuplicateKid(String),
    #[error("{0:?} does not use public keys")]
    NotPublicKeyAlgorithm(Algorithm),
}

/// The verification keys of one algorithm.
pub struct KeySet {
    /// `(kid, key)`; a PEM file gives one key without a kid.
    keys: Vec<(Option<String>, DecodingKey)>,
    /// From a PEM file: the one key, whatever `kid` a token names.
    single_pem: bool,
}

impl std::fmt::Debug for KeySet {
    // Key material is public, but a list of ids says all that is useful.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<_> = self.keys.iter().map(|(k, _)| k.as_deref()).collect();
        f.debug_struct("KeySet").field("kids", &kids).finish()
    }
}

impl KeySet {
    /// Reads `path`: a JWKS when it is a JSON object, else a PEM public key.
    pub fn load(path: &Path, alg: Algorithm) -> Result<KeySet, KeyError> {
        let bytes = std::fs::read(path).map_err(KeyError::Read)?;
        Self::parse(&bytes, alg)
    }

    pub fn parse(bytes: &[u8], alg: Algorithm) -> Result<KeySet, KeyError> {
        if !matches!(alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(KeyError::NotPublicKeyAlgorithm(alg));
        }
        if bytes.trim_ascii_start().starts_with(b"{") {
            let set: JwkSet = serde_json::from_slice(bytes).map_err(KeyError::Jwks)?;
            return Self::from_jwks(&set, alg);
        }
        let key = match alg {
            Algorithm::RS256 => DecodingKey::from_rsa_pem(bytes),
            _ => DecodingKey::from_ec_pem(bytes),
        }
        .map_err(|e| KeyError::Pem(alg, e))?;
        Ok(KeySet {
            keys: vec![(None, key)],
            single_pem: true,
        })
    }

    fn from_jwks(set: &JwkSet, alg: Algorithm) -> Result<KeySet, KeyError> {
        let mut keys: Vec<(Option<String>, DecodingKey)> = Vec::new();
        for jwk in set.keys.iter().filter(|k| fits(k, alg)) {
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            let kid = jwk.common.key_id.clone();
            if let Some(k) = &kid {
                if keys.iter().any(|(other, _)| other.as_ref() == Some(k)) {
                    return Err(KeyError::DuplicateKid(k.clone()));
                }
            }
            keys.push((kid, key));
        }
        if keys.is_empty() {
            return Err(KeyError::NoUsableKey(alg));
        }
        Ok(KeySet {
            keys,
            single_pem: false,
        })
    }

    /// The key for a token naming `kid`. Without a kid, only a set of one key answers:
    /// trying each key in turn would let a token choose among them.
    pub fn pick(&self, kid: Option<&str>) -> Option<&DecodingKey> {
        if self.single_pem || (kid.is_none() && self.keys.len() == 1) {
            return self.keys.first().map(|(_, k)| k);
        }
        let kid = kid?;
        self.keys
            .iter()
            .find(|(k, _)| k.as_deref() == Some(kid))
            .map(|(_, key)| key)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Whether a JWK can verify `alg` signatures.
fn fits(jwk: &Jwk, alg: Algorithm) -> bool {
    if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
        return false;
    }
    if let Some(a) = jwk.common.key_algorithm {
        if format!("{a:?}") != format!("{alg:?}") {
            return false;
        }
    }
    match (&jwk.algorithm, alg) {
        (AlgorithmParameters::RSA(_), Algorithm::RS256) => true,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256) => p.curve == EllipticCurve::P256,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;

    use super::*;

    /// A fresh P-256 key as a JWK with `extra` members, and its SPKI PEM.
    fn ec_jwk(extra: serde_json::Value) -> (serde_json::Value, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let p = key.public_key_raw();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let mut jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "x": b64(&p[1..33]), "y": b64(&p[33..65])});
        for (k, v) in extra.as_object().unwrap() {
            jwk[k] = v.clone();
        }
        (jwk, key.public_key_pem())
    }

    fn set(keys: &[serde_json::Value]) -> Vec<u8> {
        serde_json::json!({ "keys": keys }).to_string().into_bytes()
    }

    #[test]
    fn jwks_keeps_only_keys_that_fit() {
        let (a, _) = ec_jwk(serde_json::json!({"kid": "a", "alg": "ES256"}));
        let (b, _) = ec_jwk(serde_json::json!({"kid": "b"}));
        let (enc, _) = ec_jwk(serde_json::json!({"kid": "enc", "use": "enc"}));
        let (other_alg, _) = ec_jwk(serde_json::json!({"kid": "x", "alg": "ES384"}));
        let keys = KeySet::parse(&set(&[a, b, enc, other_alg]), Algorithm::ES256).unwrap();
        assert_eq!(keys.len(), 2);
        assert!(keys.pick(Some("a")).is_some());
        assert!(keys.pick(Some("b")).is_some());
        assert!(keys.pick(Some("enc")).is_none());
        assert!(keys.pick(Some("x")).is_none());
        assert!(keys.pick(None).is_none(), "two keys: a token must name one");
        // EC keys are no RS256 keys.
        let (c, _) = ec_jwk(serde_json::json!({"kid": "c"}));
        assert!(matches!(
            KeySet::parse(&set(&[c]), Algorithm::RS256),
            Err(KeyError::NoUsableKey(_))
        ));
    }

    #[test]
    fn one_key_needs_no_kid_and_kids_are_unique() {
        let (a, pem) = ec_jwk(serde_json::json!({"kid": "a"}));
        let keys = KeySet::parse(&set(std::slice::from_ref(&a)), Algorithm::ES256).unwrap();
        assert!(keys.pick(None).is_some());
        assert!(keys.pick(Some("zz")).is_none());
        assert!(matches!(
            KeySet::parse(&set(&[a.clone(), a]), Algorithm::ES256),
            Err(KeyError::DuplicateKid(_))
        ));
        let pem = KeySet::parse(pem.as_bytes(), Algorithm::ES256).unwrap();
        assert!(pem.pick(Some("anything")).is_some());
        assert!(KeySet::parse(b"{\"keys\": 1}", Algorithm::ES256).is_err());
        assert!(KeySet::parse(b"not a key", Algorithm::RS256).is_err());
        assert!(matches!(
            KeySet::parse(b"", Algorithm::HS256),
            Err(KeyError::NotPublicKeyAlgorithm(_))
        ));
    }
}
