//! Prometheus metrics through the `metrics` facade. The recorder is process-wide; the
//! admin listener serves [`PrometheusHandle::render`] at `/metrics`. Labels carry tenant
//! ids, protocols, route patterns, rule names and object types — never personal data or
//! raw paths.

use std::path::Path;
use std::sync::Mutex;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::domain::{Controls, DomainError, Kind, TenantId};
use crate::store::Store;

pub const REQUESTS: &str = "skolgrind_http_requests_total";
pub const DURATION: &str = "skolgrind_http_request_duration_seconds";
pub const OBJECTS: &str = "skolgrind_objects";
pub const VALIDATION_FAILURES: &str = "skolgrind_validation_failures_total";
pub const RATE_LIMITED: &str = "skolgrind_rate_limited_total";
pub const LOAD_SHED: &str = "skolgrind_load_shed_total";
pub const WRITES_SUSPENDED: &str = "skolgrind_tenant_writes_suspended";
pub const LOGINS_FROZEN: &str = "skolgrind_tenant_logins_frozen";
pub const READ_ONLY: &str = "skolgrind_read_only";
pub const STORE_SIZE: &str = "skolgrind_store_size_bytes";
pub const METADATA_AGE: &str = "skolgrind_federation_metadata_age_seconds";
pub const METADATA_EXPIRES_IN: &str = "skolgrind_federation_metadata_expires_in_seconds";
pub const METADATA_TRUSTED: &str = "skolgrind_federation_metadata_trusted";
pub const METADATA_EXPIRED_REFUSALS: &str = "skolgrind_federation_expired_refusals_total";
pub const LIMITER_KEYS: &str = "skolgrind_rate_limiter_keys";
pub const AUDIT_PURGED: &str = "skolgrind_audit_purged_total";

static HANDLE: Mutex<Option<PrometheusHandle>> = Mutex::new(None);

/// Installs the process-wide recorder once and returns its handle.
pub fn install() -> Result<PrometheusHandle, String> {
    let mut slot = HANDLE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(h) = slot.as_ref() {
        return Ok(h.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(DURATION.to_owned()),
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ],
        )
        .map_err(|e| format!("metrics: {e}"))?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|_| "metrics: another recorder is already installed".to_owned())?;
    describe();
    *slot = Some(handle.clone());
    Ok(handle)
}

fn describe() {
    describe_counter!(
        REQUESTS,
        "HTTP requests by tenant, protocol, route pattern and status"
    );
    describe_histogram!(
        DURATION,
        metrics::Unit::Seconds,
        "HTTP request latency by protocol and route pattern"
    );
    describe_gauge!(OBJECTS, "Stored objects by tenant and canonical type");
    describe_counter!(
        VALIDATION_FAILURES,
        "Refused payloads by protocol and validation rule"
    );
    describe_counter!(
        RATE_LIMITED,
        "Calls refused with 429, by tenant (\"-\" for per-IP) and class"
    );
    describe_counter!(LOAD_SHED, "Requests shed by reason (in_flight, timeout)");
    describe_gauge!(WRITES_SUSPENDED, "1 while a tenant's writes are suspended");
    describe_gauge!(
        METADATA_AGE,
        "Seconds since the installed federation metadata was issued (iat)"
    );
    describe_gauge!(
        METADATA_EXPIRES_IN,
        "Seconds until the installed federation metadata expires (exp)"
    );
    describe_gauge!(
        METADATA_TRUSTED,
        "1 while federation metadata is loaded and not expired"
    );
    describe_counter!(
        METADATA_EXPIRED_REFUSALS,
        "Federated-TLS requests refused because the metadata had expired"
    );
    describe_gauge!(LOGINS_FROZEN, "1 while a tenant's logins are frozen");
    describe_gauge!(READ_ONLY, "1 while the whole service is read-only");
    describe_gauge!(
        STORE_SIZE,
        metrics::Unit::Bytes,
        "Size of the data directory on disk"
    );
    describe_gauge!(LIMITER_KEYS, "Keys held by the rate limiters, by scope");
    describe_counter!(AUDIT_PURGED, "Audit entries purged by retention");
}

