//! EGIL SCIM over HTTP: thin handlers under `/egil`.

use std::collections::HashMap;

use actix_web::http::header::LOCATION;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde_json::Value;

use super::body::{read_capped, require_json};
use super::AppState;
use crate::auth::Principal;
use crate::domain::rules::normalise_uuid;
use crate::domain::service::WriteMode;
use crate::domain::{DomainError, Protocol, RuleId, WriteContext};
use crate::protocol::egil::discovery::{self, DEFAULT_PAGE, MAX_PAGE};
use crate::protocol::egil::filter::{self, Filter};
use crate::protocol::egil::{render, wire, EgilType};

/// A domain error on its way out as a SCIM error.
#[derive(Debug)]
pub struct EgilError(pub DomainError);

impl std::fmt::Display for EgilError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl From<DomainError> for EgilError {
    fn from(e: DomainError) -> Self {
        EgilError(e)
    }
}

impl ResponseError for EgilError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(render::error(&self.0).status)
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let e = render::error(&self.0);
        super::errors::finish("egil_scim", &self.0, scim(self.status_code(), &e.body))
    }
}

type Result<T> = std::result::Result<T, EgilError>;

fn scim(status: StatusCode, body: &Value) -> HttpResponse {
    HttpResponse::build(status)
        .content_type(render::MEDIA_TYPE)
        .body(body.to_string())
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    // Discovery documents are read-only: other methods get 405 rather than falling
    // through to the /{type} routes.
    let read_only =
        |path: &str| web::resource(path.to_owned()).default_service(web::to(method_not_allowed));
    cfg.service(read_only("/ServiceProviderConfig").route(web::get().to(service_provider_config)))
        .service(read_only("/ResourceTypes").route(web::get().to(resource_types)))
        .service(read_only("/ResourceTypes/{name}").route(web::get().to(resource_type)))
        .service(read_only("/Schemas").route(web::get().to(schemas)))
        .service(read_only("/Schemas/{id}").route(web::get().to(schema)))
        .service(
            web::resource("/{type}")
                .route(web::get().to(list))
                .route(web::post().to(create))
                .route(web::put().to(replace_in_collection))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/{type}/{id}")
                .route(web::get().to(get))
                .route(web::put().to(replace))
                .route(web::delete().to(delete))
                .default_service(web::to(method_not_allowed)),
        )
        .default_service(web::to(not_found));
}

fn egil_base(state: &AppState, req: &HttpRequest) -> String {
    format!("{}/egil", state.base_url(req))
}

fn resource_type_of(name: &str) -> Result<EgilType> {
    EgilType::from_endpoint(name).ok_or(EgilError(DomainError::NotFound))
}

fn context(p: Principal) -> WriteContext {
    WriteContext {
        tenant: p.tenant,
        protocol: Protocol::EgilScim,
        credential: p.credential,
        now: chrono::Utc::now(),
    }
}

/// Parses an id from a URL: anything but a UUID cannot exist.
fn url_id(id: &str) -> Result<String> {
    normalise_uuid(id).map_err(|_| EgilError(DomainError::NotFound))
}

async fn service_provider_config(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    scim(
        StatusCode::OK,
        &discovery::service_provider_config(&egil_base(&state, &req)),
    )
}

async fn resource_types(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let all = discovery::resource_types(&egil_base(&state, &req));
    scim(StatusCode::OK, &render::list(all.len(), 1, all))
}

async fn resource_type(
    state: web::Data<AppState>,
    req: HttpRequest,
    name: web::Path<String>,
) -> Result<HttpResponse> {
    let t = EgilType::ALL
        .into_iter()
        .find(|t| t.resource_type() == name.as_str())
        .ok_or(EgilError(DomainError::NotFound))?;
    Ok(scim(
        StatusCode::OK,
        &discovery::resource_type(t, &egil_base(&state, &req)),
    ))
}

async fn schemas(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let all = discovery::schemas(state.egil.schemas(), &egil_base(&state, &req));
    scim(StatusCode::OK, &render::list(all.len(), 1, all))
}

async fn schema(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    let all = discovery::schemas(state.egil.schemas(), &egil_base(&state, &req));
    let doc = all
        .into_iter()
        .find(|d| d["id"] == id.as_str())
        .ok_or(EgilError(DomainError::NotFound))?;
    Ok(scim(StatusCode::OK, &doc))
}

/// Authenticates, then reads and parses a body of the named resource type: the first
/// steps of every POST and PUT.
async fn read_resource(
    state: &AppState,
    req: &HttpRequest,
    type_name: &str,
    payload: web::Payload,
) -> Result<(Principal, EgilType, wire::Parsed)> {
    let principal = state.authenticate(req)?;
    let t = resource_type_of(type_name)?;
    require_json(req)?;
    let body = read_capped(req, payload, state.max_body_bytes).await?;
    let parsed = wire::parse(state.egil.schemas(), t, &body)?;
    Ok((principal, t, parsed))
}

