//! Federated TLS (Moa): signed federation metadata, a client-certificate verifier that
//! accepts a certificate only if its SPKI pin is published for exactly one entity (and its
//! chain leads to that entity's own issuers), and the per-request pin → tenant check that
//! also covers resumed TLS sessions (which skip the verifier).

pub mod metadata;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::NaiveDate;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::fetch::{self, FetchError, Source};
use super::{Credentials, Mechanism, Outcome};
use crate::domain::TenantId;
use metadata::{PinIndex, SigningTrust};

/// Refusals because the metadata had expired (a metric hook for the operations side).
pub static EXPIRED_METADATA_REFUSALS: AtomicU64 = AtomicU64::new(0);

/// Settings of the federation trust (validated config).
#[derive(Debug, Clone)]
pub struct FederationSettings {
    pub source: Source,
    pub trust: SigningTrust,
    /// Where the last good signed document is kept (URL sources).
    pub cache_file: Option<PathBuf>,
    pub default_ttl: Duration,
    pub network_retry: Duration,
    pub bad_content_retry: Duration,
    pub fetch_timeout: Duration,
    pub max_bytes: usize,
    /// Extra CA certificates (PEM) trusted for the download.
    pub fetch_roots: Option<Arc<[u8]>>,
    /// Seconds after `exp` during which expired metadata is still trusted (0: none).
    pub expired_grace_secs: i64,
    /// entity_id → tenant.
    pub entity_tenants: HashMap<String, TenantId>,
    /// organization_id → tenant (any entity of that organisation).
    pub organization_tenants: HashMap<String, TenantId>,
}

/// The installed metadata's times, and whether it is trusted now.
#[derive(Debug, Clone, Copy)]
pub struct Freshness {
    pub loaded: bool,
    /// `iat` and `exp` of the installed document (Unix seconds).
    pub iat: i64,
    pub exp: i64,
    /// Loaded and not past `exp` plus the configured grace.
    pub trusted: bool,
}

/// The live trust state, shared by the TLS verifier, the request mechanism and the refresher.
pub struct Federation {
    pub settings: FederationSettings,
    index: ArcSwap<PinIndex>,
    provider: Arc<CryptoProvider>,
    expired_logged: AtomicBool,
}

impl std::fmt::Debug for Federation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Federation").finish_non_exhaustive()
    }
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

enum Lookup {
    Found(Arc<metadata::EntityTrust>),
    Unknown,
    Ambiguous,
    Expired,
}

impl Federation {
    pub fn new(settings: FederationSettings, provider: Arc<CryptoProvider>) -> Arc<Self> {
        Arc::new(Self {
            settings,
            index: ArcSwap::from_pointee(PinIndex::default()),
            provider,
            expired_logged: AtomicBool::new(false),
        })
    }

    /// Verifies and installs a raw signed document. Returns the new index's cache TTL.
    pub fn install(&self, raw: &[u8]) -> Result<Duration, metadata::MetadataError> {
        let v = metadata::verify(
            raw,
            &self.settings.trust,
            now_secs(),
            self.settings.expired_grace_secs,
        )?;
        let idx = metadata::index(&v, &self.provider)?;
        let ttl = idx
            .cache_ttl
            .map(Duration::from_secs)
            .unwrap_or(self.settings.default_ttl);
        log_changes(&self.index.load(), &idx);
        tracing::info!(
            pins = idx.by_pin.len(),
            ambiguous = idx.ambiguous.len(),
            exp = idx.exp,
            kid = %v.kid,
            "federation metadata installed"
        );
        self.index.store(Arc::new(idx));
        self.expired_logged.store(false, Ordering::Relaxed);
        Ok(ttl)
    }

    /// How fresh the installed metadata is (readiness, metrics).
    pub fn freshness(&self) -> Freshness {
        let idx = self.index.load();
        Freshness {
            loaded: idx.loaded,
            iat: idx.iat,
            exp: idx.exp,
            trusted: idx.loaded && now_secs() < idx.exp + self.settings.expired_grace_secs,
        }
    }

    fn lookup(&self, pin: &str, now: i64) -> Lookup {
        let idx = self.index.load();
        if !idx.loaded {
            return Lookup::Unknown;
        }
        if now >= idx.exp + self.settings.expired_grace_secs {
            EXPIRED_METADATA_REFUSALS.fetch_add(1, Ordering::Relaxed);
            if !self.expired_logged.swap(true, Ordering::Relaxed) {
                tracing::error!(
                    exp = idx.exp,
                    grace_secs = self.settings.expired_grace_secs,
                    "federation metadata has EXPIRED and no fresh copy could be verified: federated-TLS clients are refused"
                );
            }
            return Lookup::Expired;
        }
        if idx.ambiguous.contains(pin) {
            return Lookup::Ambiguous;
        }
        match idx.by_pin.get(pin) {
            Some(e) => Lookup::Found(e.clone()),
            None => Lookup::Unknown,
        }
    }

