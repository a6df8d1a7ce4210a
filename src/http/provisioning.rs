//! The SS12000:2020 push API over HTTP: thin handlers under `/provisioning/v1`,
//! wire-compatible with Skolverket's DNP Provisioning API (see `docs/ss12000-push.md`).

use std::collections::{HashMap, HashSet};

use actix_web::http::header::{HeaderValue, LOCATION};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde_json::{json, Value};

use super::body::{read_capped, require_json};
use super::AppState;
use crate::auth::Principal;
use crate::domain::jobs::{JobHeader, JobOp};
use crate::domain::rules::normalise_uuid;
use crate::domain::{DomainError, RuleId, StoredObject};
use crate::protocol::ss12000::{render, Ss12Type};

/// The OpenAPI document of what this API serves.
pub const OPENAPI: &str = include_str!("../../docs/openapi/ss12000-push.yaml");

/// The 202 message, as Skolverket words it.
const ACCEPTED_MESSAGE: &str = "Anropet har tagits emot. Återkoppling görs asynkront. Kontrollera status av asynkrona processen genom att följa URL-adressen i ’Location’-header.";

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 100;

/// A domain error on its way out as an array of LogEntry.
#[derive(Debug)]
pub struct PushError(pub DomainError);

impl std::fmt::Display for PushError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl From<DomainError> for PushError {
    fn from(e: DomainError) -> Self {
        PushError(e)
    }
}

impl ResponseError for PushError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(render::error(&self.0).0).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let (_, body) = render::error(&self.0);
        super::errors::finish(
            "ss12000_push",
            &self.0,
            json_response(self.status_code(), &body),
        )
    }
}

type Result<T> = std::result::Result<T, PushError>;

fn json_response(status: StatusCode, body: &Value) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/json")
        .body(body.to_string())
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    let r =
        |path: &str| web::resource(path.to_owned()).default_service(web::to(method_not_allowed));
    cfg.service(r("/alive").route(web::get().to(alive)))
        .service(r("/openapi.yaml").route(web::get().to(openapi)))
        .service(
            r("/{type}/bulk")
                .route(web::post().to(bulk_create))
                .route(web::put().to(bulk_update)),
        )
        .service(r("/{type}/bulk/delete").route(web::post().to(bulk_delete)))
        .service(r("/{type}/bulk/jobs/{id}").route(web::get().to(job_status)))
        .service(r("/{type}/bulk/jobs/{id}/isCompleted").route(web::get().to(is_completed)))
        .service(r("/{type}/lookup").route(web::post().to(lookup)))
        .service(r("/{type}").route(web::get().to(list)))
        .service(r("/{type}/{id}").route(web::get().to(by_id)))
        .default_service(web::to(not_found));
}

fn api_base(state: &AppState, req: &HttpRequest) -> String {
    format!("{}/provisioning/v1", state.base_url(req))
}

fn type_of(name: &str) -> Result<Ss12Type> {
    Ss12Type::from_path(name).ok_or(PushError(DomainError::NotFound))
}

fn query(req: &HttpRequest) -> Result<HashMap<String, String>> {
    web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map(|q| q.into_inner())
        .map_err(|_| {
            DomainError::invalid("", RuleId::Query, "the query string is malformed").into()
        })
}

/// Refuses query parameters other than `allowed`.
fn only_params(q: &HashMap<String, String>, allowed: &[&str]) -> Result<()> {
    match q.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(DomainError::invalid(
            k.clone(),
            RuleId::Query,
            "query parameter not supported here",
        )
        .into()),
        None => Ok(()),
    }
}

fn bool_param(q: &HashMap<String, String>, name: &str) -> Result<bool> {
    match q.get(name).map(String::as_str) {
        None => Ok(false),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(_) => Err(DomainError::invalid(name, RuleId::Query, "must be true or false").into()),
    }
}

fn path_id(id: &str) -> Result<String> {
    normalise_uuid(id).map_err(|r| {
        DomainError::invalid("id", r, "path parameter <id> must be an RFC 4122 UUID").into()
    })
}

