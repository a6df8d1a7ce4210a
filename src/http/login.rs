//! The login API over HTTP: thin handlers under `/login/v1`, the OpenAPI document
//! generated from them, and an offline Swagger UI.

use actix_web::http::header::{HeaderValue, ALLOW};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde::Deserialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;
use uuid::Uuid;

use super::body::{read_capped, require_json};
use super::AppState;
use crate::domain::login::{LoginQuery, LoginService, NoMatch, Resolution, MAX_CHANGES_PAGE};
use crate::domain::{DomainError, RuleId};
use crate::protocol::login::{self as wire, *};

/// Where the OpenAPI document is served.
pub const OPENAPI_PATH: &str = "/login/v1/openapi.json";
/// Where the Swagger UI is served.
pub const DOCS_PATH: &str = "/login/v1/docs/";

/// A domain error on its way out in the login API's JSON format.
#[derive(Debug)]
pub struct LoginError(pub DomainError);

impl std::fmt::Display for LoginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl From<DomainError> for LoginError {
    fn from(e: DomainError) -> Self {
        LoginError(e)
    }
}

impl ResponseError for LoginError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(wire::error(&self.0).0).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let (_, body) = wire::error(&self.0);
        super::errors::finish(
            "login",
            &self.0,
            HttpResponse::build(self.status_code()).json(body),
        )
    }
}

type Result<T> = std::result::Result<T, LoginError>;

fn no_match(n: NoMatch) -> HttpResponse {
    HttpResponse::NotFound().json(wire::no_match(n))
}

async fn json_body<T: serde::de::DeserializeOwned>(
    state: &AppState,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<T> {
    require_json(req)?;
    let body = read_capped(req, payload, state.max_body_bytes).await?;
    Ok(wire::parse(&body)?)
}

/// Resolve a verified login to the provisioned account.
#[utoipa::path(
    post,
    path = "/login/v1/resolve",
    tag = "login",
    request_body = ResolveRequest,
    responses(
        (status = 200, description = "The account", body = AccountOut),
        (status = 404, description = "No account for this login; `reason` says why", body = NoMatchOut),
        (status = 400, description = "Malformed request", body = ErrorOut),
        (status = 401, description = "No or unknown credential", body = ErrorOut),
        (status = 403, description = "A school owner's credential", body = ErrorOut),
        (status = 413, description = "Body too large", body = ErrorOut),
        (status = 415, description = "Not JSON", body = ErrorOut),
        (status = 503, description = "Storage unavailable", body = ErrorOut),
    ),
    security(("api_key" = []))
)]
async fn resolve(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let caller = state.authenticate_product(&req)?.product.id.to_string();
    let q: ResolveRequest = json_body(&state, &req, payload).await?;
    q.check("")?;
    let query = LoginQuery {
        caller: Some(caller),
        ..q.query()
    };
    Ok(match state.login.resolve(&query)? {
        Resolution::Found(a) => HttpResponse::Ok().json(wire::account(&a)),
        Resolution::NoMatch(n) => no_match(n),
    })
}

/// Resolve up to 1,000 logins at once; each result stands alone.
#[utoipa::path(
    post,
    path = "/login/v1/resolve:batch",
    tag = "login",
    request_body = BatchRequest,
    responses(
        (status = 200, description = "One result per lookup, in order", body = BatchResponse),
        (status = 400, description = "Malformed request, or not 1 to 1,000 lookups", body = ErrorOut),
        (status = 401, description = "No or unknown credential", body = ErrorOut),
        (status = 403, description = "A school owner's credential", body = ErrorOut),
        (status = 413, description = "Body too large", body = ErrorOut),
        (status = 415, description = "Not JSON", body = ErrorOut),
        (status = 503, description = "Storage unavailable", body = ErrorOut),
    ),
    security(("api_key" = []))
)]
async fn resolve_batch(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let caller = state
        .authenticate_product_for(&req, 0)?
        .product
        .id
        .to_string();
    let b: BatchRequest = json_body(&state, &req, payload).await?;
    for (i, q) in b.lookups.iter().enumerate() {
        q.check(&format!("lookups[{i}]."))?;
    }
    // The batch takes one call per lookup from the product's quota, all or nothing.
    let n = u32::try_from(b.lookups.len()).unwrap_or(u32::MAX).max(1);
    super::guard::admit_product(&state, &req, &caller, n)?;
    let queries: Vec<_> = b
        .lookups
        .into_iter()
        .map(|q| LoginQuery {
            caller: Some(caller.clone()),
            ..q.query()
        })
        .collect();
    let results = state
        .login
        .resolve_batch(&queries)?
        .into_iter()
        .map(|r| match r {
            Ok(Resolution::Found(a)) => BatchResultOut {
                status: 200,
                account: Some(wire::account(&a)),
                reason: None,
                error: None,
            },
            Ok(Resolution::NoMatch(n)) => BatchResultOut {
                status: 404,
                account: None,
                reason: Some(n.into()),
                error: None,
            },
            Err(e) => {
                let (status, body) = wire::error(&e);
                BatchResultOut {
                    status,
                    account: None,
                    reason: None,
                    error: Some(body),
                }
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(BatchResponse { results }))
}

/// The shared shape of the reads by gateway id: authenticate the product, parse the id
/// (anything but a UUID names nothing), look it up, render it or say why not.
fn by_gateway_id<T, O: serde::Serialize>(
    state: &AppState,
    req: &HttpRequest,
    id: &str,
    find: impl FnOnce(
        &LoginService,
        &Uuid,
    ) -> std::result::Result<std::result::Result<T, NoMatch>, DomainError>,
    render: impl FnOnce(T) -> O,
) -> Result<HttpResponse> {
    state.authenticate_product(req)?;
    let Ok(id) = Uuid::parse_str(id) else {
        return Ok(no_match(NoMatch::Unknown));
    };
    Ok(match find(&state.login, &id)? {
        Ok(x) => HttpResponse::Ok().json(render(x)),
        Err(n) => no_match(n),
    })
}

/// An account by its gateway id.
#[utoipa::path(
    get,
    path = "/login/v1/accounts/{id}",
    tag = "login",
    params(("id" = Uuid, Path, description = "The account id")),
    responses(
        (status = 200, description = "The account", body = AccountOut),
        (status = 404, description = "No such account (or its school owner is suspended)", body = NoMatchOut),
        (status = 401, description = "No or unknown credential", body = ErrorOut),
        (status = 403, description = "A school owner's credential", body = ErrorOut),
        (status = 503, description = "Storage unavailable", body = ErrorOut),
    ),
    security(("api_key" = []))
)]
async fn account(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    by_gateway_id(&state, &req, &id, LoginService::account, |x| {
        wire::account(&x)
    })
}

