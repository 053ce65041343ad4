//! The raffle in Redis: the campaign seed, raffle entries, the draw and
//! selection (`lua/draw.lua`), an entrant's state and the counts per status. Keys are
//! `CampaignKeys`' admission keys; every call is one script or one pipeline.

use crate::draw::Seed;

use super::reply::Fields;
use super::{int_at, tag, CampaignKeys, Reply, Store, StoreError};

/// Where a selected entrant stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// May reserve until `claim_by`.
    Selected,
    /// Has reserved.
    Claimed,
    /// Did not reserve by `claim_by`.
    Lapsed,
}

/// A selected entrant's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selection {
    pub pick: Pick,
    pub selected_at: i64,
    pub claim_by: i64,
}

impl Selection {
    /// `"<s|c|l>:<selected at>:<claim by>"`.
    fn parse(s: &str) -> Option<Selection> {
        let mut p = s.split(':');
        let pick = match p.next()? {
            "s" => Pick::Selected,
            "c" => Pick::Claimed,
            "l" => Pick::Lapsed,
            _ => return None,
        };
        Some(Selection {
            pick,
            selected_at: p.next()?.parse().ok()?,
            claim_by: p.next()?.parse().ok()?,
        })
    }
}

/// A raffle entrant's state as Redis holds it (`entry_state` in lua/lib.lua).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EntryState {
    /// When the user entered (ms); `None`: no entry.
    pub entered_at: Option<i64>,
    /// When the draw was made (ms); `None`: not yet.
    pub drawn_at: Option<i64>,
    /// Entrants considered (selected) so far, in rank order.
    pub next: u64,
    pub selection: Option<Selection>,
    /// 1-based, known once the draw is made.
    pub rank: Option<u64>,
}

