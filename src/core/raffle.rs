//! The raffle and the instant draw in the sale: raffle entries, an entrant's state, the check a
//! buy passes before its reservation, the draw the background runs, and what operators
//! see (counts per status, the export a verifier recomputes).
//!
//! The instant draw is decided here from the ticket alone — a user who loses never
//! reaches Redis. The raffle's selection is Redis' (`lua/draw.lua`, `lua/reserve.lua`):
//! every instance obeys the same record.

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use serde::Serialize;

use super::{Sale, SaleError};
use crate::campaign::{CampaignState, Window};
use crate::clock::{millis, unix_ms};
use crate::config::Admission;
use crate::draw::{member_user, Seed, WinThreshold};
use crate::identity::IdentityError;
use crate::stock::order::rfc3339_ms;
use crate::stock::{AdmissionCounts, EnterOutcome, EntryState, Pick, Selection};

/// An entrant's status (`entries/me`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryStatus {
    Entered,
    Selected,
    Claimed,
    Waitlisted,
    Lapsed,
    NotSelected,
}

/// `GET …/entries/me`, and the answer to an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntryView {
    pub campaign: String,
    pub user_id: String,
    pub status: EntryStatus,
    pub entered_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rank: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claim_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
}

/// Why a buy was refused as `not-selected`: the `admission` member of the problem body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    pub mode: &'static str,
    /// An [`EntryStatus`], or `not-entered` for a raffle the user did not enter.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rank: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claim_by: Option<String>,
}

/// A campaign's admission in its public view.
#[derive(Debug, Clone, Serialize)]
pub struct AdmissionView {
    pub mode: &'static str,
    /// hex(SHA-256(seed)); absent until the seed is made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commitment: Option<String>,
    /// hex(seed), once the draw can no longer be gamed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entries_open: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claim_window_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drawn_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub win_probability: Option<f64>,
}

/// A raffle's entrants per status (`GET /admin/campaigns`); they add up to `entrants`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AdmissionLedger {
    pub mode: &'static str,
    pub entrants: u64,
    pub entered: u64,
    pub selected: u64,
    pub claimed: u64,
    pub waitlisted: u64,
    pub lapsed: u64,
    #[serde(rename = "not-selected")]
    pub not_selected: u64,
}

/// `GET /admin/campaigns/{id}/entries`: what a verifier needs to recompute the draw.
#[derive(Debug, Serialize)]
pub struct EntriesExport {
    pub campaign: String,
    pub commitment: Option<String>,
    /// Present once revealed (the draw is made).
    pub seed: Option<String>,
    pub drawn_at: Option<String>,
    /// Entrants considered in rank order so far: the first `selected_count` ranks.
    pub selected_count: u64,
    /// Every entrant: in rank order after the draw; by user id before it (ranks hidden).
    pub entrants: Vec<ExportedEntrant>,
}

#[derive(Debug, Serialize)]
pub struct ExportedEntrant {
    pub user_id: String,
    pub entered_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rank: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selected_at: Option<String>,
}

/// Entrants read per page of an export.
const EXPORT_PAGE: u64 = 10_000;

impl EntryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryStatus::Entered => "entered",
            EntryStatus::Selected => "selected",
            EntryStatus::Claimed => "claimed",
            EntryStatus::Waitlisted => "waitlisted",
            EntryStatus::Lapsed => "lapsed",
            EntryStatus::NotSelected => "not-selected",
        }
    }
}

/// The status of an entrant with `state`, at `now_ms`; `ended` once the campaign ended
/// (selection has stopped: the waitlist will not be reached).
fn status_of(state: &EntryState, now_ms: i64, ended: bool) -> EntryStatus {
    match state.selection {
        Some(Selection {
            pick: Pick::Claimed,
            ..
        }) => EntryStatus::Claimed,
        Some(Selection {
            pick: Pick::Lapsed, ..
        }) => EntryStatus::Lapsed,
        // Past claim_by it is lapsed already; the background records it within a second.
        Some(s) if s.claim_by < now_ms => EntryStatus::Lapsed,
        Some(_) => EntryStatus::Selected,
        None if state.drawn_at.is_none() => EntryStatus::Entered,
        None if ended => EntryStatus::NotSelected,
        None => EntryStatus::Waitlisted,
    }
}

/// Place in the waiting line: 1 = the next to be selected.
fn position_of(state: &EntryState) -> Option<u64> {
    state.rank.map(|r| r.saturating_sub(state.next).max(1))
}

