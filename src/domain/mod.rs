//! The domain room: canonical model, tenants, rules that hold for every protocol, the
//! provisioning service and the one error enum. Nothing here knows HTTP, sled or a wire
//! format.

pub mod controls;
pub mod error;
pub mod jobs;
pub mod login;
pub mod model;
pub mod product;
pub mod rules;
pub mod service;
pub mod tenant;

pub use controls::{Controls, GlobalControls, Suspension, TenantControls};
pub use error::{ConflictKind, DomainError, RuleId, Violation};
pub use login::{LoginBinding, LoginService};
pub use model::{Entity, Kind, Meta, ObjectModel, OrgType, Protocol, StoredObject};
pub use product::{Product, ProductId};
pub use service::{Provisioning, WriteContext, WriteOutcome};
pub use tenant::{CivicNoPolicy, Ss12000Profile, Tenant, TenantId};
