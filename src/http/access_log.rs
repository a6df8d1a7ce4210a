//! Request ids and the access log: one line per request with method, route pattern (never
//! the raw path or query, which could hold personal data such as a filtered userName),
//! status, latency, tenant and request id. The id is also sent as `X-Request-Id`.

use std::time::Instant;

use tracing::Instrument;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpRequest};

#[derive(Clone)]
struct TenantTag(String);

/// Records the authenticated tenant for the access log line.
pub fn set_tenant(req: &HttpRequest, tenant: &str) {
    req.extensions_mut().insert(TenantTag(tenant.to_owned()));
}

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, actix_web::Error> {
    let start = Instant::now();
    let request_id = uuid::Uuid::new_v4().simple().to_string();
    let method = req.method().to_string();
    // Every line logged while serving the request carries its id, route and tenant.
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        route = %req.match_pattern().unwrap_or_else(|| "unmatched".to_owned()),
        tenant = tracing::field::Empty,
    );
    let out = next.call(req).instrument(span.clone()).await;
    let _entered = span.enter();
    let mut res = match out {
        Ok(res) => res,
        Err(e) => {
            // Answered through the error path (e.g. a request timeout).
            tracing::info!(
                target: "skolgrind::access",
                request_id = %request_id,
                method = %method,
                status = e.as_response_error().status_code().as_u16(),
                micros = start.elapsed().as_micros() as u64,
                "request"
            );
            return Err(e);
        }
    };
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let tenant = res
        .request()
        .extensions()
        .get::<TenantTag>()
        .map(|t| t.0.clone())
        .unwrap_or_else(|| "-".to_owned());
    let status = res.status().as_u16();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        res.headers_mut()
            .insert(HeaderName::from_static("x-request-id"), v);
    }
    tracing::info!(
        target: "skolgrind::access",
        request_id = %request_id,
        method = %method,
        route = %route,
        status,
        tenant = %tenant,
        micros = start.elapsed().as_micros() as u64,
        "request"
    );
    Ok(res)
}