/// The protocol label of a request path.
pub fn protocol_of(path: &str) -> &'static str {
    if path == "/egil" || path.starts_with("/egil/") {
        "egil_scim"
    } else if path.starts_with("/login/") {
        "login"
    } else {
        "other"
    }
}

pub fn request(tenant: &str, protocol: &'static str, route: &str, status: u16, secs: f64) {
    counter!(REQUESTS,
        "tenant" => tenant.to_owned(),
        "protocol" => protocol,
        "route" => route.to_owned(),
        "status" => status.to_string())
    .increment(1);
    histogram!(DURATION, "protocol" => protocol, "route" => route.to_owned()).record(secs);
}

/// Counts a refused payload by rule (the main violation and every further one).
pub fn domain_error(protocol: &'static str, e: &DomainError) {
    if let DomainError::Invalid(v) = e {
        counter!(VALIDATION_FAILURES, "protocol" => protocol, "rule" => v.rule.as_str())
            .increment(1);
        for a in &v.also {
            counter!(VALIDATION_FAILURES, "protocol" => protocol, "rule" => a.rule.as_str())
                .increment(1);
        }
    }
}

pub fn rate_limited(tenant: &str, class: &'static str) {
    counter!(RATE_LIMITED, "tenant" => tenant.to_owned(), "class" => class).increment(1);
}

pub fn load_shed(reason: &'static str) {
    counter!(LOAD_SHED, "reason" => reason).increment(1);
}

/// An accepted write changed the number of objects of a type by `delta`.
pub fn objects_changed(tenant: &TenantId, kind: Kind, delta: f64) {
    gauge!(OBJECTS, "tenant" => tenant.as_str().to_owned(), "type" => kind.as_str())
        .increment(delta);
}

/// Sets the object gauges from the store (once at start; writes keep them current).
pub fn count_objects(store: &dyn Store, tenants: &[TenantId]) {
    for t in tenants {
        for k in Kind::ALL {
            match store.count(t, k) {
                Ok(n) => gauge!(OBJECTS, "tenant" => t.as_str().to_owned(), "type" => k.as_str())
                    .set(n as f64),
                Err(e) => tracing::warn!(error = %e, "cannot count objects for metrics"),
            }
        }
    }
}

/// Mirrors the operator controls into gauges.
pub fn controls(c: &Controls, tenants: &[TenantId]) {
    for t in tenants {
        let tc = c.tenant(t);
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        gauge!(WRITES_SUSPENDED, "tenant" => t.as_str().to_owned())
            .set(flag(tc.writes_suspended.is_some()));
        gauge!(LOGINS_FROZEN, "tenant" => t.as_str().to_owned())
            .set(flag(tc.logins_frozen.is_some()));
    }
    gauge!(READ_ONLY).set(if c.global().read_only.is_some() {
        1.0
    } else {
        0.0
    });
}

/// Sum of the file sizes under `dir` (the store's directory).
pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// Federation metadata: age since `iat`, time left until `exp`, whether it is trusted, and
/// how many connections were refused because it had expired.
pub fn federation(f: &crate::auth::federation::Freshness, now: i64) {
    if f.loaded {
        gauge!(METADATA_AGE).set((now - f.iat) as f64);
        gauge!(METADATA_EXPIRES_IN).set((f.exp - now) as f64);
    }
    gauge!(METADATA_TRUSTED).set(if f.trusted { 1.0 } else { 0.0 });
    counter!(METADATA_EXPIRED_REFUSALS).absolute(
        crate::auth::federation::EXPIRED_METADATA_REFUSALS
            .load(std::sync::atomic::Ordering::Relaxed),
    );
}

pub fn store_size(bytes: u64) {
    gauge!(STORE_SIZE).set(bytes as f64);
}

pub fn limiter_keys(scope: &'static str, n: usize) {
    gauge!(LIMITER_KEYS, "scope" => scope).set(n as f64);
}

pub fn audit_purged(n: usize) {
    counter!(AUDIT_PURGED).increment(n as u64);
}