impl Sale {
    fn raffle(&self, campaign: &str) -> Result<(std::sync::Arc<CampaignState>, i64), SaleError> {
        let c = self
            .inner
            .registry
            .get(campaign)
            .ok_or_else(|| SaleError::UnknownCampaign(campaign.to_owned()))?;
        match c.cfg.admission {
            Admission::Raffle { entries_open, .. } => Ok((c, unix_ms(entries_open))),
            _ => Err(SaleError::NoEntries(campaign.to_owned())),
        }
    }

    /// The campaign's window is over: selection has stopped (the campaign's own rule).
    fn ended(&self, c: &CampaignState) -> bool {
        c.window(self.inner.clock.now()) == Window::Ended
    }

    fn seed_of(c: &CampaignState) -> Result<&Seed, SaleError> {
        c.seed.get().ok_or(SaleError::AdmissionNotReady)
    }

    fn entry_view(&self, c: &CampaignState, user: String, state: &EntryState) -> Option<EntryView> {
        let now = self.inner.clock.now_ms();
        let ended = self.ended(c);
        let status = status_of(state, now, ended);
        let drawn = state.drawn_at.is_some();
        let ticket = drawn
            .then(|| c.seed.get().map(|s| s.ticket(&user).hex()))
            .flatten();
        Some(EntryView {
            campaign: c.cfg.id.clone(),
            status,
            entered_at: rfc3339_ms(state.entered_at?),
            ticket,
            rank: state.rank.filter(|_| drawn),
            claim_by: state
                .selection
                .filter(|_| status == EntryStatus::Selected)
                .map(|s| rfc3339_ms(s.claim_by)),
            position: (status == EntryStatus::Waitlisted)
                .then(|| position_of(state))
                .flatten(),
            user_id: user,
        })
    }

    /// `POST …/entries`: the user enters the raffle; `(entry, true)` when new (201).
    pub async fn enter(
        &self,
        campaign: &str,
        client_ip: IpAddr,
        authenticate: impl FnOnce() -> Result<String, IdentityError>,
    ) -> Result<(EntryView, bool), SaleError> {
        let i = &*self.inner;
        let Some(_slot) = i.inflight.try_acquire() else {
            return Err(SaleError::Overloaded);
        };
        let (c, entries_open) = self.raffle(campaign)?;
        i.limiters.check_ip(&c.cfg.id, &c.cfg.limits, client_ip)?;
        let user = authenticate()?;
        i.limiters.check_user(&c.cfg.id, &c.cfg.limits, &user)?;
        let now = i.clock.now_ms();
        if now < entries_open {
            let secs = u64::try_from((entries_open - now + 999) / 1000).unwrap_or(1);
            return Err(SaleError::NotStarted {
                secs_to_start: secs,
            });
        }
        let starts_at = unix_ms(c.cfg.starts_at);
        if now >= starts_at {
            return Err(SaleError::EntriesClosed);
        }
        let member = Self::seed_of(&c)?.ticket(&user).ranking_member(&user);
        let (at, created) = match i.store.enter(&c.keys, &user, &member, starts_at).await? {
            EnterOutcome::Entered { at } => (at, true),
            EnterOutcome::Existing { at } => (at, false),
            EnterOutcome::Closed => return Err(SaleError::EntriesClosed),
        };
        if created {
            i.metrics.admission_event(&c.cfg.id, "entered", 1);
        }
        let view = EntryView {
            campaign: c.cfg.id.clone(),
            user_id: user,
            status: EntryStatus::Entered,
            entered_at: rfc3339_ms(at),
            ticket: None,
            rank: None,
            claim_by: None,
            position: None,
        };
        Ok((view, created))
    }

    /// `GET …/entries/me`.
    pub async fn my_entry(
        &self,
        campaign: &str,
        authenticate: impl FnOnce() -> Result<String, IdentityError>,
    ) -> Result<EntryView, SaleError> {
        let (c, _) = self.raffle(campaign)?;
        let user = authenticate()?;
        let member = Self::seed_of(&c)?.ticket(&user).ranking_member(&user);
        let state = self.inner.store.entry(&c.keys, &user, &member).await?;
        self.entry_view(&c, user, &state).ok_or(SaleError::NoEntry)
    }

    /// The admission check of a buy, after its window check: an instant draw is decided
    /// here; a raffle yields the user's ranking member for the reserve script to check.
    pub(super) fn admit(
        &self,
        c: &CampaignState,
        user: &str,
    ) -> Result<Option<Vec<u8>>, SaleError> {
        match c.cfg.admission {
            Admission::FirstCome => Ok(None),
            Admission::InstantDraw { win_probability } => {
                let ticket = Self::seed_of(c)?.ticket(user);
                if WinThreshold::new(win_probability).wins(&ticket) {
                    Ok(None)
                } else {
                    self.inner
                        .metrics
                        .admission_event(&c.cfg.id, "not-selected", 1);
                    Err(SaleError::NotSelected(Box::new(Refusal {
                        mode: "instant-draw",
                        status: EntryStatus::NotSelected.as_str(),
                        rank: None,
                        position: None,
                        claim_by: None,
                    })))
                }
            }
            Admission::Raffle { .. } => {
                Ok(Some(Self::seed_of(c)?.ticket(user).ranking_member(user)))
            }
        }
    }

