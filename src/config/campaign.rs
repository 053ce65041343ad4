//! `campaigns/*.toml`: one file per campaign, read and validated with every problem
//! collected — each item is checked on its own, so one bad `[[items]]` table does not
//! hide the next, and an item's error names its SKU.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use toml::Spanned;

use super::de;
use super::diagnostics::{line_col, read, syntax_errors, ConfigError, Diag, Label};
use super::doc::Doc;
use super::{HumanDuration, LimitsConfig};

/// One item on sale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub sku: String,
    pub stock: u64,
    pub price_cents: u64,
}

/// Who may buy (see `docs/api.md`, fair admission).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Admission {
    /// Anyone, first come first served.
    FirstCome,
    /// Entrants from `entries_open` until `starts_at`, selected by ticket rank; a selected
    /// entrant reserves within `claim_window` of selection.
    Raffle {
        entries_open: OffsetDateTime,
        claim_window: Duration,
    },
    /// One draw per user: wins when the ticket's first 8 bytes are below `p × 2^64`.
    InstantDraw { win_probability: f64 },
}

impl Admission {
    /// The name the configuration and the API use: `first-come`, `raffle`, `instant-draw`.
    pub fn mode(&self) -> &'static str {
        match self {
            Admission::FirstCome => "first-come",
            Admission::Raffle { .. } => "raffle",
            Admission::InstantDraw { .. } => "instant-draw",
        }
    }

    pub fn is_first_come(&self) -> bool {
        matches!(self, Admission::FirstCome)
    }
}

/// One campaign, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Campaign {
    pub id: String,
    pub name: String,
    pub starts_at: OffsetDateTime,
    pub ends_at: OffsetDateTime,
    pub payment_window: Duration,
    pub per_user_limit: u32,
    pub limits: LimitsConfig,
    pub items: Vec<Item>,
    pub admission: Admission,
    pub file: PathBuf,
}

