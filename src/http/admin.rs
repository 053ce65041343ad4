//! The admin listener: metrics, health, the per-item ledger, reload, stock
//! adjustment, pause/resume, the outbox, the live status page. `/admin/*` needs the admin
//! token when one is set, as a Bearer token or as the password of HTTP Basic auth (so a
//! browser can open it).

use base64::Engine;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::problem::Problem;
use super::{full, json, json_of, Edge, ResBody};
use crate::core::{BadInput, SaleError};

/// An admin route with its parsed ids.
enum AdminRoute<'a> {
    Campaigns,
    StatusPage,
    Status,
    Reload,
    Outbox,
    ReplayDead,
    PauseAll(bool),
    Pause { campaign: &'a str, paused: bool },
    Stock { campaign: &'a str, sku: &'a str },
    Entries { campaign: &'a str },
}

fn admin_route<'a>(method: &Method, path: &'a str) -> Option<AdminRoute<'a>> {
    use AdminRoute as R;
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    Some(match (method, segments.as_slice()) {
        (&Method::GET, ["admin", "campaigns"]) => R::Campaigns,
        (&Method::GET, ["admin", "campaigns", campaign, "entries"]) => R::Entries { campaign },
        (&Method::GET, ["admin"] | ["admin", ""]) => R::StatusPage,
        (&Method::GET, ["admin", "status.json"]) => R::Status,
        (&Method::POST, ["admin", "reload"]) => R::Reload,
        (&Method::GET, ["admin", "outbox"]) => R::Outbox,
        (&Method::POST, ["admin", "outbox", "replay-dead"]) => R::ReplayDead,
        (&Method::POST, ["admin", "pause"]) => R::PauseAll(true),
        (&Method::POST, ["admin", "resume"]) => R::PauseAll(false),
        (&Method::POST, ["admin", "campaigns", campaign, action @ ("pause" | "resume")]) => {
            R::Pause {
                campaign,
                paused: *action == "pause",
            }
        }
        (&Method::POST, ["admin", "campaigns", campaign, "items", sku, "stock"]) => {
            R::Stock { campaign, sku }
        }
        _ => return None,
    })
}

pub async fn handle(edge: &Edge, req: Request<Incoming>) -> Response<ResBody> {
    let path = req.uri().path().to_owned();
    match (req.method(), path.as_str()) {
        (&Method::GET, "/metrics") => {
            let mut res = Response::new(full(edge.sale.metrics().render()));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            return res;
        }
        (&Method::GET, "/healthz") => return json(StatusCode::OK, br#"{"status":"ok"}"#.to_vec()),
        (&Method::GET, "/readyz") => {
            return match edge.sale.ready().await {
                Ok(()) => json(StatusCode::OK, br#"{"status":"ready"}"#.to_vec()),
                Err(e) => Problem::unavailable(e.to_string()).into_response(),
            }
        }
        _ => {}
    }
    if !path.starts_with("/admin") {
        return Problem::not_found("no such admin endpoint").into_response();
    }
    if !authorized(edge, req.headers()) {
        let mut p = Problem::unauthenticated("admin token required");
        p.headers.push((
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"flashgate\""),
        ));
        return p.into_response();
    }
    let Some(route) = admin_route(req.method(), &path) else {
        return Problem::not_found("no such admin endpoint").into_response();
    };
    run(edge, route, req)
        .await
        .unwrap_or_else(Problem::into_response)
}

async fn run(
    edge: &Edge,
    route: AdminRoute<'_>,
    req: Request<Incoming>,
) -> Result<Response<ResBody>, Problem> {
    let sale = &edge.sale;
    let ok = |v: serde_json::Value| json_of(StatusCode::OK, &v);
    Ok(match route {
        AdminRoute::Campaigns => ok(serde_json::json!({"campaigns": sale.ledgers().await?})),
        AdminRoute::StatusPage => status_page(),
        AdminRoute::Status => ok(status(edge).await?),
        AdminRoute::Reload => match edge.reload().await {
            Ok(r) => json_of(StatusCode::OK, &r),
            Err(e) => {
                tracing::error!(error = %e, "reload refused; the running campaigns are unchanged");
                return Err(e.into());
            }
        },
        AdminRoute::Outbox => json_of(StatusCode::OK, &sale.outbox().await?),
        AdminRoute::Entries { campaign } => {
            json_of(StatusCode::OK, &sale.entries_export(campaign).await?)
        }
        AdminRoute::ReplayDead => ok(serde_json::json!({"replayed": sale.replay_dead().await?})),
        AdminRoute::PauseAll(paused) => {
            let campaigns = sale.set_paused_all(paused).await?;
            ok(serde_json::json!({"campaigns": campaigns, "paused": paused}))
        }
        AdminRoute::Pause { campaign, paused } => {
            sale.set_paused(campaign, paused).await?;
            ok(serde_json::json!({"campaign": campaign, "paused": paused}))
        }
        AdminRoute::Stock { campaign, sku } => {
            let (parts, body) = req.into_parts();
            let raw = edge.read_body(&parts.headers, body).await?;
            let d: StockDelta = crate::json::object(&raw)
                .map_err(|e| BadInput::invalid(format!("expected {{\"delta\": n}}: {e}")))?;
            let remaining = sale.adjust_stock(campaign, sku, d.delta).await?;
            ok(serde_json::json!({
                "campaign": campaign, "sku": sku, "delta": d.delta, "remaining": remaining,
            }))
        }
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StockDelta {
    delta: i64,
}

fn authorized(edge: &Edge, headers: &http::HeaderMap) -> bool {
    let Some(token) = edge.admin_token.as_deref() else {
        return true;
    };
    let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let given = if let Some(b) = auth.strip_prefix("Bearer ") {
        b.trim().as_bytes().to_vec()
    } else if let Some(b) = auth.strip_prefix("Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .unwrap_or_default();
        match decoded.iter().position(|&c| c == b':') {
            Some(i) => decoded[i + 1..].to_vec(),
            None => return false,
        }
    } else {
        return false;
    };
    given.ct_eq(token.as_bytes()).into()
}

/// The live status page: one self-contained HTML file, compiled into the binary.
fn status_page() -> Response<ResBody> {
    let mut res = Response::new(full(include_str!("../../assets/status.html")));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// A counter's value as the integer it is (counters hold whole, non-negative numbers).
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn whole(v: f64) -> u64 {
    v as u64
}

/// What the status page polls: the ledger, the outbox and the request counters.
async fn status(edge: &Edge) -> Result<serde_json::Value, SaleError> {
    let sale = &edge.sale;
    let mut requests = Vec::new();
    for family in sale.metrics().requests_family() {
        for m in family.get_metric() {
            let label = |n: &str| {
                m.get_label()
                    .iter()
                    .find(|l| l.name() == n)
                    .map(|l| l.value().to_string())
            };
            requests.push(serde_json::json!({
                "route": label("route"),
                "outcome": label("outcome"),
                "total": whole(m.get_counter().get_value()),
            }));
        }
    }
    let now = crate::clock::unix_ms(sale.clock().now());
    Ok(serde_json::json!({
        "server_time": crate::stock::order::rfc3339_ms(now),
        "campaigns": sale.ledgers().await?,
        "outbox": sale.outbox().await?,
        "requests": requests,
    }))
}
