//! The ONE place that maps errors to an HTTP status and RFC 9457 problem+json: a
//! `From` for every error the edge meets (the sale's, a body's, the proxy's). The
//! conversions only map; whoever saw the error has logged it.

use std::io::Write as _;

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Response, StatusCode};

use super::{full, ResBody};
use crate::core::{BadInput, SaleError};
use crate::proxy::ForwardError;

/// A problem+json response under construction.
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub slug: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub retry_after: Option<u64>,
    /// More response headers (a 429's RateLimit fields, a 405's `Allow`); empty — and
    /// unallocated — for most problems.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// One extension member (RFC 9457 §3.2), e.g. a `not-selected` refusal's `admission`.
    pub extension: Option<(&'static str, serde_json::Value)>,
}

impl Problem {
    pub fn new(
        status: StatusCode,
        slug: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Problem {
            status,
            slug,
            title,
            detail: detail.into(),
            retry_after: None,
            headers: Vec::new(),
            extension: None,
        }
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }

    pub fn bad_gateway(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::BAD_GATEWAY,
            "bad-gateway",
            "Bad gateway",
            detail,
        )
    }

    pub fn gateway_timeout(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::GATEWAY_TIMEOUT,
            "gateway-timeout",
            "Gateway timeout",
            detail,
        )
    }

    /// The problem+json body: `{"detail":..,"status":..,"title":..,"type":"urn:flashgate:problem:<slug>"}`
    /// (members in this order, as a `serde_json::Value` map would write them), written
    /// into one buffer: this is every refused request's answer (a sold-out 409 above all),
    /// so it builds no intermediate map or strings.
    fn body(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(96 + self.detail.len() + self.title.len() + self.slug.len());
        b.push(b'{');
        if let Some((name, value)) = &self.extension {
            let _ = serde_json::to_writer(&mut b, name);
            b.push(b':');
            let _ = serde_json::to_writer(&mut b, value);
            b.push(b',');
        }
        b.extend_from_slice(br#""detail":"#);
        // Writing a &str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut b, self.detail.as_str());
        b.extend_from_slice(br#","status":"#);
        let _ = write!(b, "{}", self.status.as_u16());
        b.extend_from_slice(br#","title":"#);
        let _ = serde_json::to_writer(&mut b, self.title);
        // Slugs are this file's constants: lowercase letters, digits and hyphens, which
        // JSON needs no escape for.
        debug_assert!(self
            .slug
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'));
        b.extend_from_slice(br#","type":"urn:flashgate:problem:"#);
        b.extend_from_slice(self.slug.as_bytes());
        b.extend_from_slice(br#""}"#);
        b
    }

    pub fn into_response(self) -> Response<ResBody> {
        let mut res = Response::new(full(Bytes::from(self.body())));
        *res.status_mut() = self.status;
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(s) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        for (name, value) in self.headers {
            res.headers_mut().insert(name, value);
        }
        res
    }
}

// === the contract's slugs (docs/api.md lists them) ===

impl Problem {
    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "Unauthenticated",
            detail,
        )
    }
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many requests",
            "rate limit exceeded; retry later",
        )
        .retry_after(retry_after_secs)
    }
    pub fn not_started(secs_to_start: u64) -> Self {
        Problem::new(
            StatusCode::FORBIDDEN,
            "not-started",
            "Campaign not started",
            "the campaign has not started yet",
        )
        .retry_after(secs_to_start)
    }
    pub fn ended() -> Self {
        Problem::new(
            StatusCode::GONE,
            "ended",
            "Campaign ended",
            "the campaign has ended",
        )
    }
    pub fn sold_out() -> Self {
        Problem::new(
            StatusCode::CONFLICT,
            "sold-out",
            "Sold out",
            "the item is sold out",
        )
    }
    pub fn limit_reached(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::CONFLICT,
            "limit-reached",
            "Limit reached",
            detail,
        )
    }
    pub fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad request",
            detail,
        )
    }
    pub fn payload_too_large(max: usize) -> Self {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "bad-request",
            "Payload too large",
            format!("body exceeds {max} bytes"),
        )
    }
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
            detail,
        )
        .retry_after(1)
    }
    pub fn not_selected(admission: serde_json::Value) -> Self {
        let mut p = Problem::new(
            StatusCode::FORBIDDEN,
            "not-selected",
            "Not selected",
            "only users selected by the campaign's draw may buy; `admission.status` says where you stand",
        );
        p.extension = Some(("admission", admission));
        p
    }
    pub fn entries_closed() -> Self {
        Problem::new(
            StatusCode::GONE,
            "entries-closed",
            "Entries closed",
            "entries closed when the draw was made, at the campaign's start",
        )
    }
    pub fn paused() -> Self {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "paused",
            "Campaign paused",
            "the campaign is paused by an operator",
        )
        .retry_after(5)
    }
    pub fn not_pending() -> Self {
        Problem::new(
            StatusCode::CONFLICT,
            "not-pending",
            "Not pending",
            "the order is no longer pending payment",
        )
    }
    pub fn amount_mismatch() -> Self {
        Problem::new(
            StatusCode::CONFLICT,
            "amount-mismatch",
            "Amount mismatch",
            "paid amount differs from the order amount",
        )
    }
    pub fn bad_signature(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "bad-signature",
            "Bad signature",
            detail,
        )
    }
    pub fn stock_conflict(remaining: i64) -> Self {
        Problem::new(
            StatusCode::CONFLICT,
            "stock-conflict",
            "Stock would go below zero",
            format!("remaining is {remaining}; the adjustment would make it negative"),
        )
    }
    /// 405 for a known path; `allow` lists the methods it takes.
    pub fn method_not_allowed(allow: &'static str) -> Self {
        let mut p = Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            format!("this path takes {allow}"),
        );
        p.headers
            .push((header::ALLOW, HeaderValue::from_static(allow)));
        p
    }
}