async fn alive(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse> {
    state.authenticate(&req)?;
    state
        .provisioning
        .store()
        .check_health()
        .map_err(DomainError::from)?;
    Ok(HttpResponse::Ok().finish())
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/yaml")
        .body(OPENAPI)
}

async fn bulk_create(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let q = query(&req)?;
    only_params(&q, &["updateIfExists"])?;
    let op = if bool_param(&q, "updateIfExists")? {
        JobOp::Upsert
    } else {
        JobOp::Create
    };
    accept(&state, &req, &path, payload, op).await
}

async fn bulk_update(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    only_params(&query(&req)?, &[])?;
    accept(&state, &req, &path, payload, JobOp::Update).await
}

async fn bulk_delete(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    only_params(&query(&req)?, &[])?;
    accept(&state, &req, &path, payload, JobOp::Delete).await
}

/// Validates the envelope, stores the job durably, queues it and answers 202.
async fn accept(
    state: &AppState,
    req: &HttpRequest,
    type_name: &str,
    payload: web::Payload,
    op: JobOp,
) -> Result<HttpResponse> {
    let principal: Principal = state.authenticate(req)?;
    let ty = type_of(type_name)?;
    state
        .provisioning
        .controls()
        .check_write(&principal.tenant.id)?;
    require_json(req)?;
    let push = &state.ss12000;
    let body = read_capped(req, payload, push.limits.max_body_bytes).await?;
    let envelope: Value = serde_json::from_slice(&body).map_err(|_| {
        DomainError::invalid("", RuleId::Syntax, "the body is not well-formed JSON")
    })?;
    let Some(data) = envelope.get("data").and_then(Value::as_array) else {
        return Err(DomainError::invalid(
            "data",
            RuleId::Required,
            "the body must be an object with a 'data' array",
        )
        .into());
    };
    if data.is_empty() {
        return Err(DomainError::invalid("data", RuleId::Size, "'data' must not be empty").into());
    }
    if data.len() > push.limits.max_items {
        return Err(DomainError::PayloadTooLarge {
            limit: push.limits.max_body_bytes,
        }
        .into());
    }
    let mut items = Vec::with_capacity(data.len());
    for (i, item) in data.iter().enumerate() {
        match (op, item) {
            (JobOp::Delete, Value::String(_)) => {}
            (JobOp::Delete, _) => {
                return Err(DomainError::invalid(
                    format!("data[{i}]"),
                    RuleId::Type,
                    "expected a UUID string",
                )
                .into())
            }
            _ => {}
        }
        items.push(item.to_string());
    }
    let header = JobHeader {
        id: uuid::Uuid::new_v4().to_string(),
        tenant: principal.tenant.id.clone(),
        resource: ty.path().into(),
        op,
        credential: principal.credential.clone(),
        accepted: chrono::Utc::now(),
        finished: None,
        items: u32::try_from(items.len()).unwrap_or(u32::MAX),
    };
    push.jobs.accept(&header, &items).await?;
    push.queue.submit(header.tenant.clone(), header.id.clone());
    let location = format!(
        "{}/{}/bulk/jobs/{}",
        api_base(state, req),
        ty.path(),
        header.id
    );
    let mut res = json_response(
        StatusCode::ACCEPTED,
        &json!({"jobId": header.id, "message": ACCEPTED_MESSAGE}),
    );
    if let Ok(v) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(LOCATION, v);
    }
    Ok(res)
}

/// The header of this tenant's job of this type, or 404.
fn find_job(state: &AppState, principal: &Principal, ty: Ss12Type, id: &str) -> Result<JobHeader> {
    let id = path_id(id)?;
    match state.ss12000.jobs.header(&principal.tenant.id, &id)? {
        Some(h) if h.resource == ty.path() => Ok(h),
        _ => Err(DomainError::NotFound.into()),
    }
}

async fn job_status(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let principal = state.authenticate(&req)?;
    let (type_name, id) = path.into_inner();
    let ty = type_of(&type_name)?;
    let q = query(&req)?;
    only_params(&q, &["showOnlyError"])?;
    let only_errors = bool_param(&q, "showOnlyError")?;
    let header = find_job(&state, &principal, ty, &id)?;
    let job = state
        .ss12000
        .jobs
        .state(&principal.tenant.id, &header.id)?
        .ok_or(DomainError::NotFound)?;
    Ok(json_response(
        StatusCode::OK,
        &render::job_status(ty, &job, only_errors, &api_base(&state, &req)),
    ))
}

async fn is_completed(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let principal = state.authenticate(&req)?;
    let (type_name, id) = path.into_inner();
    let ty = type_of(&type_name)?;
    let header = find_job(&state, &principal, ty, &id)?;
    Ok(json_response(
        StatusCode::OK,
        &Value::Bool(header.finished.is_some()),
    ))
}