async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let (principal, t, parsed) = read_resource(&state, &req, &path, payload).await?;
    let out = state
        .provisioning
        .write(
            &context(principal),
            t.sel(),
            WriteMode::Create,
            parsed.incoming,
        )
        .await?;
    let base = egil_base(&state, &req);
    let rendered = render::resource(t, &out.object, &base);
    let mut res = scim(StatusCode::CREATED, &rendered);
    if let Ok(v) =
        actix_web::http::header::HeaderValue::from_str(&render::location(t, &out.object.id, &base))
    {
        res.headers_mut().insert(LOCATION, v);
    }
    Ok(res)
}

async fn put_parsed(
    state: &AppState,
    req: &HttpRequest,
    t: EgilType,
    principal: Principal,
    parsed: wire::Parsed,
) -> Result<HttpResponse> {
    let out = state
        .provisioning
        .write(
            &context(principal),
            t.sel(),
            WriteMode::Upsert,
            parsed.incoming,
        )
        .await?;
    // The EGIL client accepts only 200 on PUT, also when the PUT created the object.
    Ok(scim(
        StatusCode::OK,
        &render::resource(t, &out.object, &egil_base(state, req)),
    ))
}

async fn replace(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let (type_name, id) = path.into_inner();
    let (principal, t, parsed) = read_resource(&state, &req, &type_name, payload).await?;
    if normalise_uuid(&id).ok().as_deref() != Some(parsed.incoming.id.as_str()) {
        return Err(DomainError::invalid(
            "externalId",
            RuleId::IdMismatch,
            "externalId differs from the id in the URL",
        )
        .into());
    }
    put_parsed(&state, &req, t, principal, parsed).await
}

/// `PUT /{Type}` with the id only in the body (other clients than EGIL do this).
async fn replace_in_collection(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let (principal, t, parsed) = read_resource(&state, &req, &path, payload).await?;
    put_parsed(&state, &req, t, principal, parsed).await
}

async fn delete(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    // Any Content-Type: the EGIL client sends application/x-www-form-urlencoded here.
    let principal = state.authenticate(&req)?;
    let (type_name, id) = path.into_inner();
    let t = resource_type_of(&type_name)?;
    let id = url_id(&id)?;
    state
        .provisioning
        .delete(&context(principal), t.sel(), &id)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn get(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let principal = state.authenticate(&req)?;
    let (type_name, id) = path.into_inner();
    let t = resource_type_of(&type_name)?;
    let id = url_id(&id)?;
    let o = state.provisioning.get(&principal.tenant.id, t.sel(), &id)?;
    Ok(scim(
        StatusCode::OK,
        &render::resource(t, &o, &egil_base(&state, &req)),
    ))
}

fn query_number(q: &HashMap<String, String>, name: &str) -> Result<Option<i64>> {
    q.get(name)
        .map(|v| {
            v.trim().parse::<i64>().map_err(|_| {
                EgilError(DomainError::invalid(
                    name,
                    RuleId::Query,
                    "expected an integer",
                ))
            })
        })
        .transpose()
}

async fn list(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse> {
    let principal = state.authenticate(&req)?;
    let t = resource_type_of(&path)?;
    let q =
        web::Query::<HashMap<String, String>>::from_query(req.query_string()).map_err(|_| {
            EgilError(DomainError::invalid(
                "",
                RuleId::Query,
                "the query string is malformed",
            ))
        })?;
    // SCIM: startIndex is 1-based (values below 1 mean 1); count below 0 means 0.
    let start = query_number(&q, "startIndex")?.unwrap_or(1).max(1);
    let count = query_number(&q, "count")?.map_or(DEFAULT_PAGE, |c| {
        usize::try_from(c.max(0)).unwrap_or(0).min(MAX_PAGE)
    });
    let base = egil_base(&state, &req);
    let tenant = &principal.tenant.id;
    if let Some(f) = q.get("filter") {
        let found = match filter::parse(f, t == EgilType::Users)? {
            Filter::Id(id) => match normalise_uuid(&id) {
                Ok(id) => state.provisioning.get(tenant, t.sel(), &id).ok(),
                Err(_) => None,
            },
            Filter::UserName(name) => state.provisioning.find_person_by_eppn(tenant, &name)?,
        };
        let all: Vec<Value> = found
            .iter()
            .map(|o| render::resource(t, o, &base))
            .collect();
        let total = all.len();
        let page: Vec<Value> = all
            .into_iter()
            .skip(usize::try_from(start - 1).unwrap_or(usize::MAX))
            .take(count)
            .collect();
        return Ok(scim(
            StatusCode::OK,
            &render::list(total, usize::try_from(start).unwrap_or(1), page),
        ));
    }
    let offset = usize::try_from(start - 1).unwrap_or(usize::MAX);
    let page = state.provisioning.list(tenant, t.sel(), offset, count)?;
    let resources = page
        .items
        .iter()
        .map(|o| render::resource(t, o, &base))
        .collect();
    Ok(scim(
        StatusCode::OK,
        &render::list(page.total, usize::try_from(start).unwrap_or(1), resources),
    ))
}

async fn method_not_allowed() -> HttpResponse {
    let body = serde_json::json!({
        "schemas": [render::ERROR_SCHEMA],
        "status": "405",
        "detail": "method not supported here (EGIL SCIM supports GET, POST, PUT and DELETE; no PATCH or Bulk)",
    });
    scim(StatusCode::METHOD_NOT_ALLOWED, &body)
}

async fn not_found() -> HttpResponse {
    EgilError(DomainError::NotFound).error_response()
}
