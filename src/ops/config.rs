//! Configuration sections of the operations room: `[admin]`, `[rate_limits]`, `[load]` and
//! `[audit]`. Each has defaults, so a config file may omit them.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use validator::{Validate, ValidationError};

use crate::auth::api_key::parse_hash;
use crate::domain::TenantId;

fn err(code: &'static str, msg: impl Into<std::borrow::Cow<'static, str>>) -> ValidationError {
    ValidationError::new(code).with_message(msg.into())
}

/// The admin listener (emergency brake, audit, metrics, health).
#[derive(Debug, Clone, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `IP:port` of the admin listener; keep it on loopback or an internal network.
    #[serde(default = "default_admin_listen")]
    #[validate(custom(function = "check_listen"))]
    pub listen: String,
    /// Admin bearer tokens as `"sha256:<hex>"` or `{ hash, label }` (see `hash-key`).
    /// Without any, the admin API refuses every call (health and metrics still answer).
    #[serde(default)]
    #[validate(custom(function = "check_tokens"))]
    pub tokens: Vec<AdminTokenConfig>,
}

pub fn default_admin_listen() -> String {
    "127.0.0.1:8081".into()
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
            tokens: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AdminTokenConfig {
    Hash(String),
    Detailed {
        hash: String,
        #[serde(default)]
        label: Option<String>,
    },
}

impl AdminTokenConfig {
    fn hash(&self) -> &str {
        match self {
            AdminTokenConfig::Hash(h) | AdminTokenConfig::Detailed { hash: h, .. } => h,
        }
    }
}

fn check_listen(s: &str) -> Result<(), ValidationError> {
    s.parse::<SocketAddr>()
        .map(|_| ())
        .map_err(|_| err("listen", "expected IP:port, e.g. 127.0.0.1:8081"))
}

fn check_tokens(tokens: &[AdminTokenConfig]) -> Result<(), ValidationError> {
    for (i, t) in tokens.iter().enumerate() {
        if parse_hash(t.hash()).is_none() {
            return Err(err(
                "admin_token",
                format!("[{i}]: expected \"sha256:\" followed by 64 hex digits (see `skolgrind hash-key`)"),
            ));
        }
    }
    Ok(())
}

/// `requests` calls per `per_seconds` seconds, all of which may come at once (burst).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    #[validate(range(min = 1, max = 1000000))]
    pub requests: u32,
    #[serde(default = "one")]
    #[validate(range(min = 1, max = 86400))]
    pub per_seconds: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct TenantQuotas {
    #[serde(default)]
    #[validate(nested)]
    pub writes: Option<QuotaConfig>,
    #[serde(default)]
    #[validate(nested)]
    pub reads: Option<QuotaConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Default quota of write calls (POST, PUT, PATCH, DELETE) per tenant.
    #[serde(default = "default_writes")]
    #[validate(nested)]
    pub writes: QuotaConfig,
    /// Default quota of read calls (GET, HEAD) per tenant.
    #[serde(default = "default_reads")]
    #[validate(nested)]
    pub reads: QuotaConfig,
    /// Per client IP: calls without credentials and failed authentications. Beyond it
    /// the IP is refused (429) before any authentication work.
    #[serde(default = "default_unauthenticated")]
    #[validate(nested)]
    pub unauthenticated_per_ip: QuotaConfig,
    /// Per product (login API caller): every lookup draws one call, so a batch of 1,000
    /// draws 1,000. Keeps one product's storm from starving provisioning and others.
    #[serde(default = "default_product_lookups")]
    #[validate(nested)]
    pub product_lookups: QuotaConfig,
    /// Per-tenant overrides, by tenant id: `[rate_limits.tenants.kommunen] writes = {…}`.
    #[serde(default)]
    #[validate(custom(function = "check_overrides"))]
    pub tenants: BTreeMap<String, TenantQuotas>,
}

fn default_writes() -> QuotaConfig {
    QuotaConfig {
        requests: 200,
        per_seconds: 1,
    }
}

fn default_reads() -> QuotaConfig {
    QuotaConfig {
        requests: 200,
        per_seconds: 1,
    }
}

fn default_product_lookups() -> QuotaConfig {
    QuotaConfig {
        requests: 5000,
        per_seconds: 1,
    }
}

fn default_unauthenticated() -> QuotaConfig {
    QuotaConfig {
        requests: 60,
        per_seconds: 60,
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            writes: default_writes(),
            reads: default_reads(),
            unauthenticated_per_ip: default_unauthenticated(),
            product_lookups: default_product_lookups(),
            tenants: BTreeMap::new(),
        }
    }
}

fn check_overrides(m: &BTreeMap<String, TenantQuotas>) -> Result<(), ValidationError> {
    for (id, q) in m {
        if !TenantId::is_valid(id) {
            return Err(err(
                "tenant_id",
                format!("[\"{id}\"]: not a valid tenant id"),
            ));
        }
        if q.validate().is_err() {
            return Err(err(
                "quota",
                format!("[\"{id}\"]: requests must be 1–1000000 and per_seconds 1–86400"),
            ));
        }
    }
    Ok(())
}

/// Load shedding.
#[derive(Debug, Clone, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct LoadConfig {
    /// Requests in flight at once on the public listener; beyond: 503 + Retry-After.
    #[serde(default = "default_in_flight")]
    #[validate(range(min = 1, max = 1000000))]
    pub max_in_flight: usize,
    /// Longest time a request may take (body upload included); beyond: 503.
    #[serde(default = "default_timeout")]
    #[validate(range(min = 1, max = 3600))]
    pub request_timeout_secs: u64,
}

fn default_in_flight() -> usize {
    1024
}