async fn list(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse> {
    let principal = state.authenticate(&req)?;
    let ty = type_of(&path)?;
    let q = query(&req)?;
    only_params(&q, &["limit", "pageToken"])?;
    let limit = match q.get("limit") {
        None => DEFAULT_LIMIT,
        Some(l) => match l.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(DomainError::invalid(
                    "limit",
                    RuleId::Query,
                    "the value for <limit> must be a number between 1 and 100 inclusive",
                )
                .into())
            }
        },
    };
    let tenant = &principal.tenant.id;
    let after = q
        .get("pageToken")
        .map(|t| state.ss12000.tokens.verify(tenant, ty.path(), t))
        .transpose()?;
    let mut items = state
        .provisioning
        .list_after(tenant, ty.sel(), after.as_deref(), limit + 1)?;
    let more = items.len() > limit;
    items.truncate(limit);
    let token = match (more, items.last()) {
        (true, Some(last)) => {
            Value::String(state.ss12000.tokens.issue(tenant, ty.path(), &last.id))
        }
        _ => Value::Null,
    };
    let data: Vec<Value> = items
        .iter()
        .map(|o| render::resource(ty, o, true))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"data": data, "pageToken": token}),
    ))
}

async fn by_id(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let principal = state.authenticate(&req)?;
    let (type_name, id) = path.into_inner();
    let ty = type_of(&type_name)?;
    let id = path_id(&id)?;
    let o = state
        .provisioning
        .get(&principal.tenant.id, ty.sel(), &id)?;
    Ok(json_response(
        StatusCode::OK,
        &render::resource(ty, &o, false),
    ))
}

fn strings(body: &Value, key: &str) -> Result<Vec<String>> {
    match body.get(key) {
        None => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str().map(str::to_owned).ok_or_else(|| {
                    DomainError::invalid(key, RuleId::Type, "expected an array of strings").into()
                })
            })
            .collect(),
        Some(_) => {
            Err(DomainError::invalid(key, RuleId::Type, "expected an array of strings").into())
        }
    }
}

async fn lookup(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let principal = state.authenticate(&req)?;
    let ty = type_of(&path)?;
    require_json(&req)?;
    let body = read_capped(&req, payload, state.ss12000.limits.max_body_bytes).await?;
    let body: Value = serde_json::from_slice(&body).map_err(|_| {
        DomainError::invalid("", RuleId::Syntax, "the body is not well-formed JSON")
    })?;
    let allowed: &[&str] = if ty == Ss12Type::Persons {
        &["ids", "civicNos", "eduPersonPrincipalNames"]
    } else {
        &["ids"]
    };
    let Some(obj) = body.as_object() else {
        return Err(
            DomainError::invalid("", RuleId::Type, "the body must be a JSON object").into(),
        );
    };
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(DomainError::invalid(
            k.clone(),
            RuleId::Query,
            "lookup key not supported for this type",
        )
        .into());
    }
    let tenant = &principal.tenant.id;
    let mut found: Vec<StoredObject> = Vec::new();
    let mut seen = HashSet::new();
    let mut add = |o: StoredObject, found: &mut Vec<StoredObject>| {
        if seen.insert(o.id.clone()) {
            found.push(o);
        }
    };
    for id in strings(&body, "ids")? {
        let id = normalise_uuid(&id).map_err(|r| {
            DomainError::invalid("ids", r, "body parameter <ids> must contain RFC 4122 UUIDs")
        })?;
        if let Ok(o) = state.provisioning.get(tenant, ty.sel(), &id) {
            add(o, &mut found);
        }
    }
    for civic in strings(&body, "civicNos")? {
        for o in state
            .provisioning
            .find_persons_by_civic_no(tenant, &civic)?
        {
            add(o, &mut found);
        }
    }
    for eppn in strings(&body, "eduPersonPrincipalNames")? {
        if let Some(o) = state.provisioning.find_person_by_eppn(tenant, &eppn)? {
            add(o, &mut found);
        }
    }
    let out: Vec<Value> = found
        .iter()
        .map(|o| render::resource(ty, o, false))
        .collect();
    Ok(json_response(StatusCode::OK, &Value::Array(out)))
}

async fn method_not_allowed() -> HttpResponse {
    let (_, mut body) = render::error(&DomainError::invalid(
        "",
        RuleId::Query,
        "method not supported on this path",
    ));
    if let Some(e) = body.get_mut(0).and_then(Value::as_object_mut) {
        e.insert("statusCode".into(), json!(405));
    }
    json_response(StatusCode::METHOD_NOT_ALLOWED, &body)
}

async fn not_found() -> HttpResponse {
    PushError(DomainError::NotFound).error_response()
}
