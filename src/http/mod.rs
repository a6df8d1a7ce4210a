//! The HTTP room: listeners, middleware and thin handlers. A handler extracts the tenant
//! and the input, calls one service function and maps the one error enum to the
//! protocol's wire format.

pub mod access_log;
pub mod body;
pub mod egil;
pub mod login;

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};

use crate::auth::{Authenticator, Credentials, Principal, ProductPrincipal};
use crate::domain::{DomainError, LoginService, Provisioning};
use crate::protocol::egil::EgilAdapter;

/// Everything handlers need, shared by all workers.
pub struct AppState {
    pub provisioning: Provisioning,
    pub login: LoginService,
    pub auth: Authenticator,
    pub egil: EgilAdapter,
    pub max_body_bytes: usize,
    pub public_base_url: Option<String>,
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

    /// Authenticates the request's credentials.
    pub fn authenticate(&self, req: &HttpRequest) -> Result<Principal, DomainError> {
        let creds = Credentials {
            api_key: req.headers().get("x-api-key").map(|v| v.as_bytes()),
            bearer: None,
            peer_pin: None,
        };
        let p = self.auth.authenticate(&creds)?;
        access_log::set_tenant(req, p.tenant.id.as_str());
        Ok(p)
    }

    /// Authenticates a product (login API). A school owner's valid credential is
    /// `Forbidden` here, as a product's is on the provisioning endpoints.
    pub fn authenticate_product(&self, req: &HttpRequest) -> Result<ProductPrincipal, DomainError> {
        let creds = Credentials {
            api_key: req.headers().get("x-api-key").map(|v| v.as_bytes()),
            bearer: None,
            peer_pin: None,
        };
        let p = self.auth.authenticate_product(&creds)?;
        access_log::set_tenant(req, &format!("product:{}", p.product.id));
        Ok(p)
    }
}

/// Registers every route.
pub fn configure(state: Arc<AppState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(web::Data::from(state))
            .route("/healthz", web::get().to(healthz))
            .service(web::scope("/egil").configure(egil::routes))
            .service(login::docs())
            .service(web::scope("/login/v1").configure(login::routes));
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}
