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
