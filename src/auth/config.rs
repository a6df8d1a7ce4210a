//! Configuration of TLS, federated TLS (Moa) and JWT bearer tokens: the TOML sections
//! `[tls]`, `[federation]`, `[[jwt_issuers]]` and each tenant's `auth` table, and their
//! validation into runtime settings. File contents (certificates, keys, JWKS) are read
//! and checked here, so `check-config` and start-up both catch bad files.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::Algorithm;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use super::federation::metadata::SigningTrust;
use super::federation::FederationSettings;
use super::fetch::Source;
use crate::domain::TenantId;

/// Whether the TLS listener asks for a client certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientCertMode {
    /// Requested; a client without one may still use an API key or a bearer token. A
    /// certificate that IS sent must pass the federation check.
    #[default]
    Optional,
    /// Required (a dedicated federated-TLS listener).
    Required,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Address of the HTTPS listener (HTTP/1.1 and h2 by ALPN).
    pub listen: String,
    /// PEM: the server certificate, then any intermediates.
    pub cert_file: PathBuf,
    /// PEM: the private key (PKCS#8, SEC1 or PKCS#1).
    pub key_file: PathBuf,
    #[serde(default)]
    pub client_certificate: ClientCertMode,
    /// Keep the plain-HTTP listener `server.listen` too (local use, behind a TLS proxy).
    #[serde(default = "yes")]
    pub plain_http: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationConfig {
    /// `https://` URL or file path of the signed metadata (JWS, General JSON Serialization).
    pub metadata: String,
    /// The federation's signing keys (JWKS file), the trust anchor.
    pub jwks_file: PathBuf,
    /// Required `iss` in the metadata's protected header.
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default = "es256")]
    pub algorithms: Vec<String>,
    /// Where the last good signed document is kept (default `<data_dir>/federation-metadata.jws`).
    #[serde(default)]
    pub cache_file: Option<PathBuf>,
    /// Refresh interval when the document has no `cache_ttl`.
    #[serde(default = "d3600")]
    pub cache_ttl_secs: u64,
    #[serde(default = "d60")]
    pub network_retry_secs: u64,
    #[serde(default = "d3600")]
    pub bad_content_retry_secs: u64,
    #[serde(default = "d30")]
    pub fetch_timeout_secs: u64,
    #[serde(default = "d8mib")]
    pub max_bytes: usize,
    /// PEM CA certificates trusted for the https download besides the public web roots.
    #[serde(default)]
    pub fetch_ca_file: Option<PathBuf>,
    /// Seconds after the metadata's `exp` during which it is still trusted. 0 (default):
    /// expired metadata is never trusted.
    #[serde(default)]
    pub expired_grace_secs: u64,
    /// This server's own entry (`skolgrind metadata`).
    #[serde(default)]
    pub entity_id: Option<String>,
    #[serde(default)]
    pub organization: Option<String>,
    #[serde(default)]
    pub organization_id: Option<String>,
}

fn es256() -> Vec<String> {
    vec!["ES256".into()]
}
fn d3600() -> u64 {
    3600
}
fn d60() -> u64 {
    60
}
fn d30() -> u64 {
    30
}
fn d8mib() -> usize {
    8 * 1024 * 1024
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtIssuerConfig {
    /// Required `iss`.
    pub issuer: String,
    /// Accepted `aud` values (at least one).
    pub audience: Vec<String>,
    /// ES256, ES384, RS256, PS256 or EdDSA.
    #[serde(default = "es256")]
    pub algorithms: Vec<String>,
    /// `https://` URL or file path of the issuer's JWKS.
    pub jwks: String,
    /// The claim naming the school owner (default `organization_id`).
    #[serde(default = "org_claim")]
    pub tenant_claim: String,
    /// Clock skew for exp/nbf/iat, at most 300 s.
    #[serde(default = "d60")]
    pub leeway_secs: u64,
    /// If set, the token's `entity_id` must be one of these.
    #[serde(default)]
    pub entity_ids: Option<Vec<String>>,
    /// Require `requested_access` to name this server (default true).
    #[serde(default = "yes")]
    pub check_location: bool,
    /// The URL tokens must name (default `server.public_base_url` + `/egil`).
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default = "ss12000_api")]
    pub access_type: String,
    /// Least time between two JWKS downloads caused by an unknown `kid`.
    #[serde(default = "d60")]
    pub jwks_min_refresh_secs: u64,
    #[serde(default = "d3600")]
    pub jwks_refresh_secs: u64,
    /// PEM CA certificates trusted for the https download besides the public web roots.
    #[serde(default)]
    pub fetch_ca_file: Option<PathBuf>,
}