/// A campaign file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CampaignFile {
    id: Spanned<String>,
    name: String,
    starts_at: Spanned<toml::value::Datetime>,
    ends_at: Spanned<toml::value::Datetime>,
    payment_window: Spanned<HumanDuration>,
    per_user_limit: Spanned<u32>,
    #[serde(default)]
    limits: LimitsConfig,
    items: Spanned<Vec<ItemFile>>,
    admission: Option<Spanned<AdmissionMode>>,
    raffle: Option<Spanned<RaffleFile>>,
    instant_draw: Option<Spanned<InstantDrawFile>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum AdmissionMode {
    FirstCome,
    Raffle,
    InstantDraw,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RaffleFile {
    entries_open: Spanned<toml::value::Datetime>,
    claim_window: Spanned<HumanDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InstantDrawFile {
    win_probability: Spanned<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemFile {
    sku: Spanned<String>,
    stock: Spanned<i64>,
    price_cents: Spanned<i64>,
}

/// The campaigns of a directory and every problem found in them.
#[derive(Debug, Default)]
pub(crate) struct Campaigns {
    pub(crate) campaigns: Vec<Campaign>,
    pub(crate) errors: Vec<ConfigError>,
    pub(crate) warnings: Vec<ConfigError>,
}

/// Loads and validates every `*.toml` in `dir`, sorted by file name; the first error.
/// (`check` and `serve` see all of them through `Config::check`.)
pub fn load_campaigns(dir: &Path) -> Result<Vec<Campaign>, ConfigError> {
    let mut found = check_campaigns(dir, OffsetDateTime::now_utc());
    if found.errors.is_empty() {
        Ok(found.campaigns)
    } else {
        Err(found.errors.swap_remove(0))
    }
}

/// Every campaign file of `dir`, every error and warning (a campaign that ended before
/// `now`; a directory without campaigns).
pub(crate) fn check_campaigns(dir: &Path, now: OffsetDateTime) -> Campaigns {
    let mut out = Campaigns::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            let msg = format!("cannot list campaigns: {e}");
            out.errors.push(ConfigError::whole(dir, msg));
            return out;
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    if files.is_empty() {
        let msg = "no campaign files (*.toml): the gateway will only proxy to the store".into();
        out.warnings.push(ConfigError::whole(dir, msg));
    }
    // id → where it was first defined, to name both files of a duplicate.
    let mut seen: HashMap<String, String> = HashMap::new();
    for f in files {
        let src = match read(&f) {
            Ok(s) => s,
            Err(e) => {
                out.errors.push(e);
                continue;
            }
        };
        let doc = match Doc::parse(&src) {
            Ok(doc) => doc,
            Err(errors) => {
                out.errors.extend(syntax_errors(&f, &src, errors));
                continue;
            }
        };
        let read = de::read::<CampaignFile>(&doc);
        let mut d = Diag::new(&f, &src, &doc, read.problems, read.flawed, Some(ITEMS));
        if let Some(c) = read.value {
            let id = c.id.get_ref().clone();
            let campaign = parse_campaign(&mut d, c, now);
            if d.sound(&["id"]) && valid_id(&id) {
                let span = d.key_span("id");
                match seen.get(&id) {
                    Some(first) => {
                        let msg = format!("campaign {id:?} is defined twice: also in {first}");
                        d.error(span, "id", msg);
                    }
                    None => {
                        let (line, col) = line_col(&src, span.start);
                        seen.insert(id, format!("{}:{line}:{col}", f.display()));
                    }
                }
            }
            out.campaigns.extend(campaign.filter(|_| !d.has_errors()));
        }
        let (mut errors, mut warnings) = d.finish();
        out.errors.append(&mut errors);
        out.warnings.append(&mut warnings);
    }
    out
}

/// Ids and SKUs appear in URLs and Redis keys: keep them to a safe alphabet.
pub fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// 2^53 - 1: the largest integer Lua's doubles (Redis scripts) hold exactly.
const MAX_EXACT: i64 = (1 << 53) - 1;

const ID_RULE: &str = "must be 1-64 characters of A-Z a-z 0-9 - _";

fn to_offset(dt: &toml::value::Datetime) -> Result<OffsetDateTime, String> {
    if dt.offset.is_none() || dt.date.is_none() || dt.time.is_none() {
        return Err("must be an offset date-time such as 2026-11-11T00:00:00+08:00".into());
    }
    OffsetDateTime::parse(&dt.to_string(), &Rfc3339).map_err(|e| e.to_string())
}

/// Items are named by their SKU in messages.
const ITEMS: Label = Label {
    array: "items",
    key: "sku",
    noun: "item",
};

/// One campaign file, checked; `None` when something in it is wrong (reported).
fn parse_campaign(d: &mut Diag<'_>, c: CampaignFile, now: OffsetDateTime) -> Option<Campaign> {
    if !valid_id(c.id.get_ref()) {
        d.error(c.id.span(), "id", ID_RULE);
    }
    let starts_at = to_offset(c.starts_at.get_ref())
        .map_err(|m| d.error(c.starts_at.span(), "starts_at", m))
        .ok();
    let ends_at = to_offset(c.ends_at.get_ref())
        .map_err(|m| d.error(c.ends_at.span(), "ends_at", m))
        .ok();
    let sound_window = d.sound(&["starts_at", "ends_at"]);
    if let (Some(s), Some(e), true) = (starts_at, ends_at, sound_window) {
        if e <= s {
            d.error(c.ends_at.span(), "ends_at", "must be after starts_at");
        } else if e <= now && d.sound(&["id"]) {
            let id = c.id.get_ref();
            let when = e.format(&Rfc3339).unwrap_or_default();
            let msg = format!(
                "campaign `{id}` ended at {when}: it takes no more buys (move its window, or remove the file once its orders are settled)"
            );
            d.warn(c.ends_at.span(), "ends_at", msg);
        }
    }
    if c.payment_window.get_ref().0 < Duration::from_secs(1) {
        let span = c.payment_window.span();
        d.error(span, "payment_window", "must be at least 1s");
    }
    if *c.per_user_limit.get_ref() == 0 {
        let span = c.per_user_limit.span();
        d.error(span, "per_user_limit", "must be at least 1");
    }
    for (field, spec) in [
        ("limits.per_ip", c.limits.per_ip),
        ("limits.per_user", c.limits.per_user),
    ] {
        if let Some(Err(m)) = spec.map(|s| s.check()) {
            d.error_at_key(field, m);
        }
    }
    if c.items.get_ref().is_empty() {
        let span = c.items.span();
        d.error(span, "items", "a campaign needs at least one item");
    }
    let admission = admission(d, &c, starts_at);
    let items = items(d, c.items.get_ref());
    Some(Campaign {
        id: c.id.into_inner(),
        name: c.name,
        starts_at: starts_at?,
        ends_at: ends_at?,
        payment_window: c.payment_window.into_inner().0,
        per_user_limit: c.per_user_limit.into_inner(),
        limits: c.limits,
        items: items?,
        admission: admission?,
        file: d.file.to_path_buf(),
    })
}

/// The `admission` mode and its table; `None` (with the errors recorded) when they do
/// not fit together.
fn admission(
    d: &mut Diag<'_>,
    c: &CampaignFile,
    starts_at: Option<OffsetDateTime>,
) -> Option<Admission> {
    if !d.sound(&["admission"]) {
        return None;
    }
    let mode = c
        .admission
        .as_ref()
        .map_or(AdmissionMode::FirstCome, |m| *m.get_ref());
    let mode_span = d.value_span("admission");
    // A table of another mode is an error: it would be silently ignored otherwise.
    if mode != AdmissionMode::Raffle {
        if let Some(t) = &c.raffle {
            d.error(
                t.span(),
                "raffle",
                "a [raffle] table needs admission = \"raffle\"",
            );
        }
    }
    if mode != AdmissionMode::InstantDraw {
        if let Some(t) = &c.instant_draw {
            let msg = "an [instant_draw] table needs admission = \"instant-draw\"";
            d.error(t.span(), "instant_draw", msg);
        }
    }
    match mode {
        AdmissionMode::FirstCome => {
            (c.raffle.is_none() && c.instant_draw.is_none()).then_some(Admission::FirstCome)
        }
        AdmissionMode::Raffle => {
            let Some(r) = c.raffle.as_ref().map(|r| r.get_ref()) else {
                let msg = "a raffle needs a [raffle] table with entries_open and claim_window";
                d.error(mode_span.clone(), "admission", msg);
                return None;
            };
            let open = to_offset(r.entries_open.get_ref())
                .map_err(|m| d.error(r.entries_open.span(), "raffle.entries_open", m))
                .ok();
            let start = starts_at.filter(|_| d.sound(&["starts_at"]));
            if let (Some(open), Some(start)) = (open, start) {
                if open >= start {
                    let msg = "must be before starts_at (entries are taken from entries_open until starts_at, when the draw is made)";
                    d.error(r.entries_open.span(), "raffle.entries_open", msg);
                    return None;
                }
            }
            let claim_window = r.claim_window.get_ref().0;
            if claim_window < Duration::from_secs(1) {
                let span = r.claim_window.span();
                d.error(span, "raffle.claim_window", "must be at least 1s");
                return None;
            }
            Some(Admission::Raffle {
                entries_open: open?,
                claim_window,
            })
        }
        AdmissionMode::InstantDraw => {
            let Some(t) = c.instant_draw.as_ref().map(|t| t.get_ref()) else {
                let msg = "an instant draw needs an [instant_draw] table with win_probability";
                d.error(mode_span.clone(), "admission", msg);
                return None;
            };
            let p = *t.win_probability.get_ref();
            if !(p > 0.0 && p <= 1.0) {
                let span = t.win_probability.span();
                let msg = format!("must be above 0 and at most 1 (0 < p <= 1), not {p}");
                d.error(span, "instant_draw.win_probability", msg);
                return None;
            }
            Some(Admission::InstantDraw { win_probability: p })
        }
    }
}

/// The `[[items]]`, each checked on its own; `None` if any is wrong.
fn items(d: &mut Diag<'_>, parsed: &[ItemFile]) -> Option<Vec<Item>> {
    let mut skus = HashSet::new();
    let mut items = Vec::with_capacity(parsed.len());
    let mut all_ok = true;
    for (i, it) in parsed.iter().enumerate() {
        let mut bad = |span, field: &str, m: &str| {
            d.error(span, &format!("items[{i}].{field}"), m);
            all_ok = false;
        };
        let sku = it.sku.get_ref().clone();
        if !valid_id(&sku) {
            bad(it.sku.span(), "sku", ID_RULE);
        } else if !skus.insert(sku.clone()) {
            bad(it.sku.span(), "sku", "duplicate sku");
        }
        if *it.stock.get_ref() < 0 {
            bad(it.stock.span(), "stock", "must not be negative");
        } else if *it.stock.get_ref() > MAX_EXACT {
            // Redis scripts count in doubles: above 2^53 - 1 a decrement can be lost.
            let m = format!(
                "must be at most {MAX_EXACT} (the largest count Redis' scripts keep exactly)"
            );
            bad(it.stock.span(), "stock", &m);
        }
        if *it.price_cents.get_ref() < 0 {
            bad(it.price_cents.span(), "price_cents", "must not be negative");
        }
        items.push(Item {
            sku,
            stock: u64::try_from(*it.stock.get_ref()).unwrap_or(0),
            price_cents: u64::try_from(*it.price_cents.get_ref()).unwrap_or(0),
        });
    }
    all_ok.then_some(items)
}
