//! EGIL SCIM: the SCIM 2.0 profile of SS12000:2018 pushed by the EGIL client.
//!
//! * [`types`] — the seven resource types and their endpoints;
//! * [`schema`] — the embedded JSON Schemas (from `schemas/egil/`), compiled once;
//! * [`wire`] — parsing a body into the canonical model (see `docs/canonical-model.md`);
//! * [`render`] — resources, list responses and SCIM errors;
//! * [`filter`] — the supported `filter` expressions;
//! * [`discovery`] — `/ServiceProviderConfig`, `/ResourceTypes`, `/Schemas`.

pub mod discovery;
pub mod filter;
pub mod render;
pub mod schema;
pub mod types;
pub mod wire;

pub use types::EgilType;

/// The adapter: compiled schemas and the discovery documents built from them.
pub struct EgilAdapter {
    schemas: schema::Schemas,
}

impl EgilAdapter {
    /// Compiles the embedded schemas. Fails only if an embedded schema is broken, which the
    /// test suite rules out.
    pub fn new() -> Result<Self, String> {
        Ok(Self {
            schemas: schema::Schemas::compile()?,
        })
    }

    pub fn schemas(&self) -> &schema::Schemas {
        &self.schemas
    }
}
