//! Readiness follows the store: a store whose writes fail makes `/readyz` answer 503 on
//! both listeners' route sets while `/healthz` stays 200.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix_web::{test, App};
use chrono::{DateTime, Utc};
use skolgrind::domain::{DomainError, Kind, StoredObject, TenantId};
use skolgrind::store::memory::MemoryStore;
use skolgrind::store::{
    AuditRecord, ChangeRecord, Committed, Decide, Durable, Store, StoreError, WriteEvent,
};

/// A working in-memory store whose disk "fails" once `broken` is set: every write and the
/// health probe then return an I/O error, as a full or vanished disk would.
struct Flaky {
    inner: MemoryStore,
    broken: AtomicBool,
}

impl Flaky {
    fn check(&self) -> Result<(), StoreError> {
        if self.broken.load(Ordering::SeqCst) {
            Err(StoreError::Io("disk unavailable (injected)".into()))
        } else {
            Ok(())
        }
    }
}

impl Store for Flaky {
    fn get(&self, t: &TenantId, k: Kind, id: &str) -> Result<Option<StoredObject>, StoreError> {
        self.inner.get(t, k, id)
    }
    fn count(&self, t: &TenantId, k: Kind) -> Result<usize, StoreError> {
        self.inner.count(t, k)
    }
    fn page(
        &self,
        t: &TenantId,
        k: Kind,
        o: usize,
        l: usize,
    ) -> Result<Vec<StoredObject>, StoreError> {
        self.inner.page(t, k, o, l)
    }
    fn find_eppn(&self, e: &str) -> Result<Option<(TenantId, String)>, StoreError> {
        self.inner.find_eppn(e)
    }
    fn find_civic_no(&self, t: &TenantId, c: &str) -> Result<Vec<String>, StoreError> {
        self.inner.find_civic_no(t, c)
    }
    fn write(
        &self,
        t: &TenantId,
        k: Kind,
        id: &str,
        e: &WriteEvent,
        d: Decide<'_>,
    ) -> Result<Committed, DomainError> {
        self.check()?;
        self.inner.write(t, k, id, e, d)
    }
    fn changes(&self, a: u64, l: usize) -> Result<Vec<ChangeRecord>, StoreError> {
        self.inner.changes(a, l)
    }
    fn audit(&self, t: &TenantId, a: u64, l: usize) -> Result<Vec<AuditRecord>, StoreError> {
        self.inner.audit(t, a, l)
    }
    fn purge_audit_before(&self, c: DateTime<Utc>) -> Result<usize, StoreError> {
        self.check()?;
        self.inner.purge_audit_before(c)
    }
    fn get_setting(&self, k: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get_setting(k)
    }
    fn put_setting(&self, k: &str, v: Vec<u8>) -> Result<Durable, StoreError> {
        self.check()?;
        self.inner.put_setting(k, v)
    }
    fn check_health(&self) -> Result<(), StoreError> {
        self.check()?;
        self.inner.check_health()
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.check()?;
        self.inner.flush()
    }
}

#[actix_web::test]
async fn readiness_fails_when_the_store_is_unavailable() {
    let rt = skolgrind::config::load_defaults("k").unwrap();
    let store = Arc::new(Flaky {
        inner: MemoryStore::in_memory(),
        broken: AtomicBool::new(false),
    });
    let state = skolgrind::app::state_with_store(&rt, store.clone()).unwrap();
    let public =
        test::init_service(App::new().configure(skolgrind::http::configure(state.clone()))).await;
    let admin =
        test::init_service(App::new().configure(skolgrind::http::admin::configure(state))).await;
    let status = |path: &str| test::TestRequest::get().uri(path).to_request();

    assert_eq!(
        test::call_service(&public, status("/readyz"))
            .await
            .status(),
        200
    );
    assert_eq!(
        test::call_service(&admin, status("/readyz")).await.status(),
        200
    );

    store.broken.store(true, Ordering::SeqCst);
    for res in [
        test::call_service(&public, status("/readyz")).await,
        test::call_service(&admin, status("/readyz")).await,
    ] {
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers().get("retry-after").unwrap(), "5");
    }
    // Alive all the same.
    assert_eq!(
        test::call_service(&public, status("/healthz"))
            .await
            .status(),
        200
    );
    assert_eq!(
        test::call_service(&admin, status("/healthz"))
            .await
            .status(),
        200
    );

    store.broken.store(false, Ordering::SeqCst);
    assert_eq!(
        test::call_service(&public, status("/readyz"))
            .await
            .status(),
        200
    );
}
