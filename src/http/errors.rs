//! What every protocol's error answer shares, whatever its body format: the validation
//! metric, `Retry-After` for errors that pass, and `WWW-Authenticate` on 401 (RFC 6750:
//! the same answer whatever was wrong, so nothing tells whether a tenant exists).

use actix_web::http::header::{HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use actix_web::HttpResponse;

use crate::domain::DomainError;

/// Seconds a client should wait before retrying, for errors that pass.
pub fn retry_after(e: &DomainError) -> Option<u64> {
    match e {
        DomainError::RateLimited { retry_after_secs }
        | DomainError::Suspended {
            retry_after_secs, ..
        } => Some(*retry_after_secs),
        DomainError::Unavailable => Some(5),
        _ => None,
    }
}

/// Completes a protocol's error response (its status and body already set).
pub fn finish(protocol: &'static str, e: &DomainError, mut res: HttpResponse) -> HttpResponse {
    crate::ops::metrics::domain_error(protocol, e);
    if let Some(v) = retry_after(e).and_then(|s| HeaderValue::from_str(&s.to_string()).ok()) {
        res.headers_mut().insert(RETRY_AFTER, v);
    }
    if matches!(e, DomainError::Unauthorized) {
        res.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"skolgrind\", error=\"invalid_token\""),
        );
    }
    res
}