// === the map ===

impl From<SaleError> for Problem {
    fn from(e: SaleError) -> Self {
        use SaleError as E;
        match e {
            E::Overloaded => Problem::unavailable(e.to_string()),
            E::BadInput(b) => b.into(),
            E::Unauthenticated(_) => Problem::unauthenticated(e.to_string()),
            E::RateLimited(r) => {
                let mut p = Problem::rate_limited(r.retry_after_secs);
                p.headers.extend(r.headers());
                p
            }
            E::UnknownCampaign(_) | E::UnknownItem { .. } | E::UnknownOrder => {
                Problem::not_found(e.to_string())
            }
            E::Paused => Problem::paused(),
            E::NotStarted { secs_to_start } => Problem::not_started(secs_to_start),
            E::Ended => Problem::ended(),
            E::SoldOut => Problem::sold_out(),
            E::LimitReached { .. } => Problem::limit_reached(e.to_string()),
            E::IdempotencyKeyReused => Problem::bad_request(e.to_string()),
            E::NotPending => Problem::not_pending(),
            E::AmountMismatch => Problem::amount_mismatch(),
            E::BadSignature(_) => Problem::bad_signature(e.to_string()),
            E::StockConflict { remaining } => Problem::stock_conflict(remaining),
            E::Reload(_) => Problem::bad_request(e.to_string()),
            E::TooLate | E::AdmissionNotReady => Problem::unavailable(e.to_string()),
            E::NotSelected(r) => Problem::not_selected(serde_json::to_value(r).unwrap_or_default()),
            E::NoEntries(_) | E::NoEntry => Problem::not_found(e.to_string()),
            E::EntriesClosed => Problem::entries_closed(),
            E::Storage(_) => Problem::unavailable("order storage is unavailable; retry shortly"),
        }
    }
}

impl From<BadInput> for Problem {
    fn from(e: BadInput) -> Self {
        match e {
            BadInput::TooLarge { max } => Problem::payload_too_large(max),
            BadInput::Invalid(why) => Problem::bad_request(why),
        }
    }
}

impl From<ForwardError> for Problem {
    fn from(e: ForwardError) -> Self {
        use ForwardError as E;
        match e {
            E::ConnectMethod => Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
                e.to_string(),
            ),
            E::BadTarget | E::BadHost(_) | E::ClientBody => Problem::bad_request(e.to_string()),
            E::Unreachable | E::Failed | E::UnaskedSwitch => Problem::bad_gateway(e.to_string()),
            E::Timeout => Problem::gateway_timeout(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written body is byte for byte what a `serde_json::Value` map writes.
    #[test]
    fn body_matches_serde_json() {
        for p in [
            Problem::sold_out(),
            Problem::method_not_allowed("GET"),
            Problem::rate_limited(3),
            Problem::bad_request("a \"quoted\" \\ detail\nwith ünïcode and \u{1}"),
            Problem::not_selected(serde_json::json!({"mode": "raffle", "status": "waitlisted"})),
        ] {
            let expected = serde_json::json!({
                "type": format!("urn:flashgate:problem:{}", p.slug),
                "title": p.title,
                "status": p.status.as_u16(),
                "detail": p.detail,
            });
            let mut expected = expected.as_object().unwrap().clone();
            if let Some((name, value)) = &p.extension {
                expected.insert(name.to_string(), value.clone());
            }
            let expected = serde_json::Value::Object(expected).to_string();
            assert_eq!(String::from_utf8(p.body()).unwrap(), expected);
        }
    }
}