    fn tenant_of(&self, e: &metadata::EntityTrust) -> Option<&TenantId> {
        self.settings.entity_tenants.get(&e.entity_id).or_else(|| {
            e.organization_id
                .as_ref()
                .and_then(|o| self.settings.organization_tenants.get(o))
        })
    }

    /// Loads the cached document (if any) at start-up, then the source if it is a file.
    /// Returns when the next download is due.
    pub fn start(&self) -> Duration {
        if let Source::File(path) = &self.settings.source {
            return match std::fs::read(path) {
                Ok(raw) => match self.install(&raw) {
                    Ok(ttl) => ttl,
                    Err(e) => {
                        tracing::error!(file = %path.display(), error = %e, "federation metadata refused");
                        self.settings.bad_content_retry
                    }
                },
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "federation metadata unreadable");
                    self.settings.network_retry
                }
            };
        }
        let Some(cache) = &self.settings.cache_file else {
            return Duration::ZERO;
        };
        let Ok(raw) = std::fs::read(cache) else {
            return Duration::ZERO;
        };
        match self.install(&raw) {
            Ok(ttl) => {
                let age = std::fs::metadata(cache)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|m| m.elapsed().ok())
                    .unwrap_or(ttl);
                tracing::info!(file = %cache.display(), "cached federation metadata re-verified");
                ttl.saturating_sub(age)
            }
            Err(e) => {
                tracing::warn!(file = %cache.display(), error = %e, "cached federation metadata not trusted");
                Duration::ZERO
            }
        }
    }

    /// One refresh: fetch, verify, install, cache. Returns the delay until the next one.
    pub async fn refresh_once(&self) -> Duration {
        let s = &self.settings;
        let raw = match fetch::fetch(
            &s.source,
            s.fetch_timeout,
            s.max_bytes,
            s.fetch_roots.as_deref(),
        )
        .await
        {
            Ok(raw) => raw,
            Err(FetchError::Network(e)) => {
                tracing::warn!(source = %s.source, error = %e, "federation metadata download failed; retrying");
                return s.network_retry;
            }
            Err(FetchError::TooLarge) => {
                tracing::error!(source = %s.source, limit = s.max_bytes, "federation metadata larger than the limit");
                return s.bad_content_retry;
            }
        };
        match self.install(&raw) {
            Ok(ttl) => {
                if let (Some(cache), Source::Url(_)) = (&s.cache_file, &s.source) {
                    if let Err(e) = write_private(cache, &raw) {
                        tracing::warn!(file = %cache.display(), error = %e, "cannot cache federation metadata");
                    }
                }
                ttl
            }
            Err(e) => {
                tracing::error!(source = %s.source, error = %e, "federation metadata refused; keeping the previous copy");
                s.bad_content_retry
            }
        }
    }

    /// Refreshes forever (spawn on the server's runtime).
    pub async fn run_refresher(self: Arc<Self>, first_delay: Duration) {
        let mut delay = first_delay;
        loop {
            tokio::time::sleep(delay.max(Duration::from_secs(1))).await;
            delay = self.refresh_once().await;
        }
    }
}

fn log_changes(old: &PinIndex, new: &PinIndex) {
    let mut before: HashMap<&str, Vec<&str>> = HashMap::new();
    for (pin, e) in &old.by_pin {
        before.entry(e.entity_id.as_str()).or_default().push(pin);
    }
    let mut after: HashMap<&str, Vec<&str>> = HashMap::new();
    for (pin, e) in &new.by_pin {
        after.entry(e.entity_id.as_str()).or_default().push(pin);
    }
    for v in before.values_mut().chain(after.values_mut()) {
        v.sort_unstable();
    }
    for (entity, pins) in &after {
        if before.get(entity) != Some(pins) && old.loaded {
            tracing::info!(%entity, pins = ?pins, "federation: client pins of entity changed");
        }
    }
    for entity in before.keys() {
        if !after.contains_key(entity) {
            tracing::info!(%entity, "federation: entity no longer has client pins");
        }
    }
    let trust_of = |idx: &PinIndex| -> HashMap<String, (Option<String>, Vec<Vec<u8>>)> {
        idx.by_pin
            .values()
            .map(|e| {
                (
                    e.entity_id.clone(),
                    (e.organization_id.clone(), e.issuers.clone()),
                )
            })
            .collect()
    };
    let (old_t, new_t) = (trust_of(old), trust_of(new));
    for (entity, (org, issuers)) in &new_t {
        if let Some((old_org, old_issuers)) = old_t.get(entity) {
            if old_org != org {
                tracing::warn!(%entity, from = ?old_org, to = ?org, "federation: organization_id of entity changed");
            }
            if old_issuers != issuers {
                tracing::info!(%entity, "federation: issuers of entity changed");
            }
        }
    }
}

