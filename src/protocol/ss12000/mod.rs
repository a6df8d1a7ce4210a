//! SS12000:2020 push: a Provisioning API wire-compatible with Skolverket's DNP
//! Provisioning API (bulk jobs under `/provisioning/v1`).
//!
//! * [`types`] — the five resource types;
//! * [`schema`] — the embedded JSON Schemas (`schemas/ss12000/`), compiled once;
//! * [`wire`] — an item into the canonical model;
//! * [`profile`] — the per-tenant `dnp` / `generic` validation rules;
//! * [`runner`] — the worker pool that processes durable jobs;
//! * [`paging`] — tamper-proof page tokens;
//! * [`render`] — documents, job status and LogEntry errors.

pub mod paging;
pub mod profile;
pub mod render;
pub mod runner;
pub mod schema;
pub mod types;
pub mod wire;

use std::sync::Arc;

pub use types::Ss12Type;

use crate::domain::jobs::Jobs;

/// Limits of the push API.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_items: usize,
}

/// Everything the push API handlers need besides the provisioning service.
pub struct Ss12000Adapter {
    pub schemas: Arc<schema::Schemas>,
    pub tokens: paging::PageTokens,
    pub jobs: Jobs,
    pub queue: runner::JobQueue,
    pub limits: Limits,
}