    /// The refusal of a raffle buy by a user without an open claim.
    pub(super) fn not_selected(&self, c: &CampaignState, state: &EntryState) -> SaleError {
        self.inner
            .metrics
            .admission_event(&c.cfg.id, "not-selected", 1);
        let now = self.inner.clock.now_ms();
        let ended = self.ended(c);
        let (status, position) = match state.entered_at {
            None => ("not-entered", None),
            Some(_) => {
                let s = status_of(state, now, ended);
                let pos = (s == EntryStatus::Waitlisted)
                    .then(|| position_of(state))
                    .flatten();
                (s.as_str(), pos)
            }
        };
        SaleError::NotSelected(Box::new(Refusal {
            mode: "raffle",
            status,
            rank: state.rank,
            position,
            claim_by: None,
        }))
    }

    /// The public view's `admission` member; `None` for first come, first served.
    pub(super) fn admission_view(&self, c: &CampaignState) -> Option<AdmissionView> {
        let seed = c.seed.get();
        let mut v = AdmissionView {
            mode: c.cfg.admission.mode(),
            commitment: seed.map(Seed::commitment),
            seed: None,
            entries_open: None,
            claim_window_seconds: None,
            drawn_at: None,
            win_probability: None,
        };
        match c.cfg.admission {
            Admission::FirstCome => return None,
            Admission::Raffle {
                entries_open,
                claim_window,
            } => {
                let drawn = c.drawn_at.load(Ordering::Relaxed);
                v.entries_open = Some(rfc3339_ms(unix_ms(entries_open)));
                v.claim_window_seconds = Some(claim_window.as_secs());
                // Entries closed when the draw was made: from then on the seed decides
                // nothing anyone can still change.
                if drawn > 0 {
                    v.drawn_at = Some(rfc3339_ms(drawn));
                    v.seed = seed.map(Seed::hex);
                }
            }
            Admission::InstantDraw { win_probability } => {
                v.win_probability = Some(win_probability);
                if self.ended(c) {
                    v.seed = seed.map(Seed::hex);
                }
            }
        }
        Some(v)
    }

    /// A raffle's entrants per status; `None` for other modes.
    pub(super) async fn admission_ledger(
        &self,
        c: &CampaignState,
    ) -> Result<Option<AdmissionLedger>, SaleError> {
        if !matches!(c.cfg.admission, Admission::Raffle { .. }) {
            return Ok(None);
        }
        let n: AdmissionCounts = self.inner.store.admission_counts(&c.keys).await?;
        let rest = n.entrants.saturating_sub(n.considered);
        let ended = self.ended(c);
        let drawn = n.drawn_at.is_some();
        Ok(Some(AdmissionLedger {
            mode: "raffle",
            entrants: n.entrants,
            entered: if drawn { 0 } else { n.entrants },
            selected: n.open_claims,
            claimed: n.claimed,
            lapsed: n.lapsed,
            waitlisted: if drawn && !ended { rest } else { 0 },
            not_selected: if drawn && ended { rest } else { 0 },
        }))
    }

    /// `GET /admin/campaigns/{id}/entries`: every entrant, for a verifier.
    pub async fn entries_export(&self, campaign: &str) -> Result<EntriesExport, SaleError> {
        let (c, _) = self.raffle(campaign)?;
        let store = &self.inner.store;
        let counts = store.admission_counts(&c.keys).await?;
        let drawn = counts.drawn_at.is_some();
        let seed = c.seed.get();
        let now = self.inner.clock.now_ms();
        let ended = self.ended(&c);
        let mut entrants = Vec::new();
        let mut start = 0;
        loop {
            let page = store.ranking_page(&c.keys, start, EXPORT_PAGE).await?;
            let n = page.len() as u64;
            for (k, (member, entered, selection)) in page.into_iter().enumerate() {
                let Some(user) = member_user(&member) else {
                    continue;
                };
                let state = EntryState {
                    entered_at: entered,
                    drawn_at: counts.drawn_at,
                    next: counts.considered,
                    selection,
                    rank: None,
                };
                entrants.push(ExportedEntrant {
                    user_id: user.to_owned(),
                    entered_at: entered.map(rfc3339_ms),
                    rank: drawn.then_some(start + k as u64 + 1),
                    ticket: drawn.then(|| hex::encode(&member[..crate::draw::SEED_LEN])),
                    status: drawn.then(|| status_of(&state, now, ended).as_str()),
                    selected_at: selection.map(|s| rfc3339_ms(s.selected_at)),
                });
            }
            if n < EXPORT_PAGE {
                break;
            }
            start += n;
        }
        if !drawn {
            // Before the draw the order of the ranking would tell who is ahead.
            entrants.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        }
        Ok(EntriesExport {
            campaign: c.cfg.id.clone(),
            commitment: seed.map(Seed::commitment),
            seed: seed.filter(|_| drawn).map(Seed::hex),
            drawn_at: counts.drawn_at.map(rfc3339_ms),
            selected_count: counts.considered,
            entrants,
        })
    }

