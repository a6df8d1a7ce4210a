//! SCIM output: resources, list responses and errors.

use serde_json::{json, Map, Value};

use super::types::EgilType;
use super::wire::wire_path;
use crate::domain::{ConflictKind, DomainError, RuleId, StoredObject};

pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
pub const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub const MEDIA_TYPE: &str = "application/scim+json";

/// Renders a stored object as the SCIM resource the client sent, plus `id` and `meta`.
/// `base` is the absolute URL of the EGIL root (`https://host/egil`).
pub fn resource(t: EgilType, o: &StoredObject, base: &str) -> Value {
    let mut map = match serde_json::from_str::<Value>(&o.raw) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    if t == EgilType::Activities {
        if let Some(g) = map.shift_remove("group") {
            map.insert("groups".into(), Value::Array(vec![g]));
        }
    }
    if !map.contains_key("schemas") {
        map.insert("schemas".into(), json!(t.schemas()));
    }
    let mut out = Map::with_capacity(map.len() + 2);
    out.insert("id".into(), Value::String(o.id.clone()));
    for (k, v) in map {
        if k != "id" && k != "meta" {
            out.insert(k, v);
        }
    }
    out.insert(
        "meta".into(),
        json!({
            "resourceType": t.resource_type(),
            "created": o.meta.created.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "lastModified": o.meta.last_modified.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "location": location(t, &o.id, base),
            "version": format!("W/\"{}\"", o.meta.version),
        }),
    );
    Value::Object(out)
}

pub fn location(t: EgilType, id: &str, base: &str) -> String {
    format!("{base}/{}/{id}", t.endpoint())
}

pub fn list(total: usize, start_index: usize, resources: Vec<Value>) -> Value {
    json!({
        "schemas": [LIST_SCHEMA],
        "totalResults": total,
        "startIndex": start_index,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    })
}

/// A SCIM error (RFC 7644 §3.12) for a domain error.
pub struct ScimError {
    pub status: u16,
    pub body: Value,
}

/// The one mapping from domain errors to SCIM errors.
pub fn error(err: &DomainError) -> ScimError {
    let err = err.clone().map_path(wire_path);
    let (status, scim_type, detail): (u16, Option<&str>, String) = match &err {
        DomainError::Invalid(v) => {
            let scim_type = match v.rule {
                RuleId::Syntax => "invalidSyntax",
                RuleId::Query if v.path == "filter" => "invalidFilter",
                _ => "invalidValue",
            };
            (400, Some(scim_type), v.to_string())
        }
        DomainError::PayloadTooLarge { limit } => (
            413,
            None,
            format!("the request body is larger than {limit} bytes"),
        ),
        DomainError::UnsupportedMediaType => (
            415,
            None,
            "Content-Type must be application/scim+json or application/json".into(),
        ),
        DomainError::Conflict(ConflictKind::AlreadyExists) => (
            409,
            Some("uniqueness"),
            "a resource with this id already exists; PUT replaces it".into(),
        ),
        DomainError::Conflict(ConflictKind::OtherType) => (
            409,
            Some("uniqueness"),
            "this id is already used by a resource of another type".into(),
        ),
        DomainError::Conflict(ConflictKind::Unique { path }) => (
            409,
            Some("uniqueness"),
            format!("{path}: the value is already held by another person"),
        ),
        DomainError::NotFound => (404, None, "no such resource".into()),
        DomainError::Unauthorized => (401, None, "missing or unknown credentials".into()),
        DomainError::Forbidden => (
            403,
            None,
            "this credential may not use this endpoint".into(),
        ),
        DomainError::RateLimited { retry_after_secs } => (
            429,
            None,
            format!("too many requests; retry after {retry_after_secs} s"),
        ),
        DomainError::Suspended { reason, .. } => {
            (503, None, format!("writes are suspended: {reason}"))
        }
        DomainError::Unavailable => (503, None, "temporarily unavailable; retry later".into()),
        DomainError::Internal => (500, None, "internal error".into()),
    };
    let mut body = json!({
        "schemas": [ERROR_SCHEMA],
        "status": status.to_string(),
        "detail": detail,
    });
    if let (Some(t), Some(m)) = (scim_type, body.as_object_mut()) {
        m.insert("scimType".into(), Value::String(t.into()));
    }
    ScimError { status, body }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civic_no_path_is_rendered_in_wire_terms() {
        let e = DomainError::invalid(
            "person.civic_no",
            RuleId::CivicNoChecksum,
            "the civic number's check digit is wrong",
        );
        let s = error(&e);
        assert_eq!(s.status, 400);
        assert_eq!(
            s.body["detail"],
            "urn:scim:schemas:extension:sis:school:1.0:User.civicNo: the civic number's check digit is wrong (rule civic_no_checksum)"
        );
        assert_eq!(s.body["scimType"], "invalidValue");
        assert_eq!(s.body["status"], "400");
    }
}
