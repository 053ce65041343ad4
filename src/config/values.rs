//! The kinds of value a key can hold beyond TOML's own: durations, rates, CIDR lists.

use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

/// A humantime duration ("250ms", "30m").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Formats that are not text (and the stand-in `config` reads in place of a wrong
        // value) give a plain `Duration`.
        if !d.is_human_readable() {
            return Duration::deserialize(d).map(HumanDuration);
        }
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(HumanDuration)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}")))
    }
}

/// `{ rate = 20, per = "1s", burst = 40 }`: `rate` requests per `per`, bursts up to `burst`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RateSpec {
    pub rate: u32,
    pub per: HumanDuration,
    pub burst: u32,
}

impl RateSpec {
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.rate == 0 || self.burst == 0 || self.per.0.is_zero() {
            return Err("rate, burst and per must all be greater than zero".into());
        }
        Ok(())
    }
}

/// `["127.0.0.1/32", "10.0.0.1"]`: networks, a bare address being its own /32 or /128.
/// Each element is read on its own, so a bad one is reported where it is written.
pub(crate) fn de_cidrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    let cidrs = Vec::<Cidr>::deserialize(d)?;
    Ok(cidrs.into_iter().map(|c| c.0).collect())
}

struct Cidr(IpNet);

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse::<IpNet>()
            .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
            .map(Cidr)
            .map_err(|_| serde::de::Error::custom(format!("invalid CIDR {s:?}")))
    }
}
