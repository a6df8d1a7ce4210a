//! The admin listener: the emergency brake ("nödbroms"), the audit trail, metrics and
//! health. It binds its own address (loopback by default). `/healthz`, `/readyz` and
//! `/metrics` answer without credentials; everything under `/admin/v1` needs an admin
//! bearer token, compared by SHA-256 hash in constant time like API keys.

use actix_web::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::AppState;
use crate::domain::controls::Suspension;
use crate::domain::{DomainError, TenantId};
use crate::ops::metrics;

/// `/healthz`: the process is alive.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

/// `/readyz`: the store answers a write-and-read probe.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    // Federated-TLS clients cannot be served without trusted metadata.
    if let Some(f) = &state.trust.federation {
        if !f.freshness().trusted {
            return HttpResponse::ServiceUnavailable()
                .content_type("text/plain")
                .insert_header(("Retry-After", "60"))
                .body("federation metadata not loaded or expired\n");
        }
    }
    let store = state.provisioning.store().clone();
    let probe = web::block(move || store.check_health()).await;
    match probe {
        Ok(Ok(())) => HttpResponse::Ok()
            .content_type("text/plain")
            .body("ready\n"),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "readiness probe: store not writable");
            not_ready()
        }
        Err(_) => not_ready(),
    }
}

fn not_ready() -> HttpResponse {
    HttpResponse::ServiceUnavailable()
        .content_type("text/plain")
        .insert_header(("Retry-After", "5"))
        .body("store unavailable\n")
}

async fn metrics_text(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.ops.metrics.render())
}

/// Routes of the admin listener.
pub fn configure(state: std::sync::Arc<AppState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(web::Data::from(state))
            .app_data(
                web::JsonConfig::default()
                    .limit(16 * 1024)
                    .error_handler(|e, _| {
                        actix_web::error::InternalError::from_response(
                            "",
                            problem(StatusCode::BAD_REQUEST, &format!("bad JSON body: {e}")),
                        )
                        .into()
                    }),
            )
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics_text))
            .service(
                web::scope("/admin/v1")
                    .route("/status", web::get().to(status))
                    .route("/read-only", web::post().to(set_read_only))
                    .route("/read-only", web::delete().to(clear_read_only))
                    .route("/tenants/{tenant}/writes/suspend", web::post().to(suspend))
                    .route("/tenants/{tenant}/writes/resume", web::post().to(resume))
                    .route("/tenants/{tenant}/logins/freeze", web::post().to(freeze))
                    .route(
                        "/tenants/{tenant}/logins/unfreeze",
                        web::post().to(unfreeze),
                    )
                    .route("/tenants/{tenant}/audit", web::get().to(audit))
                    .default_service(web::to(|| async {
                        problem(StatusCode::NOT_FOUND, "no such admin endpoint")
                    })),
            );
    }
}

fn problem(status: StatusCode, detail: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/problem+json")
        .body(
            json!({
                "status": status.as_u16(),
                "title": status.canonical_reason().unwrap_or(""),
                "detail": detail,
            })
            .to_string(),
        )
}

/// An admin call refused or failed.
struct AdminError(Box<HttpResponse>);