fn write_private(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    {
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        let mut f = o.open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// The rustls client-certificate verifier over the live pin index.
pub struct FederationVerifier {
    fed: Arc<Federation>,
    mandatory: bool,
    algs: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl std::fmt::Debug for FederationVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FederationVerifier")
            .field("mandatory", &self.mandatory)
            .finish()
    }
}

impl FederationVerifier {
    pub fn new(fed: Arc<Federation>, mandatory: bool) -> Self {
        let algs = fed.provider.signature_verification_algorithms;
        Self {
            fed,
            mandatory,
            algs,
        }
    }
}

fn refuse(reason: &str) -> rustls::Error {
    tracing::info!(reason, "TLS client certificate refused");
    rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
}

/// notBefore ≤ now ≤ notAfter.
fn within_validity(cert: &CertificateDer<'_>, now: UnixTime) -> Result<(), rustls::Error> {
    let (_, c) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let v = c.validity();
    if now < v.not_before.timestamp() {
        return Err(rustls::Error::InvalidCertificate(
            CertificateError::NotValidYet,
        ));
    }
    if now > v.not_after.timestamp() {
        return Err(rustls::Error::InvalidCertificate(CertificateError::Expired));
    }
    Ok(())
}

impl ClientCertVerifier for FederationVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let pin = metadata::spki_pin(end_entity).ok_or(rustls::Error::InvalidCertificate(
            CertificateError::BadEncoding,
        ))?;
        let now_i = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        let entity = match self.fed.lookup(&pin, now_i) {
            Lookup::Found(e) => e,
            Lookup::Unknown => return Err(refuse("pin not published in federation metadata")),
            Lookup::Ambiguous => return Err(refuse("pin published by more than one entity")),
            Lookup::Expired => return Err(refuse("federation metadata expired")),
        };
        within_validity(end_entity, now).inspect_err(|_| {
            tracing::info!(entity = %entity.entity_id, "TLS client certificate outside its validity period");
        })?;
        // A self-signed certificate listed as its own issuer (CA:TRUE is common in Moa).
        if entity
            .issuers
            .iter()
            .any(|i| i.as_slice() == end_entity.as_ref())
        {
            return Ok(ClientCertVerified::assertion());
        }
        // Otherwise the chain must lead to one of THIS entity's issuers.
        match &entity.chain_verifier {
            Some(v) => v
                .verify_client_cert(end_entity, intermediates, now)
                .inspect_err(|e| {
                    tracing::info!(entity = %entity.entity_id, error = %e, "TLS client certificate chain does not lead to the entity's issuers");
                }),
            None => Err(refuse("entity has no usable issuer certificate")),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// The request mechanism: the connection's client-certificate pin, looked up again in the
/// CURRENT metadata on every request (a resumed TLS session never passed the verifier).
pub struct FederatedTls {
    fed: Arc<Federation>,
}

impl FederatedTls {
    pub fn new(fed: Arc<Federation>) -> Self {
        Self { fed }
    }
}

impl Mechanism for FederatedTls {
    fn authenticate(&self, creds: &Credentials<'_>, _today: NaiveDate) -> Outcome {
        let Some(pin) = creds.peer_pin else {
            return Outcome::NotPresent;
        };
        match self.fed.lookup(pin, now_secs()) {
            Lookup::Found(e) => match self.fed.tenant_of(&e) {
                Some(t) => Outcome::Accepted {
                    tenant: t.clone(),
                    credential: match &e.organization_id {
                        Some(o) => format!("moa:{}#{o}", e.entity_id),
                        None => format!("moa:{}", e.entity_id),
                    },
                },
                None => {
                    tracing::info!(entity = %e.entity_id, "federated entity authenticated but mapped to no tenant");
                    Outcome::Forbidden
                }
            },
            Lookup::Unknown | Lookup::Ambiguous | Lookup::Expired => {
                tracing::info!("TLS client pin no longer trusted; request refused");
                Outcome::Refused
            }
        }
    }
}

/// This server's own metadata entity (for registration with the federation): the last
/// certificate of the configured chain as issuer, the leaf's pin, tag `egilv1`.
pub fn server_entry(
    chain: &[CertificateDer<'_>],
    own: &super::config::OwnEntity,
    base_uri: &str,
) -> Result<serde_json::Value, String> {
    use base64::Engine;
    let leaf = chain.first().ok_or("tls.cert_file: no certificate")?;
    let issuer = chain.last().ok_or("tls.cert_file: no certificate")?;
    let pin = metadata::spki_pin(leaf).ok_or("tls.cert_file: unreadable certificate")?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(issuer.as_ref());
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect();
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    );
    let mut entity = serde_json::json!({
        "entity_id": own.entity_id,
        "issuers": [{"x509certificate": pem}],
        "servers": [{
            "description": "EGIL SCIM server",
            "base_uri": base_uri,
            "tags": ["egilv1"],
            "pins": [{"alg": "sha256", "digest": pin}]
        }]
    });
    if let Some(m) = entity.as_object_mut() {
        if let Some(o) = &own.organization {
            m.insert("organization".into(), o.clone().into());
        }
        if let Some(o) = &own.organization_id {
            m.insert("organization_id".into(), o.clone().into());
        }
    }
    Ok(serde_json::json!({"version": "1.0.0", "entities": [entity]}))
}
