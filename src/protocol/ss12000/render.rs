//! Output of the push API: resources, job status, and errors as arrays of LogEntry (the
//! DNP Provisioning API's error format).

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

use super::types::Ss12Type;
use super::wire::wire_path;
use crate::domain::jobs::{ItemResult, ItemStatus, JobState, Note};
use crate::domain::{ConflictKind, DomainError, RuleId, StoredObject};

/// The attributes `GET /persons` lists (the full record is read by id or lookup).
const PERSON_LIST_ATTRIBUTES: [&str; 6] = [
    "id",
    "civicNo",
    "eduPersonPrincipalNames",
    "givenName",
    "middleName",
    "familyName",
];

pub fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A stored object as its SS12000:2020 document: what the client sent, with `id` (lower
/// case) and `meta`. `summary` keeps only the list attributes of a person.
pub fn resource(t: Ss12Type, o: &StoredObject, summary: bool) -> Value {
    let sent = match serde_json::from_str::<Value>(&o.raw) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let mut out = Map::with_capacity(sent.len() + 2);
    out.insert("id".into(), Value::String(o.id.clone()));
    for (k, v) in sent {
        if k == "id" || k == "meta" {
            continue;
        }
        if summary && t == Ss12Type::Persons && !PERSON_LIST_ATTRIBUTES.contains(&k.as_str()) {
            continue;
        }
        out.insert(k, v);
    }
    out.insert(
        "meta".into(),
        json!({"created": time(o.meta.created), "modified": time(o.meta.last_modified)}),
    );
    Value::Object(out)
}

/// One LogEntry for a synchronous error.
fn log_entry(id: &str, status: u16, message_type: &str, message: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("id".into(), json!(id));
    m.insert("statusCode".into(), json!(status));
    m.insert("messageType".into(), json!(message_type));
    m.insert("message".into(), json!(message));
    m.insert("severityLevel".into(), json!("Error"));
    m.insert("timeOfOccurance".into(), json!(time(Utc::now())));
    m
}

/// Query and path parameters: violations on them name `parameterName`.
const PARAMETERS: [&str; 5] = [
    "limit",
    "pageToken",
    "updateIfExists",
    "showOnlyError",
    "id",
];

/// The one mapping from domain errors to the push API's error answer.
pub fn error(err: &DomainError) -> (u16, Value) {
    let err = err.clone().map_path(wire_path);
    let (status, id, mt, message, param): (u16, &str, &str, String, Option<String>) = match &err {
        DomainError::Invalid(v) => {
            let id = match (v.path.as_str(), v.rule) {
                ("limit", _) => "3085",
                ("updateIfExists" | "showOnlyError", _) => "2025",
                ("id", RuleId::Uuid) => "2011",
                ("ids" | "civicNos" | "eduPersonPrincipalNames", _) => "2010",
                ("pageToken", _) => "2026",
                (_, RuleId::Query) => "2027",
                _ => "2000",
            };
            let param = PARAMETERS
                .contains(&v.path.as_str())
                .then(|| v.path.clone());
            (400, id, "Ogiltigt format", v.to_string(), param)
        }
        DomainError::PayloadTooLarge { limit } => (
            413,
            "5020",
            "Teknisk begränsning",
            format!("the request is larger than the allowed {limit} bytes"),
            None,
        ),
        DomainError::UnsupportedMediaType => (
            415,
            "2001",
            "Ogiltigt format",
            "Content-Type must be application/json".into(),
            None,
        ),
        DomainError::Conflict(c) => {
            let m = match c {
                ConflictKind::AlreadyExists => "the object already exists".into(),
                ConflictKind::OtherType => "the id is used by an object of another type".into(),
                ConflictKind::Unique { path } => format!("{path}: held by another person"),
            };
            (409, "7020", "Ogiltigt värde", m, None)
        }
        DomainError::NotFound => (
            404,
            "4001",
            "Ogiltigt värde",
            "no object is identified by the value in path parameter <id>".into(),
            None,
        ),
        DomainError::Unauthorized | DomainError::Forbidden => (
            403,
            "5002",
            "Behörighet saknas",
            "missing or invalid credentials".into(),
            None,
        ),
        DomainError::RateLimited { .. } => (
            429,
            "5021",
            "Teknisk begränsning",
            "the maximum number of requests for this URL has been reached".into(),
            None,
        ),
        DomainError::Suspended { .. } | DomainError::Unavailable => (
            503,
            "5022",
            "Teknisk begränsning",
            "the service is not available; try again later".into(),
            None,
        ),
        DomainError::Internal => (500, "5004", "Okänt fel", "unknown error".into(), None),
    };
    let mut e = log_entry(id, status, mt, &message);
    if let Some(p) = param {
        e.insert("parameterName".into(), Value::String(p));
    }
    (status, Value::Array(vec![Value::Object(e)]))
}

fn status_name(s: ItemStatus) -> &'static str {
    match s {
        ItemStatus::Pending => "Pending",
        ItemStatus::Success => "Success",
        ItemStatus::Warning => "Warning",
        ItemStatus::Error => "Error",
        ItemStatus::TemporaryError => "TemporaryError",
    }
}