impl From<DomainError> for AdminError {
    fn from(e: DomainError) -> Self {
        AdminError(Box::new(match e {
            DomainError::NotFound => problem(StatusCode::NOT_FOUND, "no such tenant"),
            DomainError::Unavailable => {
                problem(StatusCode::SERVICE_UNAVAILABLE, "store unavailable")
            }
            _ => problem(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
        }))
    }
}

type Answer = Result<HttpResponse, AdminError>;

fn answer(r: Answer) -> HttpResponse {
    r.unwrap_or_else(|e| *e.0)
}

/// The operator label of the presented admin token.
fn operator(state: &AppState, req: &HttpRequest) -> Result<String, AdminError> {
    let unauthorized = || {
        let mut r = problem(StatusCode::UNAUTHORIZED, "admin bearer token required");
        r.headers_mut().insert(
            WWW_AUTHENTICATE,
            actix_web::http::header::HeaderValue::from_static("Bearer realm=\"skolgrind-admin\""),
        );
        AdminError(Box::new(r))
    };
    let token = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(unauthorized)?;
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let mut found = subtle::Choice::from(0);
    let mut index = 0u64;
    for (i, t) in state.ops.config.admin_tokens.iter().enumerate() {
        let eq = t.hash.ct_eq(&digest);
        index.conditional_assign(&(i as u64), eq);
        found |= eq;
    }
    if !bool::from(found) {
        tracing::warn!("admin call with a wrong or unknown token refused");
        return Err(unauthorized());
    }
    usize::try_from(index)
        .ok()
        .and_then(|i| state.ops.config.admin_tokens.get(i))
        .map(|t| t.label.clone())
        .ok_or_else(unauthorized)
}

fn tenant_of(state: &AppState, raw: &str) -> Result<TenantId, AdminError> {
    TenantId::parse(raw)
        .ok()
        .filter(|t| state.auth.tenant(t).is_some())
        .ok_or_else(|| AdminError(Box::new(problem(StatusCode::NOT_FOUND, "no such tenant"))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    reason: String,
}

/// A human-readable reason: 1–500 characters, no control characters.
fn reason_of(body: Option<web::Json<ReasonBody>>) -> Result<String, AdminError> {
    let r = body.map(|b| b.into_inner().reason).unwrap_or_default();
    let r = r.trim();
    if r.is_empty() || r.chars().count() > 500 || r.chars().any(char::is_control) {
        return Err(AdminError(Box::new(problem(
            StatusCode::BAD_REQUEST,
            "a JSON body {\"reason\": \"…\"} with 1–500 printable characters is required",
        ))));
    }
    Ok(r.to_owned())
}

fn suspension(reason: String, by: String) -> Suspension {
    Suspension {
        reason,
        since: Utc::now(),
        by,
    }
}

fn tenant_json(state: &AppState, t: &TenantId) -> Value {
    let c = state.provisioning.controls().tenant(t);
    json!({
        "tenant": t.as_str(),
        "writes_suspended": c.writes_suspended,
        "logins_frozen": c.logins_frozen,
    })
}

fn refresh_gauges(state: &AppState) {
    let ids: Vec<TenantId> = state.auth.tenants().map(|t| t.id.clone()).collect();
    metrics::controls(state.provisioning.controls(), &ids);
}

async fn status(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    answer(
        async {
            operator(&state, &req)?;
            let mut ids: Vec<&TenantId> = state.auth.tenants().map(|t| &t.id).collect();
            ids.sort_by(|a, b| a.as_str().cmp(b.as_str()));
            let tenants: Vec<Value> = ids.into_iter().map(|t| tenant_json(&state, t)).collect();
            Ok(HttpResponse::Ok().json(json!({
                "read_only": state.provisioning.controls().global().read_only,
                "tenants": tenants,
            })))
        }
        .await,
    )
}

#[derive(Clone, Copy)]
enum Switch {
    Writes,
    Logins,
}

async fn set_tenant(
    state: &AppState,
    req: &HttpRequest,
    raw: &str,
    what: Switch,
    on: Option<Option<web::Json<ReasonBody>>>,
) -> Answer {
    let by = operator(state, req)?;
    let t = tenant_of(state, raw)?;
    let s = match on {
        Some(body) => Some(suspension(reason_of(body)?, by.clone())),
        None => None,
    };
    let reason = s.as_ref().map(|s| s.reason.clone());
    state
        .provisioning
        .controls()
        .update_tenant(&t, |c| match what {
            Switch::Writes => c.writes_suspended = s,
            Switch::Logins => c.logins_frozen = s,
        })
        .await?;
    refresh_gauges(state);
    let action = match (what, reason.is_some()) {
        (Switch::Writes, true) => "writes suspended",
        (Switch::Writes, false) => "writes resumed",
        (Switch::Logins, true) => "logins frozen",
        (Switch::Logins, false) => "logins unfrozen",
    };
    tracing::warn!(tenant = %t, operator = %by, reason = reason.as_deref().unwrap_or("-"), "operator control: {action}");
    Ok(HttpResponse::Ok().json(tenant_json(state, &t)))
}

async fn suspend(
    state: web::Data<AppState>,
    req: HttpRequest,
    tenant: web::Path<String>,
    body: Option<web::Json<ReasonBody>>,
) -> HttpResponse {
    answer(set_tenant(&state, &req, &tenant, Switch::Writes, Some(body)).await)
}

async fn resume(
    state: web::Data<AppState>,
    req: HttpRequest,
    tenant: web::Path<String>,
) -> HttpResponse {
    answer(set_tenant(&state, &req, &tenant, Switch::Writes, None).await)
}

async fn freeze(
    state: web::Data<AppState>,
    req: HttpRequest,
    tenant: web::Path<String>,
    body: Option<web::Json<ReasonBody>>,
) -> HttpResponse {
    answer(set_tenant(&state, &req, &tenant, Switch::Logins, Some(body)).await)
}

async fn unfreeze(
    state: web::Data<AppState>,
    req: HttpRequest,
    tenant: web::Path<String>,
) -> HttpResponse {
    answer(set_tenant(&state, &req, &tenant, Switch::Logins, None).await)
}

async fn global(
    state: &AppState,
    req: &HttpRequest,
    on: Option<Option<web::Json<ReasonBody>>>,
) -> Answer {
    let by = operator(state, req)?;
    let s = match on {
        Some(body) => Some(suspension(reason_of(body)?, by.clone())),
        None => None,
    };
    let reason = s.as_ref().map(|s| s.reason.clone());
    let g = state
        .provisioning
        .controls()
        .update_global(|g| g.read_only = s)
        .await?;
    refresh_gauges(state);
    match &reason {
        Some(r) => {
            tracing::warn!(operator = %by, reason = %r, "operator control: global read-only set")
        }
        None => tracing::warn!(operator = %by, "operator control: global read-only cleared"),
    }
    Ok(HttpResponse::Ok().json(json!({ "read_only": g.read_only })))
}

async fn set_read_only(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: Option<web::Json<ReasonBody>>,
) -> HttpResponse {
    answer(global(&state, &req, Some(body)).await)
}

async fn clear_read_only(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    answer(global(&state, &req, None).await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    /// Cursor: entries with a sequence number above this (`next_cursor` of the last page).
    #[serde(default)]
    after: u64,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    since: Option<DateTime<Utc>>,
    #[serde(default)]
    until: Option<DateTime<Utc>>,
}

const AUDIT_DEFAULT_PAGE: usize = 100;
const AUDIT_MAX_PAGE: usize = 1000;

async fn audit(
    state: web::Data<AppState>,
    req: HttpRequest,
    tenant: web::Path<String>,
) -> HttpResponse {
    answer(
        async {
            operator(&state, &req)?;
            let t = tenant_of(&state, &tenant)?;
            let q = web::Query::<AuditQuery>::from_query(req.query_string()).map_err(|e| {
                AdminError(Box::new(problem(
                    StatusCode::BAD_REQUEST,
                    &format!("bad query: {e}"),
                )))
            })?;
            let limit = q
                .limit
                .unwrap_or(AUDIT_DEFAULT_PAGE)
                .clamp(1, AUDIT_MAX_PAGE);
            let store = state.provisioning.store().clone();
            let (since, until, mut after) = (q.since, q.until, q.after);
            let page = web::block(move || -> Result<_, DomainError> {
                let mut out = Vec::new();
                let mut more = true;
                while out.len() < limit && more {
                    let batch = store.audit(&t, after, limit)?;
                    let n = batch.len();
                    more = n == limit;
                    for (i, r) in batch.into_iter().enumerate() {
                        if until.is_some_and(|u| r.at > u) {
                            // The trail is in time order: nothing later can match.
                            more = false;
                            break;
                        }
                        after = r.seq;
                        if since.is_none_or(|s| r.at >= s) {
                            out.push(r);
                            if out.len() == limit {
                                more = more || i + 1 < n;
                                break;
                            }
                        }
                    }
                }
                Ok((out, more.then_some(after)))
            })
            .await
            .map_err(|_| AdminError::from(DomainError::Internal))??;
            let (entries, next) = page;
            Ok(HttpResponse::Ok().json(json!({
                "entries": entries,
                "next_cursor": next,
            })))
        }
        .await,
    )
}