impl EntryState {
    /// `entry_state`'s five fields (lua/lib.lua): entered at, drawn at (each ms or nil),
    /// entrants considered, the selection record or nil, the rank or nil.
    pub(super) fn read(f: &mut Fields) -> Result<EntryState, StoreError> {
        let entered_at = f.opt_int()?;
        let drawn_at = f.opt_int()?;
        let next = f.count()?;
        let selection = match f.next()? {
            None => None,
            Some(s) => Some(
                Selection::parse(&s)
                    .ok_or_else(|| f.bad(format_args!("the selection record {s:?}")))?,
            ),
        };
        let rank = match f.opt_int()? {
            None => None,
            Some(n) => Some(u64::try_from(n).map_err(|_| f.bad(format_args!("rank {n}")))?),
        };
        Ok(EntryState {
            entered_at,
            drawn_at,
            next,
            selection,
            rank,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnterOutcome {
    Entered {
        at: i64,
    },
    Existing {
        at: i64,
    },
    /// The draw was made (or Redis' clock passed starts_at): no more entries.
    Closed,
}

/// What one call of `lua/draw.lua` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrawStep {
    /// This call made the draw.
    pub drew: bool,
    pub lapsed: u64,
    pub selected: u64,
    /// More to do: call again.
    pub more: bool,
    /// When the draw was made (ms), once it is.
    pub drawn_at: Option<i64>,
}

/// A raffle's entrants per status (`GET /admin/campaigns`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdmissionCounts {
    pub entrants: u64,
    pub drawn_at: Option<i64>,
    /// Entrants selected so far (selected + claimed + lapsed).
    pub considered: u64,
    /// Selected with an open claim, not reserved yet.
    pub open_claims: u64,
    pub claimed: u64,
    pub lapsed: u64,
}

/// A count Redis returned; a missing or negative one reads as 0.
fn count(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Most entrants one `draw.lua` call selects or lapses: about 15 ms of Redis time, so a
/// draw of a million units never stalls buys for long (BENCHMARKS.md, "Raffle at scale").
const DRAW_BATCH: u64 = 2_000;

impl Store {
    /// The campaign's seed: `candidate` if none was made yet, else the one every instance
    /// already uses.
    pub async fn ensure_seed(
        &self,
        keys: &CampaignKeys,
        candidate: &Seed,
    ) -> Result<Seed, StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HSETNX")
            .arg(&keys.admission)
            .arg("seed")
            .arg(&candidate.bytes()[..])
            .ignore();
        pipe.cmd("HGET").arg(&keys.admission).arg("seed");
        let (stored,): (Vec<u8>,) = self.query_pipe(&pipe).await?;
        Seed::from_bytes(&stored)
            .ok_or_else(|| StoreError::Protocol("a campaign seed is not 32 bytes".into()))
    }

    /// A raffle entry (`lua/enter.lua`).
    pub async fn enter(
        &self,
        keys: &CampaignKeys,
        user: &str,
        member: &[u8],
        starts_at_ms: i64,
    ) -> Result<EnterOutcome, StoreError> {
        let mut inv = self.scripts.enter.prepare_invoke();
        inv.key(&keys.admission)
            .key(&keys.entrants)
            .key(&keys.ranking)
            .arg(user)
            .arg(member)
            .arg(starts_at_ms);
        let reply: Reply = self.run(inv).await?;
        let at = int_at(&reply, 1);
        Ok(match tag(&reply) {
            "entered" => EnterOutcome::Entered { at },
            "existing" => EnterOutcome::Existing { at },
            "closed" => EnterOutcome::Closed,
            other => return Err(StoreError::Protocol(format!("enter returned {other:?}"))),
        })
    }

    /// Runs `lua/draw.lua` until it has nothing more to do; the steps summed.
    pub async fn draw(
        &self,
        keys: &CampaignKeys,
        items: &[(&str, u64)],
        window_ms: (i64, i64),
        claim_window_ms: u64,
    ) -> Result<DrawStep, StoreError> {
        let mut total = DrawStep::default();
        loop {
            let mut inv = self.scripts.draw.prepare_invoke();
            inv.key(&keys.admission)
                .key(&keys.ranking)
                .key(&keys.claims)
                .key(&keys.selection);
            for (key, _) in items {
                inv.key(*key);
            }
            inv.arg(window_ms.0)
                .arg(window_ms.1)
                .arg(claim_window_ms)
                .arg(DRAW_BATCH);
            for (_, initial) in items {
                inv.arg(*initial);
            }
            let r: Vec<i64> = self.run(inv).await?;
            let at = |i: usize| r.get(i).copied().unwrap_or(0);
            total.drew |= at(0) == 1;
            total.lapsed += count(at(1));
            total.selected += count(at(2));
            total.drawn_at = Some(at(4)).filter(|t| *t > 0);
            if at(3) == 0 {
                return Ok(total);
            }
        }
    }

    /// One entrant's state (`lua/entry.lua`).
    pub async fn entry(
        &self,
        keys: &CampaignKeys,
        user: &str,
        member: &[u8],
    ) -> Result<EntryState, StoreError> {
        let mut inv = self.scripts.entry.prepare_invoke();
        inv.key(&keys.admission)
            .key(&keys.entrants)
            .key(&keys.ranking)
            .key(&keys.selection)
            .arg(user)
            .arg(member);
        let mut f = Fields::new("entry.lua", self.run(inv).await?);
        let state = EntryState::read(&mut f)?;
        f.end()?;
        Ok(state)
    }

    /// Entrants per status, in one pipeline.
    pub async fn admission_counts(
        &self,
        keys: &CampaignKeys,
    ) -> Result<AdmissionCounts, StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HLEN").arg(&keys.entrants);
        pipe.cmd("ZCARD").arg(&keys.claims);
        pipe.cmd("HMGET")
            .arg(&keys.admission)
            .arg(&["drawn", "next", "claimed", "lapsed"]);
        let (entrants, open, a): (i64, i64, Vec<Option<i64>>) = self.query_pipe(&pipe).await?;
        let a = |i: usize| a.get(i).copied().flatten();
        Ok(AdmissionCounts {
            entrants: count(entrants),
            drawn_at: a(0),
            considered: count(a(1).unwrap_or(0)),
            open_claims: count(open),
            claimed: count(a(2).unwrap_or(0)),
            lapsed: count(a(3).unwrap_or(0)),
        })
    }

    /// Up to `n` entrants from rank `start` (0-based) in rank order: (ranking member,
    /// entered at, selection record).
    pub async fn ranking_page(
        &self,
        keys: &CampaignKeys,
        start: u64,
        n: u64,
    ) -> Result<Vec<(Vec<u8>, Option<i64>, Option<Selection>)>, StoreError> {
        let mut cmd = redis::cmd("ZRANGE");
        cmd.arg(&keys.ranking).arg(start).arg(start + n.max(1) - 1);
        let members: Vec<Vec<u8>> = self.query(&cmd).await?;
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let users: Vec<&[u8]> = members
            .iter()
            .map(|m| m.get(crate::draw::SEED_LEN..).unwrap_or_default())
            .collect();
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET").arg(&keys.entrants).arg(&users);
        pipe.cmd("HMGET").arg(&keys.selection).arg(&users);
        let (entered, picked): (Vec<Option<i64>>, Vec<Option<String>>) =
            self.query_pipe(&pipe).await?;
        Ok(members
            .into_iter()
            .zip(entered)
            .zip(picked)
            .map(|((m, e), s)| (m, e, s.as_deref().and_then(Selection::parse)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selections_parse() {
        assert_eq!(
            Selection::parse("c:10:20"),
            Some(Selection {
                pick: Pick::Claimed,
                selected_at: 10,
                claim_by: 20
            })
        );
        assert_eq!(Selection::parse("x:1:2"), None);
        assert_eq!(Selection::parse("s:1"), None);
    }
}