fn default_timeout() -> u64 {
    60
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            max_in_flight: default_in_flight(),
            request_timeout_secs: default_timeout(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Audit entries older than this many days are purged (0: keep forever).
    #[serde(default = "default_retention")]
    #[validate(range(min = 0, max = 36500))]
    pub retention_days: u32,
}

fn default_retention() -> u32 {
    400
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            retention_days: default_retention(),
        }
    }
}

/// A validated quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    pub requests: u32,
    pub per: Duration,
}

impl From<QuotaConfig> for Quota {
    fn from(q: QuotaConfig) -> Self {
        Quota {
            requests: q.requests,
            per: Duration::from_secs(u64::from(q.per_seconds)),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AdminToken {
    pub hash: [u8; 32],
    pub label: String,
}

/// The operations settings, validated.
#[derive(Debug, Clone)]
pub struct OpsRuntime {
    pub admin_listen: SocketAddr,
    pub admin_tokens: Vec<AdminToken>,
    pub writes: Quota,
    pub reads: Quota,
    pub unauthenticated_per_ip: Quota,
    pub product_lookups: Quota,
    pub tenant_quotas: HashMap<TenantId, (Option<Quota>, Option<Quota>)>,
    pub max_in_flight: usize,
    pub request_timeout: Duration,
    pub audit_retention_days: u32,
}

/// Builds the runtime form; `tenants` are the configured tenant ids (overrides must name
/// one of them).
pub fn to_runtime(
    admin: &AdminConfig,
    rl: &RateLimitConfig,
    load: &LoadConfig,
    audit: &AuditConfig,
    tenants: &[TenantId],
) -> Result<OpsRuntime, Vec<String>> {
    let mut errors = Vec::new();
    let admin_listen = admin
        .listen
        .parse()
        .map_err(|_| vec!["admin.listen: expected IP:port".to_owned()])?;
    let mut admin_tokens = Vec::new();
    for (i, t) in admin.tokens.iter().enumerate() {
        match parse_hash(t.hash()) {
            Some(hash) => admin_tokens.push(AdminToken {
                hash,
                label: match t {
                    AdminTokenConfig::Detailed { label: Some(l), .. } => l.clone(),
                    _ => format!("admin-{}", i + 1),
                },
            }),
            None => errors.push(format!("admin.tokens[{i}]: bad hash")),
        }
    }
    let mut tenant_quotas = HashMap::new();
    for (id, q) in &rl.tenants {
        match TenantId::parse(id) {
            Ok(t) if tenants.contains(&t) => {
                tenant_quotas.insert(t, (q.writes.map(Quota::from), q.reads.map(Quota::from)));
            }
            _ => errors.push(format!(
                "rate_limits.tenants.{id}: no tenant with this id is configured"
            )),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(OpsRuntime {
        admin_listen,
        admin_tokens,
        writes: rl.writes.into(),
        reads: rl.reads.into(),
        unauthenticated_per_ip: rl.unauthenticated_per_ip.into(),
        product_lookups: rl.product_lookups.into(),
        tenant_quotas,
        max_in_flight: load.max_in_flight,
        request_timeout: Duration::from_secs(load.request_timeout_secs),
        audit_retention_days: audit.retention_days,
    })
}

#[cfg(test)]
mod tests {
    fn load(extra: &str) -> Result<crate::config::Runtime, crate::config::ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            format!(
                "version = 1\n{extra}\n[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"/tmp/x\"\n\
                 [[tenants]]\nid = \"kommunen\"\nname = \"K\"\n"
            ),
        )
        .unwrap();
        crate::config::load_file(&p)
    }

    #[test]
    fn defaults_and_overrides() {
        let r = load("").unwrap();
        assert_eq!(r.ops.admin_listen.to_string(), "127.0.0.1:8081");
        assert!(r.ops.admin_tokens.is_empty());
        assert_eq!(r.ops.writes.requests, 200);
        let r = load(
            "[admin]\ntokens = [{ hash = \"sha256:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b\", label = \"ops\" }]\n\
             [rate_limits.tenants.kommunen]\nwrites = { requests = 5, per_seconds = 2 }\n",
        )
        .unwrap();
        assert_eq!(r.ops.admin_tokens[0].label, "ops");
        let t = crate::domain::TenantId::parse("kommunen").unwrap();
        let (w, rd) = r.ops.tenant_quotas[&t];
        assert_eq!(w.unwrap().per, std::time::Duration::from_secs(2));
        assert!(rd.is_none());
    }

    #[test]
    fn messages_name_the_bad_key() {
        let cases = [
            (
                "[admin]\nlisten = \"loopback\"\n",
                "admin.listen: expected IP:port",
            ),
            (
                "[admin]\ntokens = [\"plain\"]\n",
                "admin.tokens[0]: expected \"sha256:\"",
            ),
            (
                "[rate_limits]\nwrites = { requests = 0 }\n",
                "rate_limits.writes.requests: must be between 1 and 1000000",
            ),
            (
                "[rate_limits.tenants.okand]\nwrites = { requests = 5 }\n",
                "rate_limits.tenants.okand: no tenant with this id is configured",
            ),
            (
                "[rate_limits.tenants.kommunen]\nreads = { requests = 5, per_seconds = 0 }\n",
                "rate_limits.tenants[\"kommunen\"]: requests must be",
            ),
            (
                "[load]\nmax_in_flight = 0\n",
                "load.max_in_flight: must be between",
            ),
            ("[audit]\nretention_days = -1\n", "audit.retention_days"),
        ];
        for (extra, expected) in cases {
            let e = load(extra).unwrap_err().to_string();
            assert!(e.contains(expected), "expected {expected:?} in {e:?}");
        }
    }
}
