//! JWT bearer tokens (Skolverket/nutid style): signature by a JWKS key chosen by `kid`,
//! algorithm allow-list per issuer (never `none`, never HMAC), required `iss`, `aud`,
//! `exp`, `nbf` and `iat` with bounded skew; the tenant comes from a configured claim,
//! optionally restricted by `entity_id` and by `requested_access[].locations`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::Engine;
use chrono::NaiveDate;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use tokio::sync::Notify;

use super::fetch::{self, Source};
use super::{Credentials, Mechanism, Outcome};
use crate::domain::TenantId;

/// One signing key from a JWKS.
struct Key {
    kid: String,
    alg: Option<Algorithm>,
    key: DecodingKey,
}

/// A JWKS kept in memory, refreshed on a timer and (rate-limited) on an unknown `kid`.
pub struct Jwks {
    pub source: Source,
    keys: ArcSwap<Vec<Key>>,
    refresh_wanted: Notify,
    last_fetch: AtomicI64,
    pub min_refresh: Duration,
    pub refresh_every: Duration,
    pub fetch_timeout: Duration,
    /// Extra CA certificates (PEM) trusted for downloading the JWKS.
    pub fetch_roots: Option<Arc<[u8]>>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("source", &self.source)
            .finish()
    }
}

const JWKS_MAX_BYTES: usize = 1024 * 1024;

/// Parses a JWKS, keeping only asymmetric keys that have a `kid`.
pub fn parse_jwks(raw: &[u8]) -> Result<Vec<(String, Option<Algorithm>, DecodingKey)>, String> {
    let set: JwkSet = serde_json::from_slice(raw).map_err(|e| format!("not a JWKS: {e}"))?;
    let mut out = Vec::new();
    for jwk in &set.keys {
        if matches!(
            jwk.algorithm,
            AlgorithmParameters::OctetKey(_) | AlgorithmParameters::Other(_)
        ) {
            continue;
        }
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        let alg = jwk
            .common
            .key_algorithm
            .and_then(|a| a.to_string().parse::<Algorithm>().ok());
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {kid}: {e}"))?;
        out.push((kid, alg, key));
    }
    if out.is_empty() {
        return Err("no usable asymmetric key with a kid".into());
    }
    Ok(out)
}

impl Jwks {
    pub fn new(
        source: Source,
        min_refresh: Duration,
        refresh_every: Duration,
        fetch_roots: Option<Arc<[u8]>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            source,
            keys: ArcSwap::from_pointee(Vec::new()),
            refresh_wanted: Notify::new(),
            last_fetch: AtomicI64::new(i64::MIN / 2),
            min_refresh,
            refresh_every,
            fetch_timeout: Duration::from_secs(30),
            fetch_roots,
        })
    }

    fn install(&self, raw: &[u8]) -> Result<usize, String> {
        let keys: Vec<Key> = parse_jwks(raw)?
            .into_iter()
            .map(|(kid, alg, key)| Key { kid, alg, key })
            .collect();
        let n = keys.len();
        self.keys.store(Arc::new(keys));
        Ok(n)
    }

    /// Loads a file source synchronously (start-up); URL sources load in the refresher.
    pub fn load_now(&self) -> Result<(), String> {
        if let Source::File(p) = &self.source {
            let raw = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
            self.install(&raw)?;
            self.last_fetch
                .store(chrono::Utc::now().timestamp(), Ordering::Relaxed);
        }
        Ok(())
    }

    async fn refresh(&self) {
        self.last_fetch
            .store(chrono::Utc::now().timestamp(), Ordering::Relaxed);
        match fetch::fetch(
            &self.source,
            self.fetch_timeout,
            JWKS_MAX_BYTES,
            self.fetch_roots.as_deref(),
        )
        .await
        {
            Ok(raw) => match self.install(&raw) {
                Ok(n) => tracing::info!(source = %self.source, keys = n, "JWKS loaded"),
                Err(e) => {
                    tracing::error!(source = %self.source, error = %e, "JWKS refused; keeping the previous keys")
                }
            },
            Err(e) => tracing::warn!(source = %self.source, error = %e, "JWKS download failed"),
        }
    }

    /// Refreshes on a timer and whenever an unknown `kid` asked for it (rate-limited).
    pub async fn run_refresher(self: Arc<Self>) {
        if matches!(self.source, Source::Url(_)) {
            self.refresh().await;
        }
        loop {
            let _ = tokio::time::timeout(self.refresh_every, self.refresh_wanted.notified()).await;
            let since = chrono::Utc::now().timestamp() - self.last_fetch.load(Ordering::Relaxed);
            let wait = self.min_refresh.as_secs() as i64 - since;
            if wait > 0 {
                tokio::time::sleep(Duration::from_secs(wait as u64)).await;
            }
            self.refresh().await;
        }
    }

    fn find(
        &self,
        kid: &str,
        f: impl FnOnce(Option<(&DecodingKey, Option<Algorithm>)>) -> Outcome,
    ) -> Outcome {
        let keys = self.keys.load();
        match keys.iter().find(|k| k.kid == kid) {
            Some(k) => f(Some((&k.key, k.alg))),
            None => {
                self.refresh_wanted.notify_one();
                f(None)
            }
        }
    }
}

