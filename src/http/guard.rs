//! Load protection on the public listener, in one middleware and one choke point:
//!
//! * [`middleware`] (before routing): refuses IPs that exhausted their unauthenticated
//!   quota (429), caps requests in flight (503), bounds each request's time (503), then
//!   after the handler adds the `X-RateLimit-*` headers of the authenticated tenant's quota,
//!   counts unauthenticated calls against the client IP and records request metrics.
//! * [`admit`] (called by `AppState::authenticate` after the credential check): takes one
//!   call from the tenant's read or write quota and tags the request with the tenant.
//!
//! Answers made here are rendered by [`reject`], which picks the wire format by path.

use std::time::Instant;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse, ResponseError};

use super::{access_log, egil::EgilError, AppState};
use crate::domain::{DomainError, TenantId};
use crate::ops::metrics;
use crate::ops::ratelimit::{Class, RateInfo};

/// The tenant a request authenticated as.
#[derive(Clone)]
pub struct RequestTenant(pub TenantId);

/// Rate-limits an authenticated call and tags the request with its tenant (logs, metrics,
/// headers). `Err(RateLimited)` when the tenant's quota for this class is used up.
pub fn admit(state: &AppState, req: &HttpRequest, tenant: &TenantId) -> Result<(), DomainError> {
    access_log::set_tenant(req, tenant.as_str());
    tracing::Span::current().record("tenant", tenant.as_str());
    let class = Class::of_method(req.method().as_str());
    let info = state.ops.tenants.check(tenant, class);
    {
        let mut ext = req.extensions_mut();
        ext.insert(RequestTenant(tenant.clone()));
        ext.insert(info);
    }
    match info.retry_after_secs {
        None => Ok(()),
        Some(retry_after_secs) => {
            metrics::rate_limited(tenant.as_str(), class.as_str());
            tracing::info!(tenant = %tenant, class = class.as_str(), "rate limited");
            Err(DomainError::RateLimited { retry_after_secs })
        }
    }
}

/// A product (a login API caller) the request authenticated as. Product calls are
/// authenticated, so they never draw from the client IP's unauthenticated quota.
#[derive(Clone)]
pub struct RequestProduct(pub String);

/// Tags a request authenticated by a product's credential (logs, the IP quota) and takes
/// `lookups` (if any) from the product's quota. `Err(RateLimited)` when they do not fit.
pub fn admit_product(
    state: &AppState,
    req: &HttpRequest,
    product: &str,
    lookups: u32,
) -> Result<(), DomainError> {
    access_log::set_tenant(req, &format!("product:{product}"));
    req.extensions_mut()
        .insert(RequestProduct(product.to_owned()));
    if lookups == 0 {
        return Ok(());
    }
    let info = state.ops.products.check(product, lookups);
    req.extensions_mut().insert(info);
    match info.retry_after_secs {
        None => Ok(()),
        Some(retry_after_secs) => {
            metrics::rate_limited(&format!("product:{product}"), "lookup");
            tracing::info!(product = %product, lookups, "rate limited");
            Err(DomainError::RateLimited { retry_after_secs })
        }
    }
}

/// An answer made outside the handlers, in the wire format of the path's protocol:
/// SCIM errors under `/egil`, a small `application/problem+json` body elsewhere.
pub fn reject(path: &str, e: DomainError) -> HttpResponse {
    if metrics::protocol_of(path) == "egil_scim" {
        return EgilError(e).error_response();
    }
    let (status, retry, detail) = match &e {
        DomainError::RateLimited { retry_after_secs } => (
            StatusCode::TOO_MANY_REQUESTS,
            Some(*retry_after_secs),
            e.to_string(),
        ),
        DomainError::Suspended {
            retry_after_secs, ..
        } => (
            StatusCode::SERVICE_UNAVAILABLE,
            Some(*retry_after_secs),
            e.to_string(),
        ),
        DomainError::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            Some(5),
            "temporarily unavailable; retry later".to_owned(),
        ),
        DomainError::Unauthorized => (StatusCode::UNAUTHORIZED, None, e.to_string()),
        DomainError::NotFound => (StatusCode::NOT_FOUND, None, e.to_string()),
        DomainError::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, None, e.to_string()),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            "internal error".to_owned(),
        ),
    };
    let body = serde_json::json!({
        "status": status.as_u16(),
        "title": status.canonical_reason().unwrap_or(""),
        "detail": detail,
    });
    let mut res = HttpResponse::build(status)
        .content_type("application/problem+json")
        .body(body.to_string());
    if let Some(s) = retry.and_then(|s| HeaderValue::from_str(&s.to_string()).ok()) {
        res.headers_mut().insert(RETRY_AFTER, s);
    }
    res
}

