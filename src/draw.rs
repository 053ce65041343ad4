//! The draws' arithmetic (raffle and instant draw): a campaign's seed, its public commitment, a
//! user's ticket and the instant draw's verdict. Pure functions, no I/O.
//!
//! The seed decides every draw, so it never appears in `Debug` output or in logs: it is
//! shown only through [`Seed::hex`], which the public view calls once the draw can no
//! longer be gamed.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Length of a seed and of a ticket, in bytes.
pub const SEED_LEN: usize = 32;

/// A campaign's random seed.
#[derive(Clone, PartialEq, Eq)]
pub struct Seed([u8; SEED_LEN]);

impl fmt::Debug for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Seed(<hidden>)")
    }
}

impl Seed {
    /// A fresh seed from the operating system's random source.
    pub fn random() -> Result<Seed, getrandom::Error> {
        let mut b = [0u8; SEED_LEN];
        getrandom::getrandom(&mut b)?;
        Ok(Seed(b))
    }

    pub fn from_bytes(b: &[u8]) -> Option<Seed> {
        b.try_into().ok().map(Seed)
    }

    pub fn bytes(&self) -> &[u8; SEED_LEN] {
        &self.0
    }

    /// hex(seed): to be shown only once the draw is decided.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// hex(SHA-256(seed)): public from the start, so the seed revealed later can be checked.
    pub fn commitment(&self) -> String {
        hex::encode(Sha256::digest(self.0))
    }

    /// HMAC-SHA256(key = seed, message = user id).
    pub fn ticket(&self, user: &str) -> Ticket {
        // HMAC takes a key of any length: this cannot fail.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("any key length");
        mac.update(user.as_bytes());
        Ticket(mac.finalize().into_bytes().into())
    }
}

/// A user's ticket in one campaign; entrants are ranked by it, ascending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(pub [u8; SEED_LEN]);

impl Ticket {
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 8 bytes as a big-endian integer (the instant draw's number).
    pub fn draw(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[..8]);
        u64::from_be_bytes(b)
    }

    /// How an entrant is stored in the ranking: the ticket's bytes then the user id, so
    /// Redis' byte order of members is the rank order (ties, which need an HMAC
    /// collision, fall to the user id).
    pub fn ranking_member(&self, user: &str) -> Vec<u8> {
        let mut m = Vec::with_capacity(SEED_LEN + user.len());
        m.extend_from_slice(&self.0);
        m.extend_from_slice(user.as_bytes());
        m
    }
}

/// The user id of a ranking member (see [`Ticket::ranking_member`]).
pub fn member_user(member: &[u8]) -> Option<&str> {
    member
        .get(SEED_LEN..)
        .and_then(|u| std::str::from_utf8(u).ok())
}

/// The instant draw: a ticket wins when `draw() < win_probability × 2^64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WinThreshold(u128);

impl WinThreshold {
    /// For `0 < p <= 1` (the configuration checks it); `p = 1` lets every ticket win.
    pub fn new(p: f64) -> WinThreshold {
        // 2^64 × p is exact in f64 for the p a config can hold; the cast floors it. The
        // clamp keeps it in [0, 2^64]: no sign to lose, nothing above u128 to truncate.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        WinThreshold((p.clamp(0.0, 1.0) * 18_446_744_073_709_551_616.0) as u128)
    }

    pub fn wins(&self, t: &Ticket) -> bool {
        u128::from(t.draw()) < self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_is_hidden_from_debug() {
        let s = Seed::from_bytes(&[7; 32]).unwrap();
        assert!(!format!("{s:?}").contains("0707"));
        assert_eq!(s.hex(), "07".repeat(32));
    }

    #[test]
    fn ticket_is_hmac_sha256_of_the_user_keyed_by_the_seed() {
        // RFC 4231 test case 2 uses a short key; here the key is the 32-byte seed, checked
        // against `openssl dgst -sha256 -mac HMAC -macopt hexkey:00…1f` over "alice".
        let seed = Seed::from_bytes(&(0u8..32).collect::<Vec<_>>()).unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(seed.bytes()).unwrap();
        mac.update(b"alice");
        let want: [u8; 32] = mac.finalize().into_bytes().into();
        assert_eq!(seed.ticket("alice").0, want);
        assert_ne!(seed.ticket("alice"), seed.ticket("bob"));
        assert_eq!(
            seed.commitment(),
            hex::encode(Sha256::digest((0u8..32).collect::<Vec<_>>()))
        );
    }

    #[test]
    fn thresholds() {
        let t = |first: u64| {
            let mut b = [0u8; 32];
            b[..8].copy_from_slice(&first.to_be_bytes());
            Ticket(b)
        };
        assert!(WinThreshold::new(1.0).wins(&t(u64::MAX)));
        let half = WinThreshold::new(0.5);
        assert!(half.wins(&t((1 << 63) - 1)));
        assert!(!half.wins(&t(1 << 63)));
        let member = t(5).ranking_member("u1");
        assert_eq!(member_user(&member), Some("u1"));
        assert!(t(5).ranking_member("zz") < t(6).ranking_member("aa"));
    }
}
