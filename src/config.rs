//! Configuration: a versioned TOML file (or embedded defaults) with `SKOLGRIND_*`
//! environment overrides (`SKOLGRIND_SERVER__LISTEN=0.0.0.0:8080`: `__` separates
//! levels), validated at start into a [`Runtime`] with messages that name the bad key.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::NaiveDate;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use validator::{Validate, ValidationError, ValidationErrors, ValidationErrorsKind};

use crate::auth::api_key::{hash_for_config, parse_hash, ApiKey, KeyOwner};
use crate::domain::{
    CivicNoPolicy, LoginBinding, Product, ProductId, Ss12000Profile, Tenant, TenantId,
};

/// The only config format version this build reads.
pub const CONFIG_VERSION: u32 = 1;
/// Environment variable with the demo tenant's API key (embedded defaults only).
pub const DEMO_KEY_ENV: &str = "SKOLGRIND_DEMO_API_KEY";

#[derive(Debug, Clone, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[validate(custom(function = "check_version"))]
    pub version: u32,
    #[validate(nested)]
    pub server: ServerConfig,
    #[serde(default)]
    #[validate(nested)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    #[validate(nested)]
    pub ss12000: Ss12000Config,
    #[serde(default)]
    #[validate(nested, custom(function = "check_unique_tenant_ids"))]
    pub tenants: Vec<TenantConfig>,
    #[serde(default)]
    #[validate(nested)]
    pub admin: crate::ops::config::AdminConfig,
    #[serde(default)]
    #[validate(nested)]
    pub rate_limits: crate::ops::config::RateLimitConfig,
    #[serde(default)]
    #[validate(nested)]
    pub load: crate::ops::config::LoadConfig,
    #[serde(default)]
    #[validate(nested)]
    pub audit: crate::ops::config::AuditConfig,
    /// HTTPS listener (`[tls]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::auth::config::TlsConfig>,
    /// Federated TLS trust (`[federation]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federation: Option<crate::auth::config::FederationConfig>,
    /// Trusted JWT issuers (`[[jwt_issuers]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jwt_issuers: Vec<crate::auth::config::JwtIssuerConfig>,
    /// The supplier's products that call the login API (`/login/v1`).
    #[serde(default)]
    #[validate(nested)]
    pub products: Vec<ProductConfig>,
    #[serde(default)]
    #[validate(nested)]
    pub login: LoginConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct ProductConfig {
    /// Stable product id, `[a-z0-9-]+` (its own namespace, apart from tenant ids).
    #[validate(custom(function = "check_tenant_id"))]
    pub id: String,
    #[validate(length(min = 1, max = 200))]
    pub name: String,
    /// API keys, in the same forms as a tenant's.
    #[serde(default)]
    #[validate(custom(function = "check_api_keys"))]
    pub api_keys: Vec<ApiKeyConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct LoginConfig {
    /// EPPN scopes shared by many school owners (eduID): such EPPNs never match by scope,
    /// only through a person's external identifier with its context.
    #[serde(default = "default_shared_scopes")]
    #[validate(custom(function = "check_scopes"))]
    pub shared_scopes: Vec<String>,
    /// External-identifier context → the identity providers (entity IDs) that may assert
    /// identifiers of it. A login matched through such an identifier must name one of
    /// them as `idp_entity_id`. Contexts not listed accept any IdP not bound to another
    /// school owner.
    #[serde(default = "default_context_idps")]
    #[validate(custom(function = "check_context_idps"))]
    pub external_id_idps: BTreeMap<String, Vec<String>>,
}

fn default_shared_scopes() -> Vec<String> {
    vec!["eduid.se".into()]
}

/// eduID's identity provider is the only one that asserts eduID identifiers.
fn default_context_idps() -> BTreeMap<String, Vec<String>> {
    BTreeMap::from([(
        "https://eduid.se".to_owned(),
        vec!["https://login.idp.eduid.se/idp.xml".to_owned()],
    )])
}

fn check_context_idps(m: &BTreeMap<String, Vec<String>>) -> Result<(), validator::ValidationError> {
    for (context, idps) in m {
        if context.trim().is_empty() || idps.is_empty() || idps.iter().any(|i| i.trim().is_empty())
        {
            return Err(
                validator::ValidationError::new("context_idps").with_message(
                    "each context needs a non-empty list of identity provider entity IDs".into(),
                ),
            );
        }
    }
    Ok(())
}

impl Default for LoginConfig {
    fn default() -> Self {
        Self {
            shared_scopes: default_shared_scopes(),
            external_id_idps: default_context_idps(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of the public listener, e.g. `127.0.0.1:8080` (port 0: any free port).
    #[validate(custom(function = "check_socket_addr"))]
    pub listen: String,
    /// Directory of the embedded database; created if missing.
    pub data_dir: PathBuf,
    /// The URL clients use to reach this server (for `Location` and `meta.location`).
    /// Default: derived from each request's scheme and Host header.
    #[serde(default)]
    #[validate(custom(function = "check_base_url"))]
    pub public_base_url: Option<String>,
    /// HTTP worker threads (default: one per core).
    #[serde(default)]
    #[validate(range(min = 1, max = 256))]
    pub workers: Option<usize>,
    /// The storage engine: `sled` (default) or `redb`. redb keeps nothing per key in
    /// memory and reads an uncached key with one page read: choose it for large school
    /// owners (see docs/architecture.md). A data directory holds one engine's files; the
    /// server refuses to open another engine's directory.
    #[serde(default)]
    pub engine: crate::store::StoreEngine,
    /// The store's page cache in MiB (default 256 with sled, 64 with redb): most of the
    /// memory the server uses.
    #[serde(default)]
    #[validate(range(min = 8, max = 65536))]
    pub cache_mb: Option<u64>,
    /// The cache of decoded objects the login API reads (groups, activities, duties,
    /// school units shared by many logins) in MiB (default 32 with sled, 320 with redb;
    /// 0 turns it off).
    #[serde(default)]
    #[validate(range(max = 65536))]
    pub model_cache_mb: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest accepted request body in bytes (larger: 413).
    #[serde(default = "default_max_body")]
    #[validate(range(min = 1024, max = 67108864))]
    pub max_body_bytes: usize,
}

fn default_max_body() -> usize {
    1024 * 1024
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: default_max_body(),
        }
    }
}

/// The SS12000:2020 push API (`/provisioning/v1`).
#[derive(Debug, Clone, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct Ss12000Config {
    /// Largest bulk request body in bytes (larger: 413). Skolverket's own limit is 200 KB.
    #[serde(default = "default_ss12000_body")]
    #[validate(range(min = 1024, max = 67108864))]
    pub max_body_bytes: usize,
    /// Most items in one bulk request.
    #[serde(default = "default_ss12000_items")]
    #[validate(range(min = 1, max = 100000))]
    pub max_items: usize,
    /// Items of one job written concurrently.
    #[serde(default = "default_ss12000_concurrency")]
    #[validate(range(min = 1, max = 1024))]
    pub job_concurrency: usize,
    /// How long finished jobs and their results are kept, in hours.
    #[serde(default = "default_ss12000_retention")]
    #[validate(range(min = 1, max = 8760))]
    pub job_retention_hours: u32,
}

fn default_ss12000_body() -> usize {
    1024 * 1024
}
fn default_ss12000_items() -> usize {
    5000
}
fn default_ss12000_concurrency() -> usize {
    32
}
fn default_ss12000_retention() -> u32 {
    168
}

impl Default for Ss12000Config {
    fn default() -> Self {
        Self {
            max_body_bytes: default_ss12000_body(),
            max_items: default_ss12000_items(),
            job_concurrency: default_ss12000_concurrency(),
            job_retention_hours: default_ss12000_retention(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter such as `info` or `skolgrind=debug` (`RUST_LOG` wins if set).
    #[serde(default)]
    pub level: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Stable tenant id, `[a-z0-9-]+`: the storage key of the tenant's data.
    #[validate(custom(function = "check_tenant_id"))]
    pub id: String,
    #[validate(length(min = 1, max = 200))]
    pub name: String,
    /// Organisation number (`SE` + 10 digits, or 10 digits).
    #[serde(default)]
    #[validate(custom(function = "check_org_number"))]
    pub organisation_number: Option<String>,
    /// API keys: `"sha256:<hex>"` or `{ hash = "sha256:<hex>", expires = "2027-06-30", label = "2026" }`.
    #[serde(default)]
    #[validate(custom(function = "check_api_keys"))]
    pub api_keys: Vec<ApiKeyConfig>,
    /// Allowed EPPN scopes (domains); empty allows any.
    #[serde(default)]
    #[validate(custom(function = "check_scopes"))]
    pub eppn_scopes: Vec<String>,
    /// Civic number checks: `strict`, `warn` (default) or `off`.
    #[serde(default)]
    pub civic_no_check: CivicNoPolicy,
    /// Federated-TLS and JWT identities of this tenant (`[tenants.auth]`).
    #[serde(default)]
    pub auth: crate::auth::config::TenantAuthConfig,
    /// SS12000:2020 push validation profile: `generic` (default) or `dnp`.
    #[serde(default)]
    pub ss12000_profile: Ss12000Profile,
    /// The Skolfederation identity providers (SAML entity IDs) of this school owner; a
    /// login asserted by another IdP never resolves to this tenant's people.
    #[serde(default)]
    #[validate(custom(function = "check_entity_ids"))]
    pub idp_entity_ids: Vec<String>,
    /// Check a civic number sent with a login as a second factor (off by default).
    #[serde(default)]
    pub login_civic_no_check: bool,
}

fn check_entity_ids(ids: &[String]) -> Result<(), ValidationError> {
    for (i, s) in ids.iter().enumerate() {
        if s.is_empty() || s.len() > 1024 || s.contains(char::is_whitespace) {
            return Err(err(
                "entity_id",
                format!("[{i}]: expected an entity ID (a URI without spaces)"),
            ));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ApiKeyConfig {
    Hash(String),
    Detailed {
        hash: String,
        #[serde(default)]
        expires: Option<NaiveDate>,
        #[serde(default)]
        label: Option<String>,
    },
}

impl ApiKeyConfig {
    fn hash(&self) -> &str {
        match self {
            ApiKeyConfig::Hash(h) | ApiKeyConfig::Detailed { hash: h, .. } => h,
        }
    }
}

fn err(code: &'static str, msg: impl Into<std::borrow::Cow<'static, str>>) -> ValidationError {
    ValidationError::new(code).with_message(msg.into())
}

fn check_version(v: u32) -> Result<(), ValidationError> {
    if v == CONFIG_VERSION {
        Ok(())
    } else {
        Err(err(
            "version",
            format!("this build reads config version {CONFIG_VERSION}"),
        ))
    }
}

fn check_socket_addr(s: &str) -> Result<(), ValidationError> {
    s.parse::<SocketAddr>()
        .map(|_| ())
        .map_err(|_| err("listen", "expected IP:port, e.g. 127.0.0.1:8080"))
}

fn check_base_url(s: &str) -> Result<(), ValidationError> {
    let ok = (s.starts_with("https://") || s.starts_with("http://"))
        && !s.ends_with('/')
        && !s.contains(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(err(
            "url",
            "expected an http(s) URL without a trailing slash",
        ))
    }
}

fn check_tenant_id(s: &str) -> Result<(), ValidationError> {
    TenantId::parse(s)
        .map(|_| ())
        .map_err(|m| err("tenant_id", m))
}

fn check_unique_tenant_ids(ts: &[TenantConfig]) -> Result<(), ValidationError> {
    let mut seen = HashSet::new();
    for t in ts {
        if !seen.insert(t.id.as_str()) {
            return Err(err(
                "unique",
                format!("tenant id '{}' appears more than once", t.id),
            ));
        }
    }
    Ok(())
}

fn check_org_number(s: &str) -> Result<(), ValidationError> {
    let digits = s.strip_prefix("SE").unwrap_or(s);
    if digits.len() == 10 && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(err(
            "organisation_number",
            "expected 10 digits, optionally prefixed by SE",
        ))
    }
}

fn check_api_keys(keys: &[ApiKeyConfig]) -> Result<(), ValidationError> {
    for (i, k) in keys.iter().enumerate() {
        if parse_hash(k.hash()).is_none() {
            return Err(err(
                "api_key",
                format!("[{i}]: expected \"sha256:\" followed by 64 hex digits (see `skolgrind hash-key`)"),
            ));
        }
    }
    Ok(())
}

fn check_scopes(scopes: &[String]) -> Result<(), ValidationError> {
    for (i, s) in scopes.iter().enumerate() {
        if crate::domain::rules::normalise_eppn(&format!("x@{s}")).is_err()
            || s.to_lowercase() != *s
        {
            return Err(err(
                "scope",
                format!("[{i}]: expected a lower-case domain such as skola.kommunen.se"),
            ));
        }
    }
    Ok(())
}

/// Validated, ready-to-use configuration.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub public_base_url: Option<String>,
    pub workers: Option<usize>,
    pub engine: crate::store::StoreEngine,
    /// The store's page cache in bytes.
    pub cache_bytes: u64,
    /// The store's decoded-object cache in bytes.
    pub model_cache_bytes: u64,
    pub max_body_bytes: usize,
    pub log: LogConfig,
    pub tenants: Vec<Arc<Tenant>>,
    pub api_keys: Vec<ApiKey>,
    /// Admin listener, rate limits, load shedding, audit retention.
    pub ops: crate::ops::config::OpsRuntime,
    /// TLS, federated TLS and JWT settings.
    pub auth: crate::auth::config::AuthRuntime,
    pub ss12000: Ss12000Config,
    pub products: Vec<Arc<Product>>,
    /// Each tenant's login binding (identity providers, civic-number second factor).
    pub login_bindings: Vec<(crate::domain::TenantId, LoginBinding)>,
    pub shared_scopes: Vec<String>,
    /// External-identifier context → identity providers that may assert it.
    pub external_id_idps: BTreeMap<String, Vec<String>>,
}

/// Why a configuration was refused: one line per problem, each naming its key.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct ConfigError(pub Vec<String>);

/// The embedded defaults: HTTP on 127.0.0.1:8080, data in `./skolgrind-data`, one demo
/// tenant whose API key is `demo_key`.
pub fn embedded_defaults(demo_key: &str) -> Config {
    Config {
        version: CONFIG_VERSION,
        server: ServerConfig {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./skolgrind-data"),
            public_base_url: None,
            workers: None,
            engine: crate::store::StoreEngine::Sled,
            cache_mb: None,
            model_cache_mb: None,
        },
        limits: LimitsConfig::default(),
        log: LogConfig::default(),
        ss12000: Ss12000Config::default(),
        tenants: vec![TenantConfig {
            id: "demo".into(),
            name: "Demo school owner".into(),
            organisation_number: None,
            api_keys: vec![ApiKeyConfig::Hash(hash_for_config(demo_key))],
            eppn_scopes: Vec::new(),
            civic_no_check: CivicNoPolicy::Warn,
            auth: Default::default(),
            ss12000_profile: Ss12000Profile::Generic,
            idp_entity_ids: Vec::new(),
            login_civic_no_check: false,
        }],
        admin: Default::default(),
        rate_limits: Default::default(),
        load: Default::default(),
        audit: Default::default(),
        tls: None,
        federation: None,
        jwt_issuers: Vec::new(),
        products: Vec::new(),
        login: LoginConfig::default(),
    }
}

fn env_overrides() -> Env {
    Env::prefixed("SKOLGRIND_")
        .ignore(&["DEMO_API_KEY"])
        .split("__")
}

/// Loads a config file with environment overrides and validates it.
pub fn load_file(path: &Path) -> Result<Runtime, ConfigError> {
    if !path.is_file() {
        return Err(ConfigError(vec![format!(
            "{}: no such file",
            path.display()
        )]));
    }
    extract(Figment::from(Toml::file_exact(path)).merge(env_overrides()))
}

/// The embedded defaults with environment overrides.
pub fn load_defaults(demo_key: &str) -> Result<Runtime, ConfigError> {
    extract(Figment::from(Serialized::defaults(embedded_defaults(demo_key))).merge(env_overrides()))
}

fn extract(f: Figment) -> Result<Runtime, ConfigError> {
    let cfg: Config = f
        .extract()
        .map_err(|e| ConfigError(e.into_iter().map(describe_figment).collect()))?;
    cfg.validate().map_err(|e| {
        let mut lines = Vec::new();
        flatten("", &e, &mut lines);
        ConfigError(lines)
    })?;
    to_runtime(cfg)
}

fn describe_figment(e: figment::Error) -> String {
    let key = e.path.join(".");
    let msg = e.kind.to_string();
    let src = e
        .metadata
        .as_ref()
        .map(|m| m.name.to_string())
        .unwrap_or_default();
    if key.is_empty() {
        format!("{msg} ({src})")
    } else {
        format!("{key}: {msg} ({src})")
    }
}

fn flatten(prefix: &str, errs: &ValidationErrors, out: &mut Vec<String>) {
    let map: BTreeMap<_, _> = errs.errors().iter().collect();
    for (field, kind) in map {
        let path = if prefix.is_empty() {
            field.to_string()
        } else {
            format!("{prefix}.{field}")
        };
        match kind {
            ValidationErrorsKind::Field(list) => {
                for e in list {
                    let msg = e
                        .message
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_else(|| describe_code(e));
                    // Messages starting with an index (`[1]: …`) attach to the key directly.
                    if msg.starts_with('[') {
                        out.push(format!("{path}{msg}"));
                    } else {
                        out.push(format!("{path}: {msg}"));
                    }
                }
            }
            ValidationErrorsKind::Struct(inner) => flatten(&path, inner, out),
            ValidationErrorsKind::List(items) => {
                for (i, inner) in items {
                    flatten(&format!("{path}[{i}]"), inner, out);
                }
            }
        }
    }
}

fn describe_code(e: &ValidationError) -> String {
    let p = |k: &str| e.params.get(k).map(|v| v.to_string());
    match e.code.as_ref() {
        "range" => format!(
            "must be between {} and {}",
            p("min").unwrap_or_default(),
            p("max").unwrap_or_default()
        ),
        "length" => format!(
            "length must be between {} and {}",
            p("min").unwrap_or_default(),
            p("max").unwrap_or_default()
        ),
        other => format!("invalid ({other})"),
    }
}

fn to_runtime(cfg: Config) -> Result<Runtime, ConfigError> {
    let listen = cfg
        .server
        .listen
        .parse()
        .map_err(|_| ConfigError(vec!["server.listen: expected IP:port".into()]))?;
    let mut tenant_auth = Vec::new();
    for t in &cfg.tenants {
        if let Ok(id) = TenantId::parse(&t.id) {
            tenant_auth.push((id, &t.auth));
        }
    }
    let auth = crate::auth::config::build(crate::auth::config::Inputs {
        tls: cfg.tls.as_ref(),
        federation: cfg.federation.as_ref(),
        jwt_issuers: &cfg.jwt_issuers,
        tenants: tenant_auth,
        public_base_url: cfg.server.public_base_url.as_deref(),
        data_dir: &cfg.server.data_dir,
    })
    .map_err(ConfigError)?;
    let mut tenants = Vec::new();
    let mut api_keys = Vec::new();
    let mut login_bindings = Vec::new();
    let mut idp_owner: std::collections::HashMap<String, String> = Default::default();
    for (ti, t) in cfg.tenants.into_iter().enumerate() {
        let id = TenantId::parse(&t.id)
            .map_err(|m| ConfigError(vec![format!("tenants[{ti}].id: {m}")]))?;
        push_keys(
            &mut api_keys,
            &t.api_keys,
            KeyOwner::Tenant(id.clone()),
            &format!("tenants[{ti}]"),
        )?;
        for (i, idp) in t.idp_entity_ids.iter().enumerate() {
            if let Some(other) = idp_owner.insert(idp.clone(), t.id.clone()) {
                return Err(ConfigError(vec![format!(
                    "tenants[{ti}].idp_entity_ids[{i}]: already bound to tenant '{other}' (an identity provider belongs to one school owner)"
                )]));
            }
        }
        login_bindings.push((
            id.clone(),
            LoginBinding {
                idp_entity_ids: t.idp_entity_ids,
                civic_no_second_factor: t.login_civic_no_check,
            },
        ));
        tenants.push(Arc::new(Tenant {
            id,
            name: t.name,
            organisation_number: t.organisation_number,
            eppn_scopes: t.eppn_scopes,
            civic_no_policy: t.civic_no_check,
            ss12000_profile: t.ss12000_profile,
        }));
    }
    let ids: Vec<TenantId> = tenants.iter().map(|t| t.id.clone()).collect();
    let ops =
        crate::ops::config::to_runtime(&cfg.admin, &cfg.rate_limits, &cfg.load, &cfg.audit, &ids)
            .map_err(ConfigError)?;
    let mut products = Vec::new();
    let mut seen = HashSet::new();
    for (pi, p) in cfg.products.into_iter().enumerate() {
        let id = ProductId::parse(&p.id)
            .map_err(|m| ConfigError(vec![format!("products[{pi}].id: {m}")]))?;
        if !seen.insert(id.clone()) {
            return Err(ConfigError(vec![format!(
                "products[{pi}].id: product id '{id}' appears more than once"
            )]));
        }
        push_keys(
            &mut api_keys,
            &p.api_keys,
            KeyOwner::Product(id.clone()),
            &format!("products[{pi}]"),
        )?;
        products.push(Arc::new(Product { id, name: p.name }));
    }
    Ok(Runtime {
        ops,
        products,
        login_bindings,
        shared_scopes: cfg.login.shared_scopes,
        external_id_idps: cfg.login.external_id_idps,
        listen,
        data_dir: cfg.server.data_dir,
        public_base_url: cfg.server.public_base_url,
        workers: cfg.server.workers,
        engine: cfg.server.engine,
        cache_bytes: cfg
            .server
            .cache_mb
            .map_or(cfg.server.engine.default_cache_bytes(), |m| m * 1024 * 1024),
        model_cache_bytes: cfg
            .server
            .model_cache_mb
            .map_or(cfg.server.engine.default_model_cache_bytes(), |m| {
                m * 1024 * 1024
            }),
        max_body_bytes: cfg.limits.max_body_bytes,
        log: cfg.log,
        tenants,
        api_keys,
        auth,
        ss12000: cfg.ss12000,
    })
}

fn push_keys(
    out: &mut Vec<ApiKey>,
    keys: &[ApiKeyConfig],
    owner: KeyOwner,
    at: &str,
) -> Result<(), ConfigError> {
    for (i, k) in keys.iter().enumerate() {
        let hash = parse_hash(k.hash())
            .ok_or_else(|| ConfigError(vec![format!("{at}.api_keys[{i}]: bad hash")]))?;
        if out.iter().any(|o| o.hash == hash && o.owner != owner) {
            return Err(ConfigError(vec![format!(
                "{at}.api_keys[{i}]: this key is already another tenant's or product's (a key has one owner)"
            )]));
        }
        let (expires, label) = match k {
            ApiKeyConfig::Hash(_) => (None, None),
            ApiKeyConfig::Detailed { expires, label, .. } => (*expires, label.clone()),
        };
        out.push(ApiKey {
            owner: owner.clone(),
            hash,
            label: label.unwrap_or_else(|| (i + 1).to_string()),
            expires,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str) -> Result<Runtime, ConfigError> {
        extract(Figment::from(Toml::string(toml)))
    }

    const GOOD: &str = r#"
version = 1
[server]
listen = "127.0.0.1:8080"
data_dir = "/tmp/x"
[[tenants]]
id = "kommunen"
name = "Kommunen"
api_keys = ["sha256:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b",
            { hash = "sha256:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b", expires = "2027-01-01", label = "next" }]
"#;

    #[test]
    fn good_config() {
        let r = load(GOOD).unwrap();
        assert_eq!(r.tenants.len(), 1);
        assert_eq!(r.api_keys.len(), 2);
        assert_eq!(r.api_keys[1].label, "next");
        assert_eq!(r.max_body_bytes, 1024 * 1024);
        assert_eq!(r.ss12000.job_retention_hours, 168);
        assert_eq!(r.tenants[0].ss12000_profile, Ss12000Profile::Generic);
    }

    #[test]
    fn cache_defaults_follow_the_engine_and_a_setting_wins() {
        const MIB: u64 = 1024 * 1024;
        let caches = |server: &str| {
            let r = load(&GOOD.replace("[server]", &format!("[server]\n{server}"))).unwrap();
            (r.cache_bytes / MIB, r.model_cache_bytes / MIB)
        };
        assert_eq!(caches(""), (256, 32));
        assert_eq!(caches("engine = \"sled\""), (256, 32));
        assert_eq!(caches("engine = \"redb\""), (32, 320));
        assert_eq!(
            caches("engine = \"redb\"\ncache_mb = 300\nmodel_cache_mb = 0"),
            (300, 0)
        );
    }

    #[test]
    fn messages_name_the_bad_key() {
        let cases = [
            (
                GOOD.replace("version = 1", "version = 2"),
                "version: this build reads config version 1",
            ),
            (
                GOOD.replace("127.0.0.1:8080", "localhost"),
                "server.listen: expected IP:port",
            ),
            (
                GOOD.replace("id = \"kommunen\"", "id = \"Kommunen\""),
                "tenants[0].id: a tenant id is",
            ),
            (
                GOOD.replacen("sha256:2bb8", "sha256:zzz", 1),
                "tenants[0].api_keys[0]: expected \"sha256:\"",
            ),
            (
                GOOD.replace("[server]", "[server]\nworkers = 0"),
                "server.workers: must be between 1 and 256",
            ),
            (
                GOOD.replace("[server]", "[server]\nlisten_typo = 1"),
                "server.listen_typo: unknown field",
            ),
            (
                GOOD.replace(
                    "name = \"Kommunen\"",
                    "name = \"Kommunen\"\neppn_scopes = [\"Bad Scope\"]",
                ),
                "tenants[0].eppn_scopes[0]: expected a lower-case domain",
            ),
            (
                format!("{GOOD}\n[[tenants]]\nid = \"kommunen\"\nname = \"x\"\n"),
                "tenants: tenant id 'kommunen' appears more than once",
            ),
            (
                GOOD.replace("data_dir = \"/tmp/x\"", ""),
                "server: missing field `data_dir`",
            ),
            (
                GOOD.replace("version = 1", "version = \"one\""),
                "version: invalid type",
            ),
            (
                GOOD.replace(
                    "name = \"Kommunen\"",
                    "name = \"Kommunen\"\nss12000_profile = \"strict\"",
                ),
                "tenants.0.ss12000_profile: unknown variant",
            ),
            (
                GOOD.replace("[server]", "[ss12000]\njob_concurrency = 0\n[server]"),
                "ss12000.job_concurrency: must be between 1 and 1024",
            ),
        ];
        for (toml, expected) in cases {
            let e = load(&toml).unwrap_err().to_string();
            assert!(e.contains(expected), "expected {expected:?} in {e:?}");
        }
    }

    #[test]
    fn products_and_login_bindings() {
        let toml = format!(
            "{GOOD}idp_entity_ids = [\"https://idp.kommunen.se\"]\nlogin_civic_no_check = true\n\n[[products]]\nid = \"prov\"\nname = \"Prov\"\napi_keys = [\"{}\"]\n",
            hash_for_config("product-key")
        );
        let r = load(&toml).unwrap();
        assert_eq!(r.products.len(), 1);
        assert_eq!(r.api_keys.len(), 3);
        assert_eq!(
            r.api_keys[2].owner,
            KeyOwner::Product(ProductId::parse("prov").unwrap())
        );
        assert_eq!(
            r.login_bindings[0].1.idp_entity_ids,
            vec!["https://idp.kommunen.se"]
        );
        assert!(r.login_bindings[0].1.civic_no_second_factor);
        assert_eq!(r.shared_scopes, vec!["eduid.se"]);
        assert_eq!(
            r.external_id_idps["https://eduid.se"],
            vec!["https://login.idp.eduid.se/idp.xml"]
        );
        let cases = [
            (
                format!("{toml}\n[[tenants]]\nid = \"b\"\nname = \"B\"\nidp_entity_ids = [\"https://idp.kommunen.se\"]\n"),
                "tenants[1].idp_entity_ids[0]: already bound to tenant 'kommunen'",
            ),
            (
                toml.replace(&hash_for_config("product-key"), "sha256:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"),
                "products[0].api_keys[0]: this key is already another tenant's or product's",
            ),
            (
                toml.replace("id = \"prov\"", "id = \"Prov\""),
                "products[0].id: a tenant id is",
            ),
            (
                format!("{toml}\n[login]\nshared_scopes = [\"Bad Scope\"]\n"),
                "login.shared_scopes[0]: expected a lower-case domain",
            ),
            (
                format!("{toml}\n[login.external_id_idps]\n\"https://eduid.se\" = []\n"),
                "login.external_id_idps: each context needs a non-empty list",
            ),
        ];
        for (toml, expected) in cases {
            let e = load(&toml).unwrap_err().to_string();
            assert!(e.contains(expected), "expected {expected:?} in {e:?}");
        }
    }

    #[test]
    fn embedded_defaults_validate() {
        let r = extract(Figment::from(Serialized::defaults(embedded_defaults("k")))).unwrap();
        assert_eq!(r.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(r.tenants[0].id.as_str(), "demo");
    }
}
