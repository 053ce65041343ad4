//! The `Flashgate-Signature` scheme: `t=<unix>,v1=<hex>` over `"<t>.<raw body>"`
//! with HMAC-SHA256. Verified on payment callbacks (constant-time, within ±tolerance) and
//! made for the http sink's requests — one module, so both sides agree byte for byte.
//!
//! Verifies the raw bytes as received, never re-serialised JSON. Several `v1=` values are
//! accepted so the provider can rotate secrets.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("missing Flashgate-Signature header")]
    Missing,
    #[error("malformed Flashgate-Signature header")]
    Malformed,
    #[error("timestamp outside the tolerance window")]
    Stale,
    #[error("signature does not match")]
    Mismatch,
    #[error("no payment secret is configured")]
    NoSecret,
}

#[derive(Clone)]
pub struct SignatureVerifier {
    secret: Option<Vec<u8>>,
    tolerance: Duration,
}

impl SignatureVerifier {
    pub fn new(secret: Option<&str>, tolerance: Duration) -> SignatureVerifier {
        SignatureVerifier {
            secret: secret.map(|s| s.as_bytes().to_vec()),
            tolerance,
        }
    }

    /// Checks `header` against `body` at unix time `now`.
    pub fn verify(
        &self,
        header: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<(), SignatureError> {
        let secret = self.secret.as_deref().ok_or(SignatureError::NoSecret)?;
        let header = header.ok_or(SignatureError::Missing)?;
        let mut t: Option<&str> = None;
        let mut sigs = Vec::with_capacity(2);
        for part in header.split(',') {
            match part.trim().split_once('=') {
                Some(("t", v)) => t = Some(v),
                Some(("v1", v)) => {
                    sigs.push(hex::decode(v).map_err(|_| SignatureError::Malformed)?)
                }
                Some(_) => {}
                None => return Err(SignatureError::Malformed),
            }
        }
        let t_str = t.ok_or(SignatureError::Malformed)?;
        let ts: i64 = t_str.parse().map_err(|_| SignatureError::Malformed)?;
        if sigs.is_empty() {
            return Err(SignatureError::Malformed);
        }
        if now.abs_diff(ts) > self.tolerance.as_secs() {
            return Err(SignatureError::Stale);
        }
        let mut mac = HmacSha256::new_from_slice(secret).map_err(|_| SignatureError::NoSecret)?;
        mac.update(t_str.as_bytes());
        mac.update(b".");
        mac.update(body);
        if sigs.iter().any(|s| mac.clone().verify_slice(s).is_ok()) {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

/// `t=<t>,v1=<hex>` for `body`: what a provider sends, and what our sink requests carry.
pub fn sign(secret: &[u8], body: &[u8], t: i64) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn v() -> SignatureVerifier {
        SignatureVerifier::new(Some("s3cret"), Duration::from_secs(300))
    }

    #[test]
    fn accepts_a_good_signature_and_rotated_secrets() {
        let body = br#"{"order_id":"x"}"#;
        assert_eq!(
            v().verify(Some(&sign(b"s3cret", body, NOW)), body, NOW + 10),
            Ok(())
        );
        let old = sign(b"old", body, NOW);
        let new = sign(b"s3cret", body, NOW);
        let both = format!("{old},v1={}", new.split("v1=").nth(1).unwrap());
        assert_eq!(v().verify(Some(&both), body, NOW), Ok(()));
    }

    #[test]
    fn refuses_forged_stale_and_malformed() {
        let body = br#"{"order_id":"x"}"#;
        assert_eq!(
            v().verify(Some(&sign(b"wrong", body, NOW)), body, NOW),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            v().verify(Some(&sign(b"s3cret", b"other", NOW)), body, NOW),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            v().verify(Some(&sign(b"s3cret", body, NOW - 301)), body, NOW),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            v().verify(Some(&sign(b"s3cret", body, NOW + 301)), body, NOW),
            Err(SignatureError::Stale)
        );
        assert_eq!(v().verify(None, body, NOW), Err(SignatureError::Missing));
        for bad in ["", "t=1", "v1=00", "t=x,v1=00", "t=1,v1=zz", "garbage"] {
            assert!(v().verify(Some(bad), body, NOW).is_err(), "{bad}");
        }
        let none = SignatureVerifier::new(None, Duration::from_secs(300));
        assert_eq!(
            none.verify(Some(&sign(b"s3cret", body, NOW)), body, NOW),
            Err(SignatureError::NoSecret)
        );
    }
}
