//! Redis key names. Every key of a campaign carries the hash tag `{campaign}`, so each
//! script touches one Cluster slot; this is the only place a key name is built.

use std::collections::HashSet;

/// Key names of one campaign. All share the hash tag `{campaign}` (one cluster slot).
#[derive(Debug, Clone)]
pub struct CampaignKeys {
    /// The campaign id.
    pub campaign: String,
    /// `<prefix>:{<campaign>}:`; scripts build the keys of a stored order's item, user and
    /// holders from it (they cannot be known before the call reads the order).
    pub base: String,
    pub deadlines: String,
    pub outbox: String,
    pub dead: String,
    /// Heartbeats of the outbox consumers (name → last stamp, ms).
    pub consumers: String,
    /// Present while an operator has paused the campaign; reserve.lua checks it, so every
    /// instance obeys at once.
    pub paused: String,
    /// Fair admission (raffle, instant draw): `seed`, `drawn` (ms), `next` (entrants
    /// considered so far), `claimed` and `lapsed` counts.
    pub admission: String,
    /// Raffle entrants: user → entered at (ms).
    pub entrants: String,
    /// Raffle entrants in rank order: a zset of score 0 whose members are ticket bytes
    /// followed by the user id, so Redis' byte order is the rank order.
    pub ranking: String,
    /// Selected entrants whose claim is open and who have not reserved: user → claim_by (ms).
    pub claims: String,
    /// Every selected entrant: user → "<s|c|l>:<selected at>:<claim by>" (selected,
    /// claimed, lapsed).
    pub selection: String,
}

impl CampaignKeys {
    pub fn new(prefix: &str, campaign: &str) -> CampaignKeys {
        let base = format!("{prefix}:{{{campaign}}}:");
        CampaignKeys {
            campaign: campaign.to_owned(),
            deadlines: format!("{base}deadlines"),
            outbox: format!("{base}outbox"),
            dead: format!("{base}dead"),
            consumers: format!("{base}consumers"),
            paused: format!("{base}paused"),
            admission: format!("{base}admission"),
            entrants: format!("{base}entrants"),
            ranking: format!("{base}ranking"),
            claims: format!("{base}claims"),
            selection: format!("{base}selection"),
            base,
        }
    }
    pub fn item(&self, sku: &str) -> String {
        format!("{}item:{sku}", self.base)
    }
    pub fn user(&self, user: &str) -> String {
        format!("{}user:{user}", self.base)
    }
    pub fn holders(&self, sku: &str) -> String {
        format!("{}holders:{sku}", self.base)
    }
    pub fn order(&self, id: &str) -> String {
        format!("{}order:{id}", self.base)
    }
}

/// Who held a pending order of an item when it was last seen sold out: they may still
/// retry for their order (200), so a local sold-out flag must not answer them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Holders {
    /// The item's `hv` counter when `users` was read; `None` before the first read.
    pub version: Option<i64>,
    pub users: HashSet<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_a_campaign_shares_its_hash_tag() {
        let k = CampaignKeys::new("fg", "c1");
        assert_eq!(k.base, "fg:{c1}:");
        for key in [
            k.item("a"),
            k.user("u"),
            k.holders("a"),
            k.order("o"),
            k.deadlines.clone(),
            k.outbox.clone(),
            k.paused.clone(),
            k.admission.clone(),
            k.entrants.clone(),
            k.ranking.clone(),
            k.claims.clone(),
            k.selection.clone(),
        ] {
            assert!(key.starts_with("fg:{c1}:"), "{key}");
        }
    }
}
