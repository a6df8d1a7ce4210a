//! Authentication: from the credentials a request carries to a [`Principal`].
//!
//! Each mechanism is one [`Mechanism`] in an ordered chain. A mechanism looks only at its
//! own credential: if the request does not carry it, it answers `NotPresent` and the next
//! one is asked; if it does, its answer (accepted or refused) is final. API keys are the
//! first; JWT bearer tokens ([`jwt`]) and federated TLS ([`federation`], a peer
//! certificate pin) follow, all through [`Credentials`].

pub mod api_key;
pub mod config;
pub mod devpki;
pub mod federation;
pub mod fetch;
pub mod jwt;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::NaiveDate;

use crate::domain::{DomainError, Product, ProductId, Tenant, TenantId};

/// What a request presents. Filled by the HTTP layer; mechanisms never see HTTP types.
#[derive(Debug, Default, Clone, Copy)]
pub struct Credentials<'a> {
    /// The `X-API-Key` header.
    pub api_key: Option<&'a [u8]>,
    /// The token of an `Authorization: Bearer` header.
    pub bearer: Option<&'a str>,
    /// The SHA-256 SPKI pin (base64) of a TLS client certificate.
    pub peer_pin: Option<&'a str>,
}

/// An authenticated school owner.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant: Arc<Tenant>,
    /// A label of the credential used (`api-key:kommunen#1`), for logs and the audit trail.
    pub credential: String,
}

/// An authenticated product of the supplier (a caller of the login API).
#[derive(Debug, Clone)]
pub struct ProductPrincipal {
    pub product: Arc<Product>,
    /// A label of the credential used (`api-key:product:dnp#1`).
    pub credential: String,
}

pub enum Outcome {
    NotPresent,
    Accepted {
        tenant: TenantId,
        credential: String,
    },
    /// A valid credential of a product (login API), not of a school owner.
    AcceptedProduct {
        product: ProductId,
        credential: String,
    },
    Refused,
    /// The credential is genuine but grants no access here (no tenant mapped, wrong
    /// location or entity): 403.
    Forbidden,
}

pub trait Mechanism: Send + Sync {
    fn authenticate(&self, creds: &Credentials<'_>, today: NaiveDate) -> Outcome;
}

/// Live trust state that background tasks refresh (federation metadata, JWKS).
#[derive(Debug, Default, Clone)]
pub struct Trust {
    pub federation: Option<Arc<federation::Federation>>,
    pub jwks: Vec<Arc<jwt::Jwks>>,
}

impl Trust {
    /// Builds the trust state and the mechanisms (after API keys) it feeds: JWT bearer
    /// tokens, then the federated-TLS client pin. File sources are loaded now.
    pub fn build(
        rt: &config::AuthRuntime,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<(Trust, Vec<Box<dyn Mechanism>>), String> {
        let mut trust = Trust::default();
        let mut mechs: Vec<Box<dyn Mechanism>> = Vec::new();
        let mut issuers = Vec::new();
        for j in &rt.jwt {
            let jwks = jwt::Jwks::new(
                j.jwks.clone(),
                j.min_refresh,
                j.refresh_every,
                j.fetch_roots.clone(),
            );
            jwks.load_now()
                .map_err(|e| format!("jwt issuer {}: JWKS: {e}", j.issuer))?;
            trust.jwks.push(jwks.clone());
            issuers.push(jwt::Issuer {
                issuer: j.issuer.clone(),
                audiences: j.audiences.clone(),
                algorithms: j.algorithms.clone(),
                jwks,
                tenant_claim: j.tenant_claim.clone(),
                leeway_secs: j.leeway_secs,
                entity_ids: j.entity_ids.clone(),
                access: j
                    .access
                    .clone()
                    .map(|(access_type, location)| jwt::AccessRule {
                        access_type,
                        location,
                    }),
                tenants: j.tenants.clone(),
            });
        }
        if !issuers.is_empty() {
            mechs.push(Box::new(jwt::JwtBearer::new(issuers)));
        }
        if let Some(f) = &rt.federation {
            let fed = federation::Federation::new(f.clone(), provider);
            mechs.push(Box::new(federation::FederatedTls::new(fed.clone())));
            trust.federation = Some(fed);
        }
        Ok((trust, mechs))
    }
}

pub struct Authenticator {
    tenants: HashMap<TenantId, Arc<Tenant>>,
    products: HashMap<ProductId, Arc<Product>>,
    mechanisms: Vec<Box<dyn Mechanism>>,
}

impl Authenticator {
    pub fn new(tenants: Vec<Arc<Tenant>>, mechanisms: Vec<Box<dyn Mechanism>>) -> Self {
        Self {
            tenants: tenants.into_iter().map(|t| (t.id.clone(), t)).collect(),
            products: HashMap::new(),
            mechanisms,
        }
    }

    /// The products whose credentials the login API accepts.
    pub fn with_products(mut self, products: Vec<Arc<Product>>) -> Self {
        self.products = products.into_iter().map(|p| (p.id.clone(), p)).collect();
        self
    }

    /// The product for these credentials: `Unauthorized` for none or unknown ones,
    /// `Forbidden` for a valid school-owner credential (the login API is for products).
    pub fn authenticate_product(
        &self,
        creds: &Credentials<'_>,
    ) -> Result<ProductPrincipal, DomainError> {
        let today = chrono::Utc::now().date_naive();
        for m in &self.mechanisms {
            match m.authenticate(creds, today) {
                Outcome::NotPresent => continue,
                Outcome::Refused => return Err(DomainError::Unauthorized),
                // A school owner's credential (or one that grants nothing here).
                Outcome::Accepted { .. } | Outcome::Forbidden => {
                    return Err(DomainError::Forbidden)
                }
                Outcome::AcceptedProduct {
                    product,
                    credential,
                } => {
                    let product = self
                        .products
                        .get(&product)
                        .cloned()
                        .ok_or(DomainError::Unauthorized)?;
                    return Ok(ProductPrincipal {
                        product,
                        credential,
                    });
                }
            }
        }
        Err(DomainError::Unauthorized)
    }

    pub fn tenant(&self, id: &TenantId) -> Option<&Arc<Tenant>> {
        self.tenants.get(id)
    }

    pub fn tenants(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.tenants.values()
    }

    /// The principal for these credentials, or `Unauthorized` (the answer never says
    /// whether a tenant exists).
    pub fn authenticate(&self, creds: &Credentials<'_>) -> Result<Principal, DomainError> {
        let today = chrono::Utc::now().date_naive();
        for m in &self.mechanisms {
            match m.authenticate(creds, today) {
                Outcome::NotPresent => continue,
                Outcome::Refused => return Err(DomainError::Unauthorized),
                Outcome::Forbidden => return Err(DomainError::Forbidden),
                // A product's credential is valid, but not for provisioning.
                Outcome::AcceptedProduct { .. } => return Err(DomainError::Forbidden),
                Outcome::Accepted { tenant, credential } => {
                    let tenant = self
                        .tenants
                        .get(&tenant)
                        .cloned()
                        .ok_or(DomainError::Unauthorized)?;
                    return Ok(Principal { tenant, credential });
                }
            }
        }
        Err(DomainError::Unauthorized)
    }
}
