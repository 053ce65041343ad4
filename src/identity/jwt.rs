//! JWT verification: HS256 with a shared secret, or RS256 / ES256 with public keys
//! (`identity.jwt_public_keys`, reloadable).
//!
//! One algorithm is configured and only that one is accepted: `alg` in the token must
//! name it, so `none`, an HS256 token signed with a public key as its secret, or any
//! other switch is refused before a key is chosen. `exp` and `sub` are required; `nbf`,
//! and `iss` / `aud` when `identity.issuer` / `identity.audience` are set, are checked.
//! `exp` and `nbf` are judged here on the sale's clock (jsonwebtoken would read the
//! system's), so a verified token and a remembered one expire at the same instant.

use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::token_cache::{self, TokenCache};
use super::IdentityError;
use crate::clock::Clock;
use crate::config::{ConfigError, IdentityConfig, JwtAlgorithm, Secrets};
use crate::identity::jwks::KeySet;

/// Clock skew tolerated on `exp` / `nbf`, in seconds.
const JWT_LEEWAY_SECS: u64 = 5;

/// The claims we read; their presence, `iss` and `aud` are checked by `jsonwebtoken`
/// itself. `exp` also bounds how long a verified token is remembered.
#[derive(serde::Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    /// Any JSON: like jsonwebtoken, only a number is checked; anything else is ignored.
    #[serde(default)]
    nbf: Option<serde_json::Value>,
}

pub(super) struct Jwt {
    alg: Algorithm,
    keys: Keys,
    /// Built once: the hot path only decodes and verifies.
    validation: Validation,
    /// Tokens that verified, until their `exp`.
    verified: TokenCache,
    /// The sale's clock: `exp` and `nbf` are judged on it.
    clock: Clock,
}

enum Keys {
    Secret(DecodingKey),
    /// Swapped whole on reload; a read lock held only to clone the `Arc`.
    Public {
        path: PathBuf,
        set: RwLock<Arc<KeySet>>,
    },
}

pub(super) fn algorithm(a: JwtAlgorithm) -> Algorithm {
    match a {
        JwtAlgorithm::HS256 => Algorithm::HS256,
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::ES256 => Algorithm::ES256,
    }
}

impl Jwt {
    pub(super) fn new(
        cfg: &IdentityConfig,
        secrets: &Secrets,
        clock: &Clock,
    ) -> Result<Jwt, IdentityError> {
        let alg = algorithm(cfg.jwt_algorithm);
        let keys = match cfg.jwt_algorithm {
            JwtAlgorithm::HS256 => {
                let secret = secrets
                    .jwt_secret
                    .as_deref()
                    .filter(|s| !s.is_empty())
                    .ok_or(IdentityError::MissingSecret)?;
                Keys::Secret(DecodingKey::from_secret(secret.as_bytes()))
            }
            JwtAlgorithm::RS256 | JwtAlgorithm::ES256 => {
                let path = cfg
                    .jwt_public_keys
                    .clone()
                    .ok_or(IdentityError::MissingPublicKeys)?;
                let set = KeySet::load(&path, alg)
                    .map_err(|e| IdentityError::PublicKeys(format!("{}: {e}", path.display())))?;
                Keys::Public {
                    path,
                    set: RwLock::new(Arc::new(set)),
                }
            }
        };
        Ok(Jwt {
            alg,
            keys,
            validation: validation(alg, cfg),
            verified: TokenCache::new(JWT_LEEWAY_SECS, clock.clone()),
            clock: clock.clone(),
        })
    }

    pub(super) fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The `sub` of a valid token.
    pub(super) fn subject(&self, token: &str) -> Result<String, IdentityError> {
        let cache_key = token_cache::key(token);
        if let Some(sub) = self.verified.get(&cache_key) {
            return Ok(sub);
        }
        let set;
        let key = match &self.keys {
            Keys::Secret(key) => key,
            Keys::Public { set: keys, .. } => {
                let header = jsonwebtoken::decode_header(token)
                    .map_err(|_| IdentityError::Invalid("malformed token"))?;
                if header.alg != self.alg {
                    return Err(IdentityError::Invalid("token algorithm not accepted"));
                }
                set = keys.read().unwrap_or_else(PoisonError::into_inner).clone();
                set.pick(header.kid.as_deref())
                    .ok_or(IdentityError::Invalid("token key id unknown"))?
            }
        };
        let claims = jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map_err(|e| IdentityError::Invalid(reason(token, e.kind())))?
            .claims;
        in_force(&claims, self.clock.now_secs())?;
        self.verified.insert(cache_key, &claims.sub, claims.exp);
        Ok(claims.sub)
    }

