//! The ONE place that maps domain errors to an HTTP status and RFC 9457 problem+json.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use super::{full, ResBody};

/// A problem+json response under construction.
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub slug: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub retry_after: Option<u64>,
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

    pub fn into_response(self) -> Response<ResBody> {
        let body = serde_json::json!({
            "type": format!("urn:flashgate:problem:{}", self.slug),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        let mut res = Response::new(full(Bytes::from(body.to_string())));
        *res.status_mut() = self.status;
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(s) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        res
    }
}

// === the contract's slugs (SPEC §4, §5, §7) ===

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
    pub fn method_not_allowed() -> Self {
        Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            "",
        )
    }
}

impl From<crate::stock::StoreError> for Problem {
    fn from(e: crate::stock::StoreError) -> Self {
        tracing::warn!(error = %e, "redis call failed; failing closed");
        Problem::unavailable("order storage is unavailable; retry shortly")
    }
}