/// A requested-access rule: a token must name this API type with a location covering our
/// base URL.
#[derive(Debug, Clone)]
pub struct AccessRule {
    pub access_type: String,
    pub location: url::Url,
}

/// One trusted token issuer.
#[derive(Debug)]
pub struct Issuer {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    pub jwks: Arc<Jwks>,
    pub tenant_claim: String,
    pub leeway_secs: u64,
    pub entity_ids: Option<HashSet<String>>,
    pub access: Option<AccessRule>,
    /// Value of `tenant_claim` → tenant.
    pub tenants: HashMap<String, TenantId>,
}

pub struct JwtBearer {
    issuers: Vec<Issuer>,
}

impl JwtBearer {
    pub fn new(issuers: Vec<Issuer>) -> Self {
        Self { issuers }
    }
}

/// Reads `iss` from the (not yet verified) payload to choose the issuer's settings.
fn unverified_iss(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("iss")?.as_str().map(str::to_owned)
}

/// Whether `loc` (from a token) covers `ours`: same scheme, host and port, and `loc`'s
/// path equal to ours or a prefix of it ending on a segment boundary.
pub fn location_covers(loc: &str, ours: &url::Url) -> bool {
    let Ok(loc) = url::Url::parse(loc) else {
        return false;
    };
    if loc.scheme() != ours.scheme()
        || loc.host_str() != ours.host_str()
        || loc.port_or_known_default() != ours.port_or_known_default()
        || !loc.username().is_empty()
        || loc.password().is_some()
        || loc.query().is_some()
        || loc.fragment().is_some()
    {
        return false;
    }
    let lp = loc.path().trim_end_matches('/');
    let op = ours.path().trim_end_matches('/');
    op == lp || (op.starts_with(lp) && op.as_bytes().get(lp.len()) == Some(&b'/'))
}

fn access_allowed(claims: &Value, rule: &AccessRule) -> bool {
    let Some(entries) = claims.get("requested_access").and_then(|v| v.as_array()) else {
        return false;
    };
    entries
        .iter()
        .filter(|e| e.get("type").and_then(|t| t.as_str()) == Some(rule.access_type.as_str()))
        .any(|e| {
            e.get("locations")
                .and_then(|l| l.as_array())
                .is_some_and(|ls| {
                    ls.iter()
                        .filter_map(|l| l.as_str())
                        .any(|l| location_covers(l, &rule.location))
                })
        })
}

