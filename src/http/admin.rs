//! The admin listener (SPEC §7): metrics, health, the per-item ledger, reload, stock
//! adjustment, pause/resume, the outbox. `/admin/*` needs the admin token when one is set,
//! as a Bearer token or as the password of HTTP Basic auth (so a browser can open it).

use std::sync::atomic::Ordering;

use base64::Engine;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

use super::problem::Problem;
use super::{full, json, read_body, segment, App, ResBody};
use crate::config::{load_campaigns, ConfigError};

/// How many dead letters one replay call moves per campaign.
const REPLAY_BATCH: usize = 10_000;

pub async fn handle(app: &App, req: Request<Incoming>) -> Response<ResBody> {
    let path = req.uri().path().to_string();
    match (req.method(), path.as_str()) {
        (&Method::GET, "/metrics") => {
            let mut res = Response::new(full(app.metrics.render()));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            return res;
        }
        (&Method::GET, "/healthz") => return json(StatusCode::OK, br#"{"status":"ok"}"#.to_vec()),
        (&Method::GET, "/readyz") => {
            return match app.store.ready().await {
                Ok(()) if !app.stock_loaded.load(Ordering::Relaxed) => {
                    Problem::unavailable("loading campaign stock").into_response()
                }
                Ok(()) => json(StatusCode::OK, br#"{"status":"ready"}"#.to_vec()),
                Err(e) => Problem::unavailable(e.to_string()).into_response(),
            }
        }
        _ => {}
    }
    if !path.starts_with("/admin") {
        return Problem::not_found("no such admin endpoint").into_response();
    }
    if !authorized(app, req.headers()) {
        let mut res = Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "Unauthenticated",
            "admin token required",
        )
        .into_response();
        res.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"flashgate\""),
        );
        return res;
    }
    let result = match (req.method(), path.as_str()) {
        (&Method::GET, "/admin/campaigns") => campaigns_json(app)
            .await
            .map(|v| json(StatusCode::OK, v.to_string().into_bytes())),
        (&Method::GET, "/admin/") | (&Method::GET, "/admin") => Ok(status_page()),
        (&Method::GET, "/admin/status.json") => status(app).await,
        (&Method::POST, "/admin/reload") => reload(app)
            .await
            .map_err(|e| Problem::bad_request(e.to_string()))
            .map(|n| {
                json(
                    StatusCode::OK,
                    serde_json::json!({"reloaded": n}).to_string().into_bytes(),
                )
            }),
        (&Method::GET, "/admin/outbox") => outbox_json(app)
            .await
            .map(|v| json(StatusCode::OK, v.to_string().into_bytes())),
        (&Method::POST, "/admin/outbox/replay-dead") => replay_dead(app).await,
        (&Method::POST, p) if p.starts_with("/admin/campaigns/") => campaign_action(app, req).await,
        _ => Err(Problem::not_found("no such admin endpoint")),
    };
    result.unwrap_or_else(Problem::into_response)
}

fn authorized(app: &App, headers: &http::HeaderMap) -> bool {
    let Some(token) = app.admin_token.as_deref() else {
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
    constant_time_eq(&given, token.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Re-reads every campaign file; a bad file leaves the running set untouched.
/// Stock of new items is loaded into Redis (only if absent); existing stock is never re-added.
pub async fn reload(app: &App) -> Result<usize, ConfigError> {
    let campaigns = load_campaigns(&app.campaigns_dir)?;
    app.registry.replace(&campaigns);
    if let Err(e) = load_stock(app).await {
        tracing::warn!(error = %e, "stock not loaded yet; the first buy of each item loads it");
    }
    tracing::info!(campaigns = campaigns.len(), "campaigns reloaded");
    Ok(campaigns.len())
}

/// Loads the running campaigns' stock into Redis where it is absent (never re-adds it).
pub async fn load_stock(app: &App) -> Result<(), crate::stock::StoreError> {
    app.store.remember_campaigns(&app.registry.ids()).await?;
    for c in app.registry.snapshot().values() {
        for i in &c.items {
            app.store.init_item(&c.keys, &i.sku, i.stock).await?;
        }
    }
    Ok(())
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

/// What the status page polls: the ledger, the outbox and the request counters.
async fn status(app: &App) -> Result<Response<ResBody>, Problem> {
    let campaigns = campaigns_json(app).await?;
    let outbox = outbox_json(app).await?;
    let mut requests = Vec::new();
    for family in app.metrics.requests_family() {
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
                "total": m.get_counter().get_value() as u64,
            }));
        }
    }
    let now = time::OffsetDateTime::now_utc();
    let body = serde_json::json!({
        "server_time": crate::stock::order::rfc3339_ms((now.unix_timestamp_nanos() / 1_000_000) as i64),
        "campaigns": campaigns["campaigns"],
        "outbox": outbox,
        "requests": requests,
    });
    Ok(json(StatusCode::OK, body.to_string().into_bytes()))
}

