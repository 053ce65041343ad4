//! Why the sale refused or could not do something: one typed error for every core
//! operation. `http/problem.rs` turns each variant into a status and a slug.

use crate::config::ConfigError;
use crate::identity::IdentityError;
use crate::limits::RateLimited;
use crate::signature::SignatureError;
use crate::stock::StoreError;

/// A client's request that cannot be read or makes no sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadInput {
    #[error("body exceeds {max} bytes")]
    TooLarge { max: usize },
    #[error("{0}")]
    Invalid(String),
}

impl BadInput {
    pub fn invalid(why: impl Into<String>) -> BadInput {
        BadInput::Invalid(why.into())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SaleError {
    #[error("the gateway is at capacity; retry shortly")]
    Overloaded,
    #[error(transparent)]
    BadInput(#[from] BadInput),
    #[error(transparent)]
    Unauthenticated(#[from] IdentityError),
    #[error(transparent)]
    RateLimited(#[from] RateLimited),
    #[error("no campaign {0:?}")]
    UnknownCampaign(String),
    #[error("no item {sku:?} in campaign {campaign:?}")]
    UnknownItem { campaign: String, sku: String },
    #[error("no such order")]
    UnknownOrder,
    #[error("the campaign is paused by an operator")]
    Paused,
    #[error("the campaign has not started yet")]
    NotStarted { secs_to_start: u64 },
    #[error("the campaign has ended")]
    Ended,
    #[error("the item is sold out")]
    SoldOut,
    #[error("you hold {held} of at most {limit} units in this campaign")]
    LimitReached { held: i64, limit: u32 },
    #[error("this Idempotency-Key was already used for another item")]
    IdempotencyKeyReused,
    #[error("the order is no longer pending payment")]
    NotPending,
    #[error("paid amount differs from the order amount")]
    AmountMismatch,
    #[error(transparent)]
    BadSignature(#[from] SignatureError),
    #[error("remaining is {remaining}; the adjustment would make it negative")]
    StockConflict { remaining: i64 },
    #[error(transparent)]
    Reload(#[from] ConfigError),
    #[error("you are not selected to buy in this campaign")]
    NotSelected(Box<super::Refusal>),
    #[error("campaign {0:?} takes no entries")]
    NoEntries(String),
    #[error("you have not entered this raffle")]
    NoEntry,
    #[error("entries closed when the draw was made")]
    EntriesClosed,
    #[error("the campaign's admission draw is not ready yet; retry shortly")]
    AdmissionNotReady,
    #[error("order storage answered too late; nothing was reserved")]
    TooLate,
    #[error(transparent)]
    Storage(#[from] StoreError),
}