/// A group and its members.
#[utoipa::path(
    get,
    path = "/login/v1/groups/{id}/members",
    tag = "roster",
    params(("id" = Uuid, Path, description = "The group's gateway id")),
    responses(
        (status = 200, description = "The group and its members", body = GroupMembersOut),
        (status = 404, description = "No such group (or its school owner is suspended)", body = NoMatchOut),
        (status = 401, description = "No or unknown credential", body = ErrorOut),
        (status = 403, description = "A school owner's credential", body = ErrorOut),
        (status = 503, description = "Storage unavailable", body = ErrorOut),
    ),
    security(("api_key" = []))
)]
async fn group_members(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    by_gateway_id(&state, &req, &id, LoginService::group_roster, |x| {
        wire::group_members(&x)
    })
}

/// An activity with its groups, pupils and teachers.
#[utoipa::path(
    get,
    path = "/login/v1/activities/{id}",
    tag = "roster",
    params(("id" = Uuid, Path, description = "The activity's gateway id")),
    responses(
        (status = 200, description = "The activity", body = ActivityRosterOut),
        (status = 404, description = "No such activity (or its school owner is suspended)", body = NoMatchOut),
        (status = 401, description = "No or unknown credential", body = ErrorOut),
        (status = 403, description = "A school owner's credential", body = ErrorOut),
        (status = 503, description = "Storage unavailable", body = ErrorOut),
    ),
    security(("api_key" = []))
)]
async fn activity(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    by_gateway_id(&state, &req, &id, LoginService::activity_roster, |x| {
        wire::activity_roster(&x)
    })
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChangesQuery {
    /// Where to continue: `next_cursor` of the previous page; absent or `0` for the start.
    #[param(pattern = "^[0-9]{1,19}$")]
    pub cursor: Option<String>,
    /// At most this many entries (default 1,000).
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<u32>,
}

/// Accounts (and groups, activities, …) created, changed or deleted since a cursor.
#[utoipa::path(
    get,
    path = "/login/v1/changes",
    tag = "login",
    params(ChangesQuery),
    responses(
        (status = 200, description = "A page of the change feed", body = ChangesOut),
        (status = 400, description = "Malformed cursor or limit", body = ErrorOut),
        (status = 401, description = "No or unknown credential", body = ErrorOut),
        (status = 403, description = "A school owner's credential", body = ErrorOut),
        (status = 503, description = "Storage unavailable", body = ErrorOut),
    ),
    security(("api_key" = []))
)]
async fn changes(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse> {
    state.authenticate_product(&req)?;
    let bad = |path: &'static str, detail: &'static str| {
        LoginError(DomainError::invalid(path, RuleId::Query, detail))
    };
    let q = web::Query::<ChangesQuery>::from_query(req.query_string())
        .map_err(|_| bad("", "the query string is malformed"))?;
    let cursor = match q.cursor.as_deref() {
        None => 0,
        Some(c) if !c.is_empty() && c.len() <= 19 && c.bytes().all(|b| b.is_ascii_digit()) => c
            .parse::<u64>()
            .map_err(|_| bad("cursor", "expected a cursor from next_cursor"))?,
        Some(_) => return Err(bad("cursor", "expected a cursor from next_cursor")),
    };
    let limit = match q.limit {
        None => 1000,
        Some(l) if (1..=MAX_CHANGES_PAGE as u32).contains(&l) => l as usize,
        Some(_) => return Err(bad("limit", "expected 1 to 10000")),
    };
    let (items, next) = state.login.changes(cursor, limit)?;
    Ok(HttpResponse::Ok().json(wire::changes(&items, next)))
}

struct SecurityAddon;

/// The body of answers the load guard makes before any handler runs (429 for an address
/// that used up its unauthenticated quota, 503 when shedding load): `application/problem+json`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ProblemOut {
    pub status: u16,
    pub title: String,
    pub detail: String,
}