async fn campaigns_json(app: &App) -> Result<serde_json::Value, Problem> {
    let snapshot = app.registry.snapshot();
    let mut ids: Vec<_> = snapshot.keys().collect();
    ids.sort();
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let c = &snapshot[id];
        let keys: Vec<String> = c.items.iter().map(|i| i.key.clone()).collect();
        let stats = app.store.item_stats(&keys).await?;
        let items: Vec<_> = c
            .items
            .iter()
            .zip(stats)
            .map(|(i, s)| {
                let mut v = serde_json::to_value(s).unwrap_or_default();
                v["sku"] = i.sku.clone().into();
                v["price_cents"] = i.price_cents.into();
                v["ledger_ok"] = s.ledger_holds().into();
                v
            })
            .collect();
        out.push(serde_json::json!({
            "id": c.cfg.id,
            "name": c.cfg.name,
            "paused": c.paused.load(Ordering::Relaxed),
            "per_user_limit": c.cfg.per_user_limit,
            "items": items,
        }));
    }
    Ok(serde_json::json!({"campaigns": out}))
}

async fn outbox_json(app: &App) -> Result<serde_json::Value, Problem> {
    let (mut pending, mut dead, mut per) = (0, 0, Vec::new());
    for (id, keys) in app.store.known_campaigns(app.registry.ids()).await? {
        let (p, d) = app.store.outbox_counts(&keys).await?;
        pending += p;
        dead += d;
        per.push(serde_json::json!({"campaign": id, "pending": p, "dead": d}));
    }
    Ok(serde_json::json!({"pending": pending, "dead": dead, "campaigns": per}))
}

async fn replay_dead(app: &App) -> Result<Response<ResBody>, Problem> {
    let mut moved = 0;
    for (_, keys) in app.store.known_campaigns(app.registry.ids()).await? {
        moved += app.store.replay_dead(&keys, REPLAY_BATCH).await?;
    }
    Ok(json(
        StatusCode::OK,
        serde_json::json!({"replayed": moved})
            .to_string()
            .into_bytes(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StockDelta {
    delta: i64,
}

/// `/admin/campaigns/{id}/pause|resume` and `/admin/campaigns/{id}/items/{sku}/stock`.
async fn campaign_action(app: &App, req: Request<Incoming>) -> Result<Response<ResBody>, Problem> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    let id = segment(path, 2);
    let c = app
        .registry
        .get(id)
        .ok_or_else(|| Problem::not_found(format!("no campaign {id:?}")))?;
    let action = (
        segment(path, 3),
        segment(path, 4),
        segment(path, 5),
        segment(path, 6),
    );
    match action {
        ("pause", "", _, _) | ("resume", "", _, _) => {
            let paused = action.0 == "pause";
            app.store.set_paused(&c.keys, paused).await?;
            c.paused.store(paused, Ordering::Relaxed);
            tracing::info!(campaign = %id, paused, "campaign pause switch");
            Ok(json(
                StatusCode::OK,
                serde_json::json!({"campaign": id, "paused": paused})
                    .to_string()
                    .into_bytes(),
            ))
        }
        ("items", sku, "stock", "") => {
            let item = c
                .item(sku)
                .ok_or_else(|| Problem::not_found(format!("no item {sku:?}")))?;
            let raw = read_body(app, &parts.headers, body).await?;
            let d: StockDelta = serde_json::from_slice(&raw)
                .map_err(|e| Problem::bad_request(format!("expected {{\"delta\": n}}: {e}")))?;
            match app
                .store
                .adjust(&c.keys, &item.sku, d.delta, item.stock)
                .await?
            {
                Ok(remaining) => {
                    item.remaining.store(remaining, Ordering::Relaxed);
                    tracing::info!(campaign = %id, sku, delta = d.delta, remaining, "stock adjusted");
                    Ok(json(
                        StatusCode::OK,
                        serde_json::json!({"campaign": id, "sku": sku, "delta": d.delta, "remaining": remaining})
                            .to_string()
                            .into_bytes(),
                    ))
                }
                Err(remaining) => Err(Problem::stock_conflict(remaining)),
            }
        }
        _ => Err(Problem::not_found("no such admin endpoint")),
    }
}