impl Issuer {
    fn check(&self, token: &str, header: &jsonwebtoken::Header) -> Outcome {
        if !self.algorithms.contains(&header.alg) {
            tracing::info!(alg = ?header.alg, issuer = %self.issuer, "bearer token refused: algorithm not allowed");
            return Outcome::Refused;
        }
        let Some(kid) = header.kid.as_deref() else {
            tracing::info!("bearer token refused: no kid");
            return Outcome::Refused;
        };
        self.jwks.find(kid, |k| {
            let Some((key, key_alg)) = k else {
                tracing::info!(%kid, issuer = %self.issuer, "bearer token refused: unknown kid (JWKS refresh requested)");
                return Outcome::Refused;
            };
            if key_alg.is_some_and(|a| a != header.alg) {
                tracing::info!(%kid, "bearer token refused: algorithm differs from the key's");
                return Outcome::Refused;
            }
            // Only the header's algorithm, already checked against the allow-list
            // (jsonwebtoken refuses a list that mixes key families).
            let mut v = Validation::new(header.alg);
            v.leeway = self.leeway_secs;
            v.validate_nbf = true;
            v.validate_exp = true;
            v.validate_aud = true;
            v.set_audience(&self.audiences);
            v.set_issuer(&[&self.issuer]);
            v.set_required_spec_claims(&["exp", "nbf", "iss", "aud"]);
            let claims = match jsonwebtoken::decode::<Value>(token, key, &v) {
                Ok(d) => d.claims,
                Err(e) => {
                    tracing::info!(issuer = %self.issuer, error = %e, "bearer token refused");
                    return Outcome::Refused;
                }
            };
            let now = chrono::Utc::now().timestamp();
            match claims.get("iat").and_then(|v| v.as_i64()) {
                Some(iat) if iat <= now + self.leeway_secs as i64 => {}
                _ => {
                    tracing::info!("bearer token refused: iat missing or in the future");
                    return Outcome::Refused;
                }
            }
            if let Some(allowed) = &self.entity_ids {
                let ok = claims
                    .get("entity_id")
                    .and_then(|e| e.as_str())
                    .is_some_and(|e| allowed.contains(e));
                if !ok {
                    tracing::info!("bearer token forbidden: entity_id not allowed");
                    return Outcome::Forbidden;
                }
            }
            if let Some(rule) = &self.access {
                if !access_allowed(&claims, rule) {
                    tracing::info!("bearer token forbidden: requested_access does not cover this server");
                    return Outcome::Forbidden;
                }
            }
            let value = claims.get(&self.tenant_claim).and_then(|c| c.as_str());
            match value.and_then(|c| self.tenants.get(c)) {
                Some(t) => Outcome::Accepted {
                    tenant: t.clone(),
                    credential: format!("jwt:{}#{kid}", self.issuer),
                },
                None => {
                    tracing::info!(claim = %self.tenant_claim, "bearer token forbidden: no tenant for the claim value");
                    Outcome::Forbidden
                }
            }
        })
    }
}

impl Mechanism for JwtBearer {
    fn authenticate(&self, creds: &Credentials<'_>, _today: NaiveDate) -> Outcome {
        let Some(token) = creds.bearer else {
            return Outcome::NotPresent;
        };
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            tracing::info!("bearer token refused: unreadable");
            return Outcome::Refused;
        };
        let Some(iss) = unverified_iss(token) else {
            tracing::info!("bearer token refused: no iss");
            return Outcome::Refused;
        };
        match self.issuers.iter().find(|i| i.issuer == iss) {
            Some(i) => i.check(token, &header),
            None => {
                tracing::info!("bearer token refused: unknown issuer");
                Outcome::Refused
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_match_by_origin_and_segment_prefix() {
        let ours = url::Url::parse("https://egil.example.se/egil").unwrap();
        for ok in [
            "https://egil.example.se/egil",
            "https://egil.example.se/egil/",
            "https://egil.example.se/",
            "https://egil.example.se",
            "https://EGIL.example.se:443/egil",
        ] {
            assert!(location_covers(ok, &ours), "{ok}");
        }
        for bad in [
            "https://egil.example.se.evil/egil",
            "https://egil.example.se.evil",
            "https://host.evil/https://egil.example.se/egil",
            "http://egil.example.se/egil",
            "https://egil.example.se:8443/egil",
            "https://egil.example.se/egi",
            "https://egil.example.se/egil2",
            "https://egil.example.se/egil/Users",
            "https://user@egil.example.se/egil",
            "https://egil.example.se/other",
            "not a url",
        ] {
            assert!(!location_covers(bad, &ours), "{bad}");
        }
    }

    #[test]
    fn every_entry_of_the_type_is_examined() {
        let rule = AccessRule {
            access_type: "ss12000-api".into(),
            location: url::Url::parse("https://egil.example.se/egil").unwrap(),
        };
        let c = serde_json::json!({"requested_access": [
            {"type": "ss12000-api", "locations": ["https://other.example/"]},
            {"type": "other", "locations": ["https://egil.example.se/egil"]},
            {"type": "ss12000-api", "locations": ["https://x.example/", "https://egil.example.se/egil"]}
        ]});
        assert!(access_allowed(&c, &rule));
        let c = serde_json::json!({"requested_access": [
            {"type": "other", "locations": ["https://egil.example.se/egil"]}
        ]});
        assert!(!access_allowed(&c, &rule));
        assert!(!access_allowed(&serde_json::json!({}), &rule));
    }
}