impl Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        // Every operation can meet two quotas: the load guard's per-address quota for calls
        // that do not authenticate (`http::guard`, answered before the handler in its own
        // format) and the product's lookup quota (answered in the API's error format).
        let problem = utoipa::openapi::ResponseBuilder::new()
            .description("Too many calls: the product's lookup quota (`rate_limits.product_lookups`, `application/json`), or calls that did not authenticate from this address (`application/problem+json`). Retry-After says when to retry")
            .content(
                "application/json",
                utoipa::openapi::Content::new(Some(utoipa::openapi::Ref::from_schema_name("ErrorOut"))),
            )
            .content(
                "application/problem+json",
                utoipa::openapi::Content::new(Some(utoipa::openapi::Ref::from_schema_name("ProblemOut"))),
            )
            .build();
        for item in openapi.paths.paths.values_mut() {
            for op in [&mut item.get, &mut item.post].into_iter().flatten() {
                op.responses
                    .responses
                    .entry("429".to_owned())
                    .or_insert_with(|| problem.clone().into());
            }
        }
        let components = openapi.components.get_or_insert_with(Default::default);
        components.schemas.insert(
            "ProblemOut".to_owned(),
            <ProblemOut as utoipa::PartialSchema>::schema(),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "A product API key (configured under [[products]])",
            ))),
        );
    }
}

/// The OpenAPI document of the login API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Skolgrind login API",
        description = "Maps a verified Skolfederation login (EPPN and identity provider, or an eduID external identifier) to the person a school owner provisioned, with school units, groups and activities (national tests).",
        version = "1"
    ),
    paths(resolve, resolve_batch, account, group_members, activity, changes),
    modifiers(&SecurityAddon),
    tags(
        (name = "login", description = "Resolve logins and follow account changes"),
        (name = "roster", description = "Groups and activities with their people")
    )
)]
pub struct LoginApiDoc;

/// A 405 with the methods the resource supports.
fn method_not_allowed(
    allow: &'static str,
) -> impl Fn() -> std::future::Ready<HttpResponse> + Clone {
    move || {
        let mut res = HttpResponse::MethodNotAllowed().json(ErrorOut {
            error: "method_not_allowed".into(),
            detail: format!("use {allow}"),
            path: None,
            rule: None,
        });
        res.headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allow));
        std::future::ready(res)
    }
}

/// Routes under `/login/v1`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/resolve")
            .route(web::post().to(resolve))
            .default_service(web::to(method_not_allowed("POST"))),
    )
    .service(
        web::resource("/resolve:batch")
            .route(web::post().to(resolve_batch))
            .default_service(web::to(method_not_allowed("POST"))),
    )
    .service(
        web::resource("/accounts/{id}")
            .route(web::get().to(account))
            .default_service(web::to(method_not_allowed("GET"))),
    )
    .service(
        web::resource("/groups/{id}/members")
            .route(web::get().to(group_members))
            .default_service(web::to(method_not_allowed("GET"))),
    )
    .service(
        web::resource("/activities/{id}")
            .route(web::get().to(activity))
            .default_service(web::to(method_not_allowed("GET"))),
    )
    .service(
        web::resource("/changes")
            .route(web::get().to(changes))
            .default_service(web::to(method_not_allowed("GET"))),
    )
    .default_service(web::to(|| async {
        LoginError(DomainError::NotFound).error_response()
    }));
}

/// The OpenAPI document as served: what utoipa generates from the handlers, plus the one
/// rule its derive cannot state — a lookup needs `eppn` or `external_id`.
pub fn openapi_document() -> serde_json::Value {
    let mut doc = serde_json::to_value(LoginApiDoc::openapi()).unwrap_or_default();
    if let Some(s) = doc.pointer_mut("/components/schemas/ResolveRequest") {
        s["anyOf"] = serde_json::json!([
            {"required": ["eppn"], "properties": {"eppn": {"type": "string"}}},
            {"required": ["external_id"], "properties": {"external_id": {"type": "object"}}}
        ]);
    }
    doc
}

/// The Swagger UI (assets compiled into the binary) and the OpenAPI document. Register
/// before the `/login/v1` scope, which would otherwise take these paths.
pub fn docs() -> SwaggerUi {
    SwaggerUi::new(format!("{DOCS_PATH}{{_:.*}}"))
        .external_url_unchecked(OPENAPI_PATH, openapi_document())
}
