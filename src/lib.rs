//! Skolgrind: a receiving gateway for Swedish school provisioning (SS12000).
//!
//! The crate is layered; each folder is one room (see `docs/architecture.md`):
//!
//! * [`domain`] — the canonical model, tenants, rules, services and the one error enum.
//!   Knows no HTTP, no storage engine and no wire format.
//! * [`protocol`] — wire adapters (EGIL SCIM today): parse, schema-validate, translate to
//!   and from the canonical model, render the protocol's own error format.
//! * [`store`] — the [`store::Store`] trait with a sled and an in-memory implementation.
//! * [`auth`] — turns request credentials into a [`auth::Principal`].
//! * [`http`] — thin actix-web handlers and middleware that wire the rooms together.
//! * [`config`] and [`app`] — configuration loading/validation and server assembly.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod app;
pub mod auth;
pub mod config;
pub mod domain;
pub mod http;
pub mod ops;
pub mod protocol;
pub mod store;