fn is_probe(path: &str) -> bool {
    path == "/healthz" || path == "/readyz"
}

fn rate_headers(res: &mut HttpResponse<impl MessageBody>, info: &RateInfo) {
    let h = res.headers_mut();
    for (name, value) in [
        ("x-ratelimit-limit", info.limit.to_string()),
        ("x-ratelimit-remaining", info.remaining.to_string()),
        ("x-ratelimit-reset", info.reset_header()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(HeaderName::from_static(name), v);
        }
    }
    if let Some(s) = info
        .retry_after_secs
        .and_then(|s| HeaderValue::from_str(&s.to_string()).ok())
    {
        h.insert(RETRY_AFTER, s);
    }
}

pub async fn middleware<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    let ops = &state.ops;
    let start = Instant::now();
    let path = req.path().to_owned();
    let protocol = metrics::protocol_of(&path);
    let probe = is_probe(&path);
    let ip = req.peer_addr().map(|a| a.ip());
    if probe {
        // Probes are cheap and must answer under load: no limits, no cap.
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    }

    // Refuse cheaply, before any authentication or parsing work.
    let refused = if let Some(secs) = ip.and_then(|ip| ops.ips.blocked(ip)) {
        metrics::rate_limited("-", "unauthenticated");
        Some(DomainError::RateLimited {
            retry_after_secs: secs,
        })
    } else {
        None
    };
    let permit = match refused {
        Some(_) => None,
        None => match ops.in_flight.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                metrics::load_shed("in_flight");
                tracing::warn!("in-flight cap reached, shedding a request");
                None
            }
        },
    };
    let handled = refused.is_none() && permit.is_some();
    // No clone of the request may be held here: routing needs it unshared.
    let mut res = match (refused, permit) {
        (Some(e), _) => req.into_response(reject(&path, e)).map_into_right_body(),
        (None, None) => req
            .into_response(reject(&path, DomainError::Unavailable))
            .map_into_right_body(),
        (None, Some(permit)) => {
            let out = tokio::time::timeout(ops.config.request_timeout, next.call(req)).await;
            drop(permit);
            match out {
                Ok(res) => res?.map_into_left_body(),
                Err(_) => {
                    // The request is gone with the dropped future: answer through the
                    // error path (the dispatcher renders the response).
                    metrics::load_shed("timeout");
                    metrics::request("-", protocol, "timeout", 503, start.elapsed().as_secs_f64());
                    tracing::warn!("request timed out");
                    return Err(actix_web::error::InternalError::from_response(
                        "request timed out",
                        reject(&path, DomainError::Unavailable),
                    )
                    .into());
                }
            }
        }
    };

    let (tenant, product, info) = {
        let ext = res.request().extensions();
        (
            ext.get::<RequestTenant>().map(|t| t.0.clone()),
            ext.get::<RequestProduct>().is_some(),
            ext.get::<RateInfo>().copied(),
        )
    };
    if let Some(info) = info {
        rate_headers(res.response_mut(), &info);
    }
    if tenant.is_none() && !product && handled {
        // Every handled call that did not authenticate draws from its IP's quota (calls
        // refused or shed above do not: they cost nothing).
        if let Some(ip) = ip {
            if ops.ips.count(ip).is_some() {
                tracing::info!("client IP exhausted its unauthenticated quota");
            }
        }
    }
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    metrics::request(
        tenant.as_ref().map_or("-", |t| t.as_str()),
        protocol,
        &route,
        res.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    Ok(res)
}