fn org_claim() -> String {
    "organization_id".into()
}
fn ss12000_api() -> String {
    "ss12000-api".into()
}

/// A tenant's federated-TLS and JWT identities (`[tenants.auth]`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantAuthConfig {
    /// Moa entity ids that act for this tenant.
    #[serde(default)]
    pub moa_entity_ids: Vec<String>,
    /// Any Moa entity with one of these organization_ids acts for this tenant.
    #[serde(default)]
    pub moa_organization_ids: Vec<String>,
    /// Values of an issuer's `tenant_claim` that act for this tenant.
    #[serde(default)]
    pub jwt_claim_values: Vec<String>,
}

/// Validated TLS settings.
#[derive(Debug, Clone)]
pub struct TlsRuntime {
    pub listen: SocketAddr,
    pub cert_chain: Vec<CertificateDer<'static>>,
    pub key: Arc<PrivateKeyDer<'static>>,
    pub client_certificate: ClientCertMode,
    pub plain_http: bool,
    pub cert_file: PathBuf,
}

/// Validated settings of one JWT issuer.
#[derive(Debug, Clone)]
pub struct JwtIssuerRuntime {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    pub jwks: Source,
    pub tenant_claim: String,
    pub leeway_secs: u64,
    pub entity_ids: Option<HashSet<String>>,
    pub access: Option<(String, url::Url)>,
    pub min_refresh: Duration,
    pub refresh_every: Duration,
    pub tenants: HashMap<String, TenantId>,
    pub fetch_roots: Option<Arc<[u8]>>,
}

/// Everything authentication needs beyond API keys.
#[derive(Debug, Clone, Default)]
pub struct AuthRuntime {
    pub tls: Option<TlsRuntime>,
    pub federation: Option<FederationSettings>,
    pub own_entity: Option<OwnEntity>,
    pub jwt: Vec<JwtIssuerRuntime>,
}

/// What `skolgrind metadata` prints about this server.
#[derive(Debug, Clone)]
pub struct OwnEntity {
    pub entity_id: String,
    pub organization: Option<String>,
    pub organization_id: Option<String>,
}

/// Inputs from the main config.
pub struct Inputs<'a> {
    pub tls: Option<&'a TlsConfig>,
    pub federation: Option<&'a FederationConfig>,
    pub jwt_issuers: &'a [JwtIssuerConfig],
    /// (tenant, its auth table, index in `tenants`).
    pub tenants: Vec<(TenantId, &'a TenantAuthConfig)>,
    pub public_base_url: Option<&'a str>,
    pub data_dir: &'a Path,
}