fn note_entry(n: &Note, severity: &str, t: Ss12Type, id: &str, at: DateTime<Utc>) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(n.code));
    m.insert("statusCode".into(), json!(n.status_code));
    m.insert("messageType".into(), json!(n.message_type));
    m.insert("message".into(), json!(n.message));
    m.insert("resourceType".into(), json!(t.object_type()));
    m.insert("resourceId".into(), json!(id));
    if let Some(a) = &n.attribute {
        m.insert("attributeName".into(), json!(a));
    }
    if let Some(v) = &n.value {
        m.insert("attributeValue".into(), json!(v));
    }
    m.insert("severityLevel".into(), json!(severity));
    m.insert("timeOfOccurance".into(), json!(time(at)));
    Value::Object(m)
}

fn item_response(t: Ss12Type, id: &str, r: &ItemResult, base: &str) -> Value {
    let mut resp = Map::new();
    resp.insert("status".into(), json!(status_name(r.status)));
    resp.insert("statusCode".into(), json!(r.status_code));
    if r.created {
        resp.insert(
            "location".into(),
            json!(format!("{base}/{}/{id}", t.path())),
        );
    }
    let notes = |ns: &[Note], sev: &str| -> Value {
        ns.iter().map(|n| note_entry(n, sev, t, id, r.at)).collect()
    };
    resp.insert("errors".into(), notes(&r.errors, "Error"));
    resp.insert("warnings".into(), notes(&r.warnings, "Warning"));
    Value::Object(resp)
}

/// The AsynchronousResponse of a job. `base` is the push API root
/// (`https://host/provisioning/v1`).
pub fn job_status(t: Ss12Type, job: &JobState, only_errors: bool, base: &str) -> Value {
    let accepted = time(job.header.accepted);
    let mut responses = Vec::new();
    for (i, id) in job.ids.iter().enumerate() {
        let r = job.results.get(i).and_then(Option::as_ref);
        if only_errors && !matches!(r, Some(r) if r.status == ItemStatus::Error) {
            continue;
        }
        let (response, modified) = match r {
            Some(r) => (item_response(t, id, r, base), time(r.at)),
            None => (json!({"status": "Pending"}), accepted.clone()),
        };
        responses.push(json!({
            "id": id,
            "response": response,
            "meta": {"created": accepted, "modified": modified},
        }));
    }
    json!({"jobId": job.header.id, "responses": responses})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_log_entry_arrays_without_values() {
        let (s, v) = error(&DomainError::invalid(
            "limit",
            RuleId::Query,
            "must be a number between 1 and 100",
        ));
        assert_eq!(s, 400);
        assert_eq!(v[0]["id"], "3085");
        assert_eq!(v[0]["parameterName"], "limit");
        let (s, v) = error(&DomainError::Unauthorized);
        assert_eq!((s, v[0]["id"].as_str()), (403, Some("5002")));
        let (s, v) = error(&DomainError::PayloadTooLarge { limit: 10 });
        assert_eq!((s, v[0]["id"].as_str()), (413, Some("5020")));
    }
}
