//! Readiness follows the store: a store whose writes fail makes `/readyz` answer 503 on
//! both listeners' route sets while `/healthz` stays 200.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix_web::{test, App};
use skolgrind::store::kv::{Kv, KvOp, KvStore};
use skolgrind::store::memory::MemoryKv;
use skolgrind::store::{Durable, StoreError};

/// A working in-memory engine whose disk "fails" once `broken` is set: every write then
/// returns an I/O error, as a full or vanished disk would. Injected below the key layout,
/// so the real `Store` implementation (and its health probe) runs on top of it.
struct FlakyKv {
    inner: MemoryKv,
    broken: Arc<AtomicBool>,
}

impl FlakyKv {
    fn check(&self) -> Result<(), StoreError> {
        if self.broken.load(Ordering::SeqCst) {
            Err(StoreError::Io("disk unavailable (injected)".into()))
        } else {
            Ok(())
        }
    }
}

impl Kv for FlakyKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key)
    }
    fn scan(
        &self,
        prefix: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        self.inner.scan(prefix, f)
    }
    fn scan_after(
        &self,
        prefix: &[u8],
        after: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        self.inner.scan_after(prefix, after, f)
    }
    fn apply(&self, ops: Vec<KvOp>) -> Result<(), StoreError> {
        self.check()?;
        self.inner.apply(ops)
    }
    fn next_seq(&self) -> Result<u64, StoreError> {
        self.inner.next_seq()
    }
    fn durable(&self) -> Durable {
        self.inner.durable()
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.check()?;
        self.inner.flush()
    }
}

#[actix_web::test]
async fn readiness_fails_when_the_store_is_unavailable() {
    let rt = skolgrind::config::load_defaults("k").unwrap();
    let broken = Arc::new(AtomicBool::new(false));
    let store = Arc::new(KvStore::new(FlakyKv {
        inner: MemoryKv::default(),
        broken: broken.clone(),
    }));
    let state = skolgrind::app::state_with_store(&rt, store).unwrap();
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

    broken.store(true, Ordering::SeqCst);
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

    broken.store(false, Ordering::SeqCst);
    assert_eq!(
        test::call_service(&public, status("/readyz"))
            .await
            .status(),
        200
    );
}
