//! Operator controls ("nödbroms"): suspend a tenant's writes, freeze a tenant's logins, or
//! put the whole service in read-only mode. Controls are persisted in the store so they
//! survive restarts, and cached in memory because every write and every login checks them.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::error::DomainError;
use super::tenant::TenantId;
use crate::store::Store;

/// Why and since when something is stopped, and by whom (an operator label).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspension {
    pub reason: String,
    pub since: DateTime<Utc>,
    pub by: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantControls {
    /// Provisioning writes are refused with 503 and this reason.
    #[serde(default)]
    pub writes_suspended: Option<Suspension>,
    /// Login resolution answers "no match" (`tenant_suspended`).
    #[serde(default)]
    pub logins_frozen: Option<Suspension>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalControls {
    /// Every provisioning write is refused with 503 and this reason.
    #[serde(default)]
    pub read_only: Option<Suspension>,
}

/// How long a client is told to wait before retrying a suspended write.
pub const SUSPENDED_RETRY_AFTER_SECS: u64 = 300;

const GLOBAL_KEY: &str = "controls/global";

fn tenant_key(t: &TenantId) -> String {
    format!("controls/tenant/{t}")
}

pub struct Controls {
    store: Arc<dyn Store>,
    tenants: RwLock<HashMap<TenantId, TenantControls>>,
    global: RwLock<GlobalControls>,
}

impl Controls {
    /// Loads the persisted controls of the given tenants.
    pub fn load(store: Arc<dyn Store>, tenants: &[TenantId]) -> Result<Self, DomainError> {
        let mut map = HashMap::new();
        for t in tenants {
            if let Some(v) = store.get_setting(&tenant_key(t))? {
                map.insert(t.clone(), decode(&v)?);
            }
        }
        let global = match store.get_setting(GLOBAL_KEY)? {
            Some(v) => decode(&v)?,
            None => GlobalControls::default(),
        };
        Ok(Self {
            store,
            tenants: RwLock::new(map),
            global: RwLock::new(global),
        })
    }

    pub fn tenant(&self, t: &TenantId) -> TenantControls {
        self.tenants
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(t)
            .cloned()
            .unwrap_or_default()
    }

    pub fn global(&self) -> GlobalControls {
        self.global
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// `Err(Suspended)` if writes of this tenant are stopped (globally or for the tenant).
    pub fn check_write(&self, t: &TenantId) -> Result<(), DomainError> {
        let suspended = |s: &Suspension| DomainError::Suspended {
            reason: s.reason.clone(),
            retry_after_secs: SUSPENDED_RETRY_AFTER_SECS,
        };
        if let Some(s) = &self
            .global
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .read_only
        {
            return Err(suspended(s));
        }
        match self
            .tenants
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(t)
            .and_then(|c| c.writes_suspended.as_ref())
        {
            Some(s) => Err(suspended(s)),
            None => Ok(()),
        }
    }

    /// Whether logins of this tenant are frozen.
    pub fn logins_frozen(&self, t: &TenantId) -> bool {
        self.tenants
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(t)
            .is_some_and(|c| c.logins_frozen.is_some())
    }

    /// Changes a tenant's controls durably, then in memory.
    pub async fn update_tenant(
        &self,
        t: &TenantId,
        f: impl FnOnce(&mut TenantControls),
    ) -> Result<TenantControls, DomainError> {
        let mut c = self.tenant(t);
        f(&mut c);
        self.store
            .put_setting(&tenant_key(t), encode(&c)?)?
            .wait()
            .await?;
        self.tenants
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(t.clone(), c.clone());
        Ok(c)
    }

    /// Changes the global controls durably, then in memory.
    pub async fn update_global(
        &self,
        f: impl FnOnce(&mut GlobalControls),
    ) -> Result<GlobalControls, DomainError> {
        let mut g = self.global();
        f(&mut g);
        self.store
            .put_setting(GLOBAL_KEY, encode(&g)?)?
            .wait()
            .await?;
        *self.global.write().unwrap_or_else(|p| p.into_inner()) = g.clone();
        Ok(g)
    }
}

fn encode<T: Serialize>(t: &T) -> Result<Vec<u8>, DomainError> {
    serde_json::to_vec(t).map_err(|_| DomainError::Internal)
}

fn decode<T: serde::de::DeserializeOwned>(v: &[u8]) -> Result<T, DomainError> {
    serde_json::from_slice(v).map_err(|e| {
        tracing::error!(error = %e, "stored controls could not be decoded");
        DomainError::Internal
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    fn s(reason: &str) -> Suspension {
        Suspension {
            reason: reason.into(),
            since: Utc::now(),
            by: "ops".into(),
        }
    }

    #[tokio::test]
    async fn suspend_resume_and_reload() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::in_memory());
        let a = TenantId::parse("a").unwrap();
        let b = TenantId::parse("b").unwrap();
        let c = Controls::load(store.clone(), &[a.clone(), b.clone()]).unwrap();
        assert!(c.check_write(&a).is_ok());
        c.update_tenant(&a, |t| t.writes_suspended = Some(s("runaway client")))
            .await
            .unwrap();
        assert_eq!(
            c.check_write(&a),
            Err(DomainError::Suspended {
                reason: "runaway client".into(),
                retry_after_secs: SUSPENDED_RETRY_AFTER_SECS
            })
        );
        assert!(c.check_write(&b).is_ok());
        // Persisted: a fresh load sees it.
        let reloaded = Controls::load(store.clone(), &[a.clone(), b.clone()]).unwrap();
        assert!(reloaded.check_write(&a).is_err());
        c.update_tenant(&a, |t| t.writes_suspended = None)
            .await
            .unwrap();
        assert!(c.check_write(&a).is_ok());
        c.update_global(|g| g.read_only = Some(s("migration")))
            .await
            .unwrap();
        assert!(c.check_write(&b).is_err());
        c.update_tenant(&b, |t| t.logins_frozen = Some(s("incident")))
            .await
            .unwrap();
        assert!(c.logins_frozen(&b));
        assert!(!c.logins_frozen(&a));
    }
}