fn parse_alg(s: &str, allowed: &[Algorithm]) -> Result<Algorithm, String> {
    let a: Algorithm = s.parse().map_err(|_| format!("unknown algorithm {s:?}"))?;
    if allowed.contains(&a) {
        Ok(a)
    } else {
        Err(format!(
            "algorithm {s} is not allowed (use one of {})",
            allowed
                .iter()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

const JWT_ALGS: [Algorithm; 5] = [
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::RS256,
    Algorithm::PS256,
    Algorithm::EdDSA,
];

/// Reads a PEM certificate chain and private key.
pub fn read_cert_and_key(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cert_file {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cert_file {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("cert_file {}: no certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("key_file {}: {e}", key.display()))?;
    Ok((chain, key))
}

/// Reads an optional PEM CA bundle for downloads.
fn read_roots(key: &str, path: Option<&PathBuf>, errs: &mut Vec<String>) -> Option<Arc<[u8]>> {
    let p = path?;
    match std::fs::read(p) {
        Ok(raw) => match super::fetch::check_roots(&raw) {
            Ok(()) => Some(raw.into()),
            Err(e) => {
                errs.push(format!("{key} {}: {e}", p.display()));
                None
            }
        },
        Err(e) => {
            errs.push(format!("{key} {}: {e}", p.display()));
            None
        }
    }
}

/// Validates the auth sections; each message names its key.
pub fn build(i: Inputs<'_>) -> Result<AuthRuntime, Vec<String>> {
    let mut errs = Vec::new();
    let mut out = AuthRuntime::default();

    if let Some(t) = i.tls {
        let listen = t.listen.parse::<SocketAddr>();
        if listen.is_err() {
            errs.push("tls.listen: expected IP:port, e.g. 0.0.0.0:8443".into());
        }
        match (listen, read_cert_and_key(&t.cert_file, &t.key_file)) {
            (Ok(listen), Ok((chain, key))) => {
                // The pair must make a usable rustls config.
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let ok = rustls::ServerConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| e.to_string())
                    .and_then(|b| {
                        b.with_no_client_auth()
                            .with_single_cert(chain.clone(), key.clone_key())
                            .map_err(|e| e.to_string())
                    });
                match ok {
                    Ok(_) => {
                        out.tls = Some(TlsRuntime {
                            listen,
                            cert_chain: chain,
                            key: Arc::new(key),
                            client_certificate: t.client_certificate,
                            plain_http: t.plain_http,
                            cert_file: t.cert_file.clone(),
                        })
                    }
                    Err(e) => errs.push(format!(
                        "tls.key_file: does not match the certificate or is unusable: {e}"
                    )),
                }
            }
            (_, Err(e)) => errs.push(format!("tls.{e}")),
            _ => {}
        }
    }

    // Tenant mappings, each value at most once.
    let mut entity_tenants = HashMap::new();
    let mut org_tenants = HashMap::new();
    let mut claim_tenants: HashMap<String, TenantId> = HashMap::new();
    for (ti, (id, a)) in i.tenants.iter().enumerate() {
        for (field, list, map) in [
            ("moa_entity_ids", &a.moa_entity_ids, &mut entity_tenants),
            (
                "moa_organization_ids",
                &a.moa_organization_ids,
                &mut org_tenants,
            ),
            ("jwt_claim_values", &a.jwt_claim_values, &mut claim_tenants),
        ] {
            for v in list {
                if let Some(other) = map.insert(v.clone(), id.clone()) {
                    errs.push(format!(
                        "tenants[{ti}].auth.{field}: {v:?} is already mapped to tenant '{other}'"
                    ));
                }
            }
        }
    }

    if let Some(f) = i.federation {
        let source = Source::parse(&f.metadata).map_err(|e| format!("federation.metadata: {e}"));
        let keys = std::fs::read(&f.jwks_file)
            .map_err(|e| format!("federation.jwks_file {}: {e}", f.jwks_file.display()))
            .and_then(|raw| {
                serde_json::from_slice::<JwkSet>(&raw).map_err(|e| {
                    format!(
                        "federation.jwks_file {}: not a JWKS: {e}",
                        f.jwks_file.display()
                    )
                })
            });
        let algs: Result<Vec<Algorithm>, String> = f
            .algorithms
            .iter()
            .map(|a| parse_alg(a, &[Algorithm::ES256, Algorithm::ES384]))
            .collect();
        if (!entity_tenants.is_empty() || !org_tenants.is_empty()) && i.tls.is_none() {
            errs.push("federation: federated TLS needs a [tls] listener".into());
        }
        for (k, v) in [
            ("cache_ttl_secs", f.cache_ttl_secs),
            ("network_retry_secs", f.network_retry_secs),
            ("bad_content_retry_secs", f.bad_content_retry_secs),
            ("fetch_timeout_secs", f.fetch_timeout_secs),
        ] {
            if v == 0 {
                errs.push(format!("federation.{k}: must be at least 1"));
            }
        }
        let fetch_roots = read_roots(
            "federation.fetch_ca_file",
            f.fetch_ca_file.as_ref(),
            &mut errs,
        );
        match (source, keys, algs) {
            (Ok(source), Ok(keys), Ok(algorithms)) => {
                if keys.keys.is_empty() {
                    errs.push("federation.jwks_file: no keys".into());
                }
                out.federation = Some(FederationSettings {
                    cache_file: Some(
                        f.cache_file
                            .clone()
                            .unwrap_or_else(|| i.data_dir.join("federation-metadata.jws")),
                    ),
                    source,
                    trust: SigningTrust {
                        keys,
                        issuer: f.issuer.clone(),
                        algorithms,
                        leeway_secs: 60,
                    },
                    default_ttl: Duration::from_secs(f.cache_ttl_secs.max(1)),
                    network_retry: Duration::from_secs(f.network_retry_secs.max(1)),
                    bad_content_retry: Duration::from_secs(f.bad_content_retry_secs.max(1)),
                    fetch_timeout: Duration::from_secs(f.fetch_timeout_secs.max(1)),
                    max_bytes: f.max_bytes,
                    fetch_roots,
                    expired_grace_secs: i64::try_from(f.expired_grace_secs).unwrap_or(i64::MAX),
                    entity_tenants,
                    organization_tenants: org_tenants,
                });
                if let Some(id) = &f.entity_id {
                    out.own_entity = Some(OwnEntity {
                        entity_id: id.clone(),
                        organization: f.organization.clone(),
                        organization_id: f.organization_id.clone(),
                    });
                }
            }
            (s, k, a) => {
                errs.extend(s.err());
                errs.extend(k.err());
                errs.extend(a.err().map(|e| format!("federation.algorithms: {e}")));
            }
        }
    } else if !entity_tenants.is_empty() || !org_tenants.is_empty() {
        errs.push(
            "tenants: moa_entity_ids/moa_organization_ids need a [federation] section".into(),
        );
    }

    if !claim_tenants.is_empty() && i.jwt_issuers.is_empty() {
        errs.push("tenants: jwt_claim_values need at least one [[jwt_issuers]]".into());
    }
    let mut seen = HashSet::new();
    for (n, j) in i.jwt_issuers.iter().enumerate() {
        let key = format!("jwt_issuers[{n}]");
        if !seen.insert(j.issuer.clone()) {
            errs.push(format!(
                "{key}.issuer: {:?} appears more than once",
                j.issuer
            ));
        }
        if j.audience.is_empty() {
            errs.push(format!("{key}.audience: at least one audience is required"));
        }
        if j.leeway_secs > 300 {
            errs.push(format!("{key}.leeway_secs: at most 300"));
        }
        let algs: Vec<Algorithm> = j
            .algorithms
            .iter()
            .filter_map(|a| {
                parse_alg(a, &JWT_ALGS)
                    .map_err(|e| errs.push(format!("{key}.algorithms: {e}")))
                    .ok()
            })
            .collect();
        if j.algorithms.is_empty() {
            errs.push(format!("{key}.algorithms: at least one algorithm"));
        }
        let jwks = match Source::parse(&j.jwks) {
            Ok(s) => {
                if let Source::File(p) = &s {
                    match std::fs::read(p) {
                        Ok(raw) => {
                            if let Err(e) = super::jwt::parse_jwks(&raw) {
                                errs.push(format!("{key}.jwks {}: {e}", p.display()));
                            }
                        }
                        Err(e) => errs.push(format!("{key}.jwks {}: {e}", p.display())),
                    }
                }
                Some(s)
            }
            Err(e) => {
                errs.push(format!("{key}.jwks: {e}"));
                None
            }
        };
        let access = if j.check_location {
            let loc = j
                .location
                .clone()
                .or_else(|| i.public_base_url.map(|b| format!("{b}/egil")));
            match loc.as_deref().map(url::Url::parse) {
                Some(Ok(u)) if u.scheme() == "https" || u.scheme() == "http" => {
                    Some((j.access_type.clone(), u))
                }
                Some(_) => {
                    errs.push(format!("{key}.location: expected an http(s) URL"));
                    None
                }
                None => {
                    errs.push(format!(
                        "{key}.location: set it (or server.public_base_url), or set check_location = false"
                    ));
                    None
                }
            }
        } else {
            None
        };
        let fetch_roots = read_roots(
            &format!("{key}.fetch_ca_file"),
            j.fetch_ca_file.as_ref(),
            &mut errs,
        );
        if let Some(jwks) = jwks {
            out.jwt.push(JwtIssuerRuntime {
                fetch_roots,
                issuer: j.issuer.clone(),
                audiences: j.audience.clone(),
                algorithms: algs,
                jwks,
                tenant_claim: j.tenant_claim.clone(),
                leeway_secs: j.leeway_secs,
                entity_ids: j.entity_ids.as_ref().map(|v| v.iter().cloned().collect()),
                access,
                min_refresh: Duration::from_secs(j.jwks_min_refresh_secs),
                refresh_every: Duration::from_secs(j.jwks_refresh_secs.max(1)),
                tenants: claim_tenants.clone(),
            });
        }
    }

    if errs.is_empty() {
        Ok(out)
    } else {
        Err(errs)
    }
}

/// Offline checks for `check-config`: a metadata FILE is verified now (signature, header,
/// expiry). Returns problems, one line each.
pub fn check_offline(rt: &AuthRuntime) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(f) = &rt.federation {
        if let Source::File(p) = &f.source {
            match std::fs::read(p) {
                Ok(raw) => {
                    if let Err(e) = super::federation::metadata::verify(
                        &raw,
                        &f.trust,
                        chrono::Utc::now().timestamp(),
                        f.expired_grace_secs,
                    ) {
                        out.push(format!("federation.metadata {}: {e}", p.display()));
                    }
                }
                Err(e) => out.push(format!("federation.metadata {}: {e}", p.display())),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer(extra: &str) -> JwtIssuerConfig {
        let toml = format!(
            "issuer = \"https://i\"\naudience = [\"a\"]\njwks = \"/nonexistent/jwks.json\"\n{extra}"
        );
        use figment::providers::Format;
        figment::Figment::from(figment::providers::Toml::string(&toml))
            .extract()
            .unwrap()
    }

    fn errors(issuers: &[JwtIssuerConfig], base: Option<&str>) -> Vec<String> {
        build(Inputs {
            tls: None,
            federation: None,
            jwt_issuers: issuers,
            tenants: vec![],
            public_base_url: base,
            data_dir: Path::new("/tmp"),
        })
        .err()
        .unwrap_or_default()
    }

    #[test]
    fn jwt_issuer_messages_name_the_key() {
        let e = errors(
            &[issuer("algorithms = [\"HS256\", \"none\"]")],
            Some("https://x"),
        );
        assert!(e.iter().any(|l| l.starts_with("jwt_issuers[0].algorithms: algorithm HS256 is not allowed")), "{e:?}");
        assert!(
            e.iter()
                .any(|l| l.starts_with("jwt_issuers[0].algorithms: unknown algorithm \"none\"")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|l| l.starts_with("jwt_issuers[0].jwks /nonexistent/jwks.json")),
            "{e:?}"
        );
        let e = errors(&[issuer("")], None);
        assert!(
            e.iter()
                .any(|l| l.starts_with("jwt_issuers[0].location: set it")),
            "{e:?}"
        );
        let mut i = issuer("leeway_secs = 3600");
        i.audience.clear();
        let e = errors(&[i], Some("https://x"));
        assert!(
            e.iter()
                .any(|l| l.starts_with("jwt_issuers[0].audience: at least one")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|l| l == "jwt_issuers[0].leeway_secs: at most 300"),
            "{e:?}"
        );
        let mut i = issuer("");
        i.jwks = "http://plain/jwks".into();
        let e = errors(&[i], Some("https://x"));
        assert!(
            e.iter().any(|l| l.contains("only fetched over https")),
            "{e:?}"
        );
    }

    #[test]
    fn tenant_identities_are_unique_and_need_their_mechanism() {
        let a = TenantAuthConfig {
            moa_entity_ids: vec!["https://e".into()],
            jwt_claim_values: vec!["SE1".into()],
            ..Default::default()
        };
        let t = |s: &str| TenantId::parse(s).unwrap();
        let e = build(Inputs {
            tls: None,
            federation: None,
            jwt_issuers: &[],
            tenants: vec![(t("a"), &a), (t("b"), &a)],
            public_base_url: None,
            data_dir: Path::new("/tmp"),
        })
        .unwrap_err();
        assert!(
            e.contains(
                &"tenants[1].auth.moa_entity_ids: \"https://e\" is already mapped to tenant 'a'"
                    .to_owned()
            ),
            "{e:?}"
        );
        assert!(
            e.iter().any(|l| l.starts_with("tenants: moa_entity_ids")),
            "{e:?}"
        );
        assert!(
            e.iter().any(|l| l.starts_with("tenants: jwt_claim_values")),
            "{e:?}"
        );
    }
}
