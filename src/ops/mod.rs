//! The operations room: rate limits, load shedding, metrics, the admin API's settings,
//! audit retention and the periodic upkeep that keeps them bounded. The HTTP middleware
//! and the admin listener that use it live in `http::guard` and `http::admin`.

pub mod cli;
pub mod config;
pub mod metrics;
pub mod ratelimit;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::Semaphore;

use crate::domain::{Controls, TenantId};
use crate::store::Store;
use config::OpsRuntime;
use ratelimit::{IpLimits, ProductLimits, TenantLimits};

/// Shared operations state (one per server).
pub struct Ops {
    pub config: OpsRuntime,
    pub tenants: TenantLimits,
    pub ips: IpLimits,
    pub products: ProductLimits,
    pub in_flight: Arc<Semaphore>,
    pub metrics: PrometheusHandle,
    /// The store's directory, for the store-size gauge (none for in-memory stores).
    pub data_dir: Option<PathBuf>,
}

impl Ops {
    pub fn new(config: OpsRuntime, data_dir: Option<PathBuf>) -> Result<Self, String> {
        Ok(Self {
            tenants: TenantLimits::new(&config)?,
            ips: IpLimits::new(config.unauthenticated_per_ip)?,
            products: ProductLimits::new(config.product_lookups)?,
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            metrics: metrics::install()?,
            data_dir,
            config,
        })
    }
}

const METRICS_UPKEEP: Duration = Duration::from_secs(5);
const LIMITER_UPKEEP: Duration = Duration::from_secs(60);
const AUDIT_PURGE: Duration = Duration::from_secs(3600);

/// Removes audit entries older than the retention; returns how many.
pub fn purge_audit(store: &dyn Store, retention_days: u32) -> usize {
    if retention_days == 0 {
        return 0;
    }
    let cutoff = chrono::Utc::now() - chrono::Duration::days(i64::from(retention_days));
    match store.purge_audit_before(cutoff) {
        Ok(n) => {
            if n > 0 {
                tracing::info!(purged = n, retention_days, "audit entries purged");
            }
            metrics::audit_purged(n);
            n
        }
        Err(e) => {
            tracing::error!(error = %e, "audit purge failed");
            0
        }
    }
}

/// The periodic upkeep: metrics upkeep and gauges, limiter clean-up, audit retention.
/// Runs until the runtime stops. (The object gauges are counted once before the listener
/// starts, see `app::serve`, and kept current by the write handlers.)
pub async fn upkeep(
    ops: Arc<Ops>,
    store: Arc<dyn Store>,
    controls: Arc<Controls>,
    tenants: Vec<TenantId>,
    federation: Option<Arc<crate::auth::federation::Federation>>,
) {
    let mut tick = tokio::time::interval(METRICS_UPKEEP);
    let mut last_limiter = tokio::time::Instant::now();
    let mut last_purge: Option<tokio::time::Instant> = None;
    loop {
        tick.tick().await;
        ops.metrics.run_upkeep();
        metrics::controls(&controls, &tenants);
        if let Some(f) = &federation {
            metrics::federation(&f.freshness(), chrono::Utc::now().timestamp());
        }
        if let Some(d) = &ops.data_dir {
            metrics::store_size(metrics::dir_size(d));
        }
        if last_limiter.elapsed() >= LIMITER_UPKEEP {
            last_limiter = tokio::time::Instant::now();
            metrics::limiter_keys("tenant", ops.tenants.upkeep());
            metrics::limiter_keys("ip", ops.ips.upkeep());
            metrics::limiter_keys("product", ops.products.upkeep());
        }
        if last_purge.is_none_or(|t| t.elapsed() >= AUDIT_PURGE) {
            last_purge = Some(tokio::time::Instant::now());
            let store = store.clone();
            let days = ops.config.audit_retention_days;
            // The purge scans the trail: keep it off the async workers.
            let _ = tokio::task::spawn_blocking(move || purge_audit(&*store, days)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Kind, Protocol};
    use crate::store::memory::MemoryStore;
    use crate::store::{Decision, WriteEvent};

    #[tokio::test]
    async fn purge_keeps_entries_within_the_retention() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::in_memory());
        let t = TenantId::parse("a").unwrap();
        for (id, days_ago) in [("x1", 500), ("x2", 10)] {
            let event = WriteEvent {
                protocol: Protocol::EgilScim,
                credential: "k".into(),
                at: chrono::Utc::now() - chrono::Duration::days(days_ago),
            };
            // A delete of an absent object still records an audit entry.
            store
                .write(&t, Kind::Group, id, &event, &mut |_| Ok(Decision::Delete))
                .unwrap()
                .durable
                .wait()
                .await
                .unwrap();
        }
        assert_eq!(purge_audit(&*store, 0), 0, "0 keeps everything");
        assert_eq!(store.audit(&t, 0, 10).unwrap().len(), 2);
        assert_eq!(purge_audit(&*store, 400), 1);
        let left = store.audit(&t, 0, 10).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].id, "x2");
    }
}
