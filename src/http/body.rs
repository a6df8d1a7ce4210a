//! Request bodies: media-type check and a size-capped read. Both refuse before any
//! parsing, so an oversized or mistyped body costs nothing.

use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::{web, HttpRequest};
use futures_util::StreamExt;

use crate::domain::DomainError;

/// Accepts `application/scim+json` and `application/json`, with any parameters.
pub fn require_json(req: &HttpRequest) -> Result<(), DomainError> {
    let Some(ct) = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(DomainError::UnsupportedMediaType);
    };
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/scim+json")
        || essence.eq_ignore_ascii_case("application/json")
    {
        Ok(())
    } else {
        Err(DomainError::UnsupportedMediaType)
    }
}

/// Reads the whole body, refusing (413) as soon as it is known to exceed `limit`.
pub async fn read_capped(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, DomainError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(DomainError::PayloadTooLarge { limit });
    }
    let mut buf = web::BytesMut::with_capacity(declared.unwrap_or(0).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| {
            DomainError::invalid(
                "",
                crate::domain::RuleId::Syntax,
                "the request body could not be read",
            )
        })?;
        if buf.len() + chunk.len() > limit {
            return Err(DomainError::PayloadTooLarge { limit });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}
