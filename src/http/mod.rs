//! The HTTP room: listeners, middleware and thin handlers. A handler extracts the tenant
//! and the input, calls one service function and maps the one error enum to the
//! protocol's wire format.

pub mod access_log;
pub mod admin;
pub mod body;
pub mod egil;
pub mod errors;
pub mod guard;
pub mod login;
pub mod provisioning;
pub mod tls;

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};

use crate::auth::{Authenticator, Credentials, Principal, ProductPrincipal};
use crate::domain::{DomainError, LoginService, Provisioning};
use crate::protocol::egil::EgilAdapter;
use crate::protocol::ss12000::Ss12000Adapter;

/// Everything handlers need, shared by all workers.
pub struct AppState {
    pub provisioning: Provisioning,
    pub login: LoginService,
    pub auth: Authenticator,
    pub egil: EgilAdapter,
    pub ss12000: Ss12000Adapter,
    pub max_body_bytes: usize,
    pub public_base_url: Option<String>,
    /// Rate limits, load shedding, metrics (see `crate::ops`).
    pub ops: Arc<crate::ops::Ops>,
    /// Federation metadata and JWKS refreshed in the background.
    pub trust: crate::auth::Trust,
}

impl AppState {
    /// The absolute URL of this server as the client sees it.
    pub fn base_url(&self, req: &HttpRequest) -> String {
        match &self.public_base_url {
            Some(u) => u.clone(),
            None => {
                let ci = req.connection_info();
                format!("{}://{}", ci.scheme(), ci.host())
            }
        }
    }

    /// Authenticates the request's credentials, then takes the call from the tenant's
    /// rate-limit quota (the single choke point: see `guard::admit`).
    pub fn authenticate(&self, req: &HttpRequest) -> Result<Principal, DomainError> {
        let p = self.auth.authenticate(&credentials(req))?;
        guard::admit(self, req, &p.tenant.id)?;
        Ok(p)
    }

    /// Authenticates a product (login API). A school owner's valid credential is
    /// `Forbidden` here, as a product's is on the provisioning endpoints.
    pub fn authenticate_product(&self, req: &HttpRequest) -> Result<ProductPrincipal, DomainError> {
        self.authenticate_product_for(req, 1)
    }

    /// As [`Self::authenticate_product`], taking `lookups` calls from the product's quota
    /// (0: the handler takes them once it knows how many, e.g. a batch).
    pub fn authenticate_product_for(
        &self,
        req: &HttpRequest,
        lookups: u32,
    ) -> Result<ProductPrincipal, DomainError> {
        let p = self.auth.authenticate_product(&credentials(req))?;
        guard::admit_product(self, req, p.product.id.as_str(), lookups)?;
        Ok(p)
    }
}

/// Every credential a request carries, for either kind of principal.
fn credentials(req: &HttpRequest) -> Credentials<'_> {
    Credentials {
        api_key: req.headers().get("x-api-key").map(|v| v.as_bytes()),
        bearer: bearer_token(req),
        peer_pin: req
            .conn_data::<tls::PeerPin>()
            .and_then(|p| p.current(chrono::Utc::now().timestamp())),
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer_token(req: &HttpRequest) -> Option<&str> {
    let v = req.headers().get("authorization")?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Registers every route.
pub fn configure(state: Arc<AppState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(web::Data::from(state))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(admin::readyz))
            .service(web::scope("/egil").configure(egil::routes))
            .service(web::scope("/provisioning/v1").configure(provisioning::routes))
            .service(login::docs())
            .service(web::scope("/login/v1").configure(login::routes));
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}
