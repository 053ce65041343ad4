//! HTTP surfaces: the router and one file per surface. No business logic lives here:
//! handlers parse requests, call the domain modules, and map results through `problem`.

pub mod problem;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};

/// The response body every handler returns: a full buffer or a streamed upstream body.
pub type ResBody = BoxBody<Bytes, hyper::Error>;

/// A complete in-memory body.
pub fn full(bytes: impl Into<Bytes>) -> ResBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}