    /// Re-reads the public key file; `None` for HS256. Nothing changes until
    /// [`use_keys`](Self::use_keys), so a reload can check everything first.
    pub(super) fn read_keys(&self) -> Result<Option<Arc<KeySet>>, ConfigError> {
        let Keys::Public { path, .. } = &self.keys else {
            return Ok(None);
        };
        KeySet::load(path, self.alg)
            .map(|set| Some(Arc::new(set)))
            .map_err(|e| ConfigError {
                file: path.clone(),
                position: None,
                message: format!("field `identity.jwt_public_keys`: {e}"),
            })
    }

    pub(super) fn use_keys(&self, new: Arc<KeySet>) {
        if let Keys::Public { set, .. } = &self.keys {
            *set.write().unwrap_or_else(PoisonError::into_inner) = new;
            // A token signed by a key that is gone must stop working now.
            self.verified.clear();
        }
    }
}

/// Whether a verified token is in force at `now` (unix seconds): not past `exp`, not
/// before a numeric `nbf`, each give or take the leeway — jsonwebtoken's own rule, on
/// the sale's clock.
fn in_force(claims: &Claims, now: u64) -> Result<(), IdentityError> {
    if now > claims.exp.saturating_add(JWT_LEEWAY_SECS) {
        return Err(IdentityError::Invalid("token expired"));
    }
    let nbf = claims.nbf.as_ref().and_then(numeric_secs);
    if nbf.is_some_and(|nbf| nbf > now.saturating_add(JWT_LEEWAY_SECS)) {
        return Err(IdentityError::Invalid("token not yet valid"));
    }
    Ok(())
}

/// A claim's seconds as jsonwebtoken reads them: a non-negative integer, or a finite
/// non-negative number rounded; anything else is no time at all.
fn numeric_secs(v: &serde_json::Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        let f = v.as_f64().filter(|f| f.is_finite() && *f >= 0.0)?;
        // In range (checked) and rounded: the cast neither wraps nor drops a sign.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let secs = (f < u64::MAX as f64).then(|| f.round() as u64);
        secs
    })
}

/// Exactly `alg`, `exp` and `sub` required, `iss` / `aud` when configured (`exp` and
/// `nbf` are judged by [`in_force`]). Without `identity.audience`, `aud` is not
/// checked: the store's tokens are accepted as issued.
fn validation(alg: Algorithm, cfg: &IdentityConfig) -> Validation {
    let mut v = Validation::new(alg);
    let mut required = vec!["exp", "sub"];
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    if let Some(iss) = &cfg.issuer {
        v.set_issuer(&[iss]);
        required.push("iss");
    }
    if let Some(aud) = &cfg.audience {
        v.set_audience(&[aud]);
        v.validate_aud = true;
        required.push("aud");
    }
    v.set_required_spec_claims(&required);
    v
}

fn reason(token: &str, kind: &jsonwebtoken::errors::ErrorKind) -> &'static str {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::InvalidSignature => "bad token signature",
        K::InvalidAlgorithm | K::InvalidAlgorithmName => "token algorithm not accepted",
        K::InvalidIssuer => "token issuer not accepted",
        K::InvalidAudience => "token audience not accepted",
        K::MissingRequiredClaim(c) if c == "exp" => "token lacks the `exp` claim (expiry)",
        K::MissingRequiredClaim(c) if c == "iss" => "token lacks the `iss` claim (issuer)",
        K::MissingRequiredClaim(c) if c == "aud" => "token lacks the `aud` claim (audience)",
        K::MissingRequiredClaim(_) => "token lacks the `sub` claim (the user id)",
        // serde's message names neither the header nor, for a wrong type, the claim:
        // look at the token again to say which part is wrong (a refusal only).
        K::Json(_) => json_reason(token),
        _ => "malformed token",
    }
}

/// Why a token whose header or claims did not deserialize was refused.
fn json_reason(token: &str) -> &'static str {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use serde_json::Value;
    let part = |i: usize| -> Option<Value> {
        let b64 = token.split('.').nth(i)?;
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(b64.trim_end_matches('=')).ok()?).ok()
    };
    let Some(header) = part(0) else {
        return "malformed token";
    };
    // `alg: none` (or any name jsonwebtoken does not know) fails the header's parse.
    let known_alg = header
        .get("alg")
        .and_then(Value::as_str)
        .is_some_and(|a| a.parse::<jsonwebtoken::Algorithm>().is_ok());
    if !known_alg {
        return "token algorithm not accepted";
    }
    let Some(claims) = part(1) else {
        return "malformed token";
    };
    match (claims.get("sub"), claims.get("exp")) {
        (None, _) => "token lacks the `sub` claim (the user id)",
        (Some(sub), _) if !sub.is_string() => "token claim `sub` (the user id) must be a string",
        (_, None) => "token lacks the `exp` claim (expiry)",
        (_, Some(exp)) if !exp.is_u64() => {
            "token claim `exp` (expiry) must be a whole number of seconds"
        }
        _ => "malformed token",
    }
}