    /// One round of the background admission work: seeds made or read; each raffle drawn
    /// (from starts_at), lapsed and re-selected. Returns how long until a raffle that is
    /// not drawn yet starts, so the caller can wake for it.
    pub(super) async fn admission_tick(&self) -> Option<std::time::Duration> {
        let i = &*self.inner;
        let now = i.clock.now_ms();
        let mut soonest: Option<i64> = None;
        for c in i.registry.snapshot().values() {
            if c.cfg.admission.is_first_come() {
                continue;
            }
            if c.seed.get().is_none() {
                let Ok(candidate) = Seed::random() else {
                    tracing::error!(campaign = %c.cfg.id, "no random source for the campaign seed");
                    continue;
                };
                match i.store.ensure_seed(&c.keys, &candidate).await {
                    Ok(seed) => {
                        let _ = c.seed.set(seed);
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, campaign = %c.cfg.id, "seed not read");
                        continue;
                    }
                }
            }
            let Admission::Raffle { claim_window, .. } = c.cfg.admission else {
                continue;
            };
            let starts_at = unix_ms(c.cfg.starts_at);
            if now < starts_at {
                soonest = Some(soonest.map_or(starts_at - now, |s| s.min(starts_at - now)));
                continue;
            }
            let items: Vec<(&str, u64)> = c
                .items
                .iter()
                .map(|it| (it.key.as_str(), it.stock))
                .collect();
            let window = (starts_at, unix_ms(c.cfg.ends_at));
            match i
                .store
                .draw(&c.keys, &items, window, millis(claim_window))
                .await
            {
                Ok(step) => {
                    if let Some(at) = step.drawn_at {
                        c.drawn_at.store(at, Ordering::Relaxed);
                    }
                    if step.drew {
                        tracing::info!(campaign = %c.cfg.id, "raffle drawn; entries closed and the seed revealed");
                    }
                    i.metrics
                        .admission_event(&c.cfg.id, "selected", step.selected);
                    i.metrics.admission_event(&c.cfg.id, "lapsed", step.lapsed);
                }
                Err(e) => tracing::debug!(error = %e, campaign = %c.cfg.id, "raffle draw not run"),
            }
        }
        soonest.map(|ms| std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(
        selection: Option<Selection>,
        drawn: bool,
        rank: Option<u64>,
        next: u64,
    ) -> EntryState {
        EntryState {
            entered_at: Some(1),
            drawn_at: drawn.then_some(5),
            next,
            selection,
            rank,
        }
    }

    #[test]
    fn statuses() {
        let sel = |pick, claim_by| {
            Some(Selection {
                pick,
                selected_at: 5,
                claim_by,
            })
        };
        assert_eq!(
            status_of(&state(None, false, None, 0), 10, false),
            EntryStatus::Entered
        );
        assert_eq!(
            status_of(&state(None, true, Some(9), 3), 10, false),
            EntryStatus::Waitlisted
        );
        assert_eq!(position_of(&state(None, true, Some(9), 3)), Some(6));
        assert_eq!(
            status_of(&state(None, true, Some(9), 3), 10, true),
            EntryStatus::NotSelected
        );
        assert_eq!(
            status_of(&state(sel(Pick::Selected, 10), true, Some(1), 3), 10, false),
            EntryStatus::Selected
        );
        assert_eq!(
            status_of(&state(sel(Pick::Selected, 9), true, Some(1), 3), 10, false),
            EntryStatus::Lapsed
        );
        assert_eq!(
            status_of(&state(sel(Pick::Claimed, 9), true, Some(1), 3), 10, false),
            EntryStatus::Claimed
        );
        assert_eq!(
            status_of(&state(sel(Pick::Lapsed, 99), true, Some(1), 3), 10, false),
            EntryStatus::Lapsed
        );
    }
}
