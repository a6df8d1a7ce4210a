//! Federation metadata (Moa / MATF): a JWS in General JSON Serialization whose protected
//! header carries `alg`, `kid`, `iat`, `exp` and `iss`, verified against a locally
//! configured JWKS, and the tolerant parsing of its payload into a pin index.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::jws::Jws;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rustls::pki_types::CertificateDer;
use rustls::server::danger::ClientCertVerifier;
use serde::Deserialize;
use serde_json::Value;

/// Why a metadata document was not accepted (all "bad content": retried slowly).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MetadataError {
    #[error("not a JWS in General JSON Serialization: {0}")]
    Format(String),
    #[error("no signature made with a configured key (kids in the document: {0})")]
    UnknownKid(String),
    #[error("signature check failed for kid {kid}: {reason}")]
    BadSignature { kid: String, reason: String },
    #[error("protected header: {0}")]
    Header(String),
    #[error("metadata expired at {exp} (now {now})")]
    Expired { exp: i64, now: i64 },
    #[error("metadata not valid before {iat} (now {now})")]
    NotYetValid { iat: i64, now: i64 },
    #[error("payload: {0}")]
    Payload(String),
}

/// The trust anchor: the federation's signing keys and what their headers must say.
#[derive(Clone)]
pub struct SigningTrust {
    pub keys: JwkSet,
    /// Required `iss` of the header, if configured.
    pub issuer: Option<String>,
    pub algorithms: Vec<Algorithm>,
    /// Clock skew allowed for `iat`.
    pub leeway_secs: i64,
}

impl std::fmt::Debug for SigningTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningTrust")
            .field(
                "kids",
                &self
                    .keys
                    .keys
                    .iter()
                    .map(|k| k.common.key_id.clone())
                    .collect::<Vec<_>>(),
            )
            .field("issuer", &self.issuer)
            .field("algorithms", &self.algorithms)
            .finish()
    }
}

#[derive(Deserialize)]
struct GeneralJws {
    payload: String,
    signatures: Vec<SignatureEntry>,
}

#[derive(Deserialize)]
struct SignatureEntry {
    protected: String,
    signature: String,
}

/// A verified document: its payload and header times.
#[derive(Debug, Clone)]
pub struct Verified {
    pub payload: Value,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    pub kid: String,
}

/// Verifies the signature made with one of our keys and checks the header. `exp` is
/// checked against `now - grace` (grace 0 unless configured).
pub fn verify(
    raw: &[u8],
    trust: &SigningTrust,
    now: i64,
    grace_secs: i64,
) -> Result<Verified, MetadataError> {
    let doc: GeneralJws =
        serde_json::from_slice(raw).map_err(|e| MetadataError::Format(e.to_string()))?;
    let mut seen_kids = Vec::new();
    let mut last_err = None;
    for sig in &doc.signatures {
        let header = jsonwebtoken::decode_header(format!(
            "{}.{}.{}",
            sig.protected, doc.payload, sig.signature
        ))
        .map_err(|e| MetadataError::Header(e.to_string()))?;
        let kid = header.kid.clone().unwrap_or_default();
        seen_kids.push(kid.clone());
        let Some(jwk) = trust.keys.find(&kid) else {
            continue;
        };
        if !trust.algorithms.contains(&header.alg) {
            last_err = Some(MetadataError::Header(format!(
                "algorithm {:?} is not allowed",
                header.alg
            )));
            continue;
        }
        if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
            last_err = Some(MetadataError::Header(
                "symmetric keys are never trusted".into(),
            ));
            continue;
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| MetadataError::BadSignature {
            kid: kid.clone(),
            reason: e.to_string(),
        })?;
        let mut v = Validation::new(header.alg);
        v.required_spec_claims = HashSet::new();
        v.validate_exp = false;
        v.validate_nbf = false;
        v.validate_aud = false;
        let jws: Jws<Value> = Jws {
            protected: sig.protected.clone(),
            payload: doc.payload.clone(),
            signature: sig.signature.clone(),
            _pd: Default::default(),
        };
        match jsonwebtoken::jws::decode::<Value>(&jws, &key, &v) {
            Ok(data) => {
                let extras: Value = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(sig.protected.trim_end_matches('='))
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .ok_or_else(|| MetadataError::Header("unreadable".into()))?;
                let num = |k: &str| {
                    extras.get(k).and_then(|v| v.as_i64()).ok_or_else(|| {
                        MetadataError::Header(format!("`{k}` missing or not a number"))
                    })
                };
                let iat = num("iat")?;
                let exp = num("exp")?;
                let iss = extras
                    .get("iss")
                    .and_then(|v| v.as_str())
                    .ok_or_else(|| MetadataError::Header("`iss` missing".into()))?
                    .to_owned();
                if let Some(want) = &trust.issuer {
                    if &iss != want {
                        return Err(MetadataError::Header(format!(
                            "iss {iss:?} is not the configured federation {want:?}"
                        )));
                    }
                }
                if iat > now + trust.leeway_secs {
                    return Err(MetadataError::NotYetValid { iat, now });
                }
                if now >= exp + grace_secs {
                    return Err(MetadataError::Expired { exp, now });
                }
                return Ok(Verified {
                    payload: data.claims,
                    iat,
                    exp,
                    iss,
                    kid,
                });
            }
            Err(e) => {
                last_err = Some(MetadataError::BadSignature {
                    kid,
                    reason: e.to_string(),
                })
            }
        }
    }
    Err(last_err.unwrap_or_else(|| MetadataError::UnknownKid(seen_kids.join(", "))))
}

/// One entity as the server needs it.
pub struct EntityTrust {
    pub entity_id: String,
    pub organization: Option<String>,
    pub organization_id: Option<String>,
    /// DER of each issuer certificate (a self-signed client certificate is its own issuer).
    pub issuers: Vec<Vec<u8>>,
    /// Chain validation against this entity's issuers only.
    pub chain_verifier: Option<Arc<dyn ClientCertVerifier>>,
}

impl std::fmt::Debug for EntityTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntityTrust")
            .field("entity_id", &self.entity_id)
            .field("organization_id", &self.organization_id)
            .field("issuers", &self.issuers.len())
            .finish()
    }
}

/// Client pin → entity, built from one verified document.
#[derive(Debug, Default)]
pub struct PinIndex {
    pub by_pin: HashMap<String, Arc<EntityTrust>>,
    /// Pins published under more than one entity: refused for all of them.
    pub ambiguous: HashSet<String>,
    pub exp: i64,
    pub iat: i64,
    pub cache_ttl: Option<u64>,
    /// False until the first good document arrived.
    pub loaded: bool,
}

#[derive(Deserialize)]
struct RawEntity {
    entity_id: String,
    #[serde(default)]
    organization: Option<String>,
    #[serde(default)]
    organization_id: Option<String>,
    #[serde(default)]
    issuers: Vec<RawIssuer>,
    #[serde(default)]
    clients: Vec<RawEndpoint>,
}

#[derive(Deserialize)]
struct RawIssuer {
    x509certificate: String,
}

#[derive(Deserialize)]
struct RawEndpoint {
    #[serde(default)]
    pins: Vec<RawPin>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawPin {
    Current { alg: String, digest: String },
    Legacy { name: String, value: String },
}

impl RawPin {
    /// The sha256 digest in canonical standard base64, or None for another algorithm or a
    /// malformed digest.
    fn sha256(&self) -> Option<String> {
        let (alg, digest) = match self {
            RawPin::Current { alg, digest } => (alg, digest),
            RawPin::Legacy { name, value } => (name, value),
        };
        if !alg.eq_ignore_ascii_case("sha256") {
            return None;
        }
        let std = base64::engine::general_purpose::STANDARD;
        let bytes = std.decode(digest.trim()).ok()?;
        (bytes.len() == 32).then(|| std.encode(bytes))
    }
}

/// Builds the pin index from a verified payload. Entities that do not parse are skipped
/// (and logged); a pin under two entities is refused for both.
pub fn index(
    v: &Verified,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<PinIndex, MetadataError> {
    let entities = v
        .payload
        .get("entities")
        .and_then(|e| e.as_array())
        .ok_or_else(|| MetadataError::Payload("`entities` missing".into()))?;
    if v.payload.get("version").and_then(|x| x.as_str()).is_none() {
        return Err(MetadataError::Payload("`version` missing".into()));
    }
    let cache_ttl = v.payload.get("cache_ttl").and_then(|x| x.as_u64());
    let mut owners: HashMap<String, Vec<Arc<EntityTrust>>> = HashMap::new();
    for (i, raw) in entities.iter().enumerate() {
        let e: RawEntity = match serde_json::from_value(raw.clone()) {
            Ok(e) => e,
            Err(err) => {
                tracing::warn!(index = i, error = %err, "federation metadata: entity skipped");
                continue;
            }
        };
        let mut issuers = Vec::new();
        for iss in &e.issuers {
            match pem_cert(&iss.x509certificate) {
                Some(der) => issuers.push(der),
                None => {
                    tracing::warn!(entity = %e.entity_id, "federation metadata: unreadable issuer certificate skipped")
                }
            }
        }
        let chain_verifier = chain_verifier(&issuers, provider);
        let trust = Arc::new(EntityTrust {
            entity_id: e.entity_id.clone(),
            organization: e.organization.clone(),
            organization_id: e.organization_id.clone(),
            issuers,
            chain_verifier,
        });
        let mut pins: HashSet<String> = HashSet::new();
        for c in &e.clients {
            pins.extend(c.pins.iter().filter_map(RawPin::sha256));
        }
        for p in pins {
            owners.entry(p).or_default().push(trust.clone());
        }
    }
    let mut idx = PinIndex {
        exp: v.exp,
        iat: v.iat,
        cache_ttl,
        loaded: true,
        ..Default::default()
    };
    for (pin, mut list) in owners {
        if list.len() == 1 {
            if let Some(t) = list.pop() {
                idx.by_pin.insert(pin, t);
            }
        } else {
            let ids: Vec<&str> = list.iter().map(|t| t.entity_id.as_str()).collect();
            tracing::error!(%pin, entities = ?ids, "federation metadata: client pin published by more than one entity; refused for all of them");
            idx.ambiguous.insert(pin);
        }
    }
    Ok(idx)
}

fn pem_cert(pem: &str) -> Option<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    let text = if pem.contains("-----BEGIN") {
        pem.to_owned()
    } else {
        // Some publishers put bare base64 DER.
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            pem.trim()
        )
    };
    CertificateDer::from_pem_slice(text.as_bytes())
        .ok()
        .map(|c| c.as_ref().to_vec())
}

fn chain_verifier(
    issuers: &[Vec<u8>],
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Option<Arc<dyn ClientCertVerifier>> {
    let mut roots = rustls::RootCertStore::empty();
    for der in issuers {
        let _ = roots.add(CertificateDer::from(der.clone()));
    }
    if roots.is_empty() {
        return None;
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .ok()
}

/// RFC 7469 pin of a certificate: base64(SHA-256(DER SubjectPublicKeyInfo)).
pub fn spki_pin(cert: &CertificateDer<'_>) -> Option<String> {
    use sha2::{Digest, Sha256};
    let parsed = rustls::server::ParsedCertificate::try_from(cert).ok()?;
    Some(
        base64::engine::general_purpose::STANDARD
            .encode(Sha256::digest(parsed.subject_public_key_info().as_ref())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::devpki::{self, SigningKey, Validity};
    use serde_json::json;

    const ISS: &str = "https://fed.example";

    fn trust(keys: &[&SigningKey]) -> SigningTrust {
        SigningTrust {
            keys: serde_json::from_str(&devpki::jwks(keys).unwrap()).unwrap(),
            issuer: Some(ISS.into()),
            algorithms: vec![Algorithm::ES256],
            leeway_secs: 60,
        }
    }

    fn payload() -> Value {
        let c = devpki::self_signed("a", &[], true, Validity::default()).unwrap();
        devpki::metadata_payload(
            vec![devpki::client_entity(
                "https://a.example",
                "SE1",
                &[&c.cert_pem],
                &[&c.pin()],
            )],
            60,
        )
    }

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn verifies_header_times_issuer_and_key() {
        let k = SigningKey::generate("k1").unwrap();
        let t = trust(&[&k]);
        let doc = k
            .sign_metadata(&payload(), ISS, NOW - 10, NOW + 100)
            .unwrap();
        let v = verify(doc.as_bytes(), &t, NOW, 0).unwrap();
        assert_eq!((v.iat, v.exp, v.iss.as_str()), (NOW - 10, NOW + 100, ISS));

        // Expired, unless a grace period covers it.
        assert!(matches!(
            verify(doc.as_bytes(), &t, NOW + 100, 0),
            Err(MetadataError::Expired { .. })
        ));
        assert!(verify(doc.as_bytes(), &t, NOW + 100, 50).is_ok());
        // Not yet valid beyond the skew.
        assert!(matches!(
            verify(doc.as_bytes(), &t, NOW - 100, 0),
            Err(MetadataError::NotYetValid { .. })
        ));
        // Another federation's iss.
        let other = k
            .sign_metadata(&payload(), "https://other", NOW, NOW + 100)
            .unwrap();
        assert!(matches!(
            verify(other.as_bytes(), &t, NOW, 0),
            Err(MetadataError::Header(_))
        ));
    }

    #[test]
    fn refuses_unknown_kid_bad_signature_and_tampering() {
        let k = SigningKey::generate("k1").unwrap();
        let t = trust(&[&k]);
        let stranger = SigningKey::generate("k2").unwrap();
        let doc = stranger
            .sign_metadata(&payload(), ISS, NOW, NOW + 100)
            .unwrap();
        assert!(matches!(
            verify(doc.as_bytes(), &t, NOW, 0),
            Err(MetadataError::UnknownKid(_))
        ));

        // Same kid, different key: bad signature.
        let impostor = SigningKey::generate("k1").unwrap();
        let doc = impostor
            .sign_metadata(&payload(), ISS, NOW, NOW + 100)
            .unwrap();
        assert!(matches!(
            verify(doc.as_bytes(), &t, NOW, 0),
            Err(MetadataError::BadSignature { .. })
        ));

        // A payload swapped after signing.
        let doc = k.sign_metadata(&payload(), ISS, NOW, NOW + 100).unwrap();
        let mut v: Value = serde_json::from_str(&doc).unwrap();
        let other = k.sign_metadata(&payload(), ISS, NOW, NOW + 100).unwrap();
        let other: Value = serde_json::from_str(&other).unwrap();
        v["payload"] = other["payload"].clone();
        let tampered = serde_json::to_vec(&v).unwrap();
        assert!(matches!(
            verify(&tampered, &t, NOW, 0),
            Err(MetadataError::BadSignature { .. })
        ));

        assert!(matches!(
            verify(b"{}", &t, NOW, 0),
            Err(MetadataError::Format(_))
        ));
        assert!(matches!(
            verify(b"x.y.z", &t, NOW, 0),
            Err(MetadataError::Format(_))
        ));
    }

    #[test]
    fn second_signature_by_our_key_is_used() {
        let ours = SigningKey::generate("ours").unwrap();
        let theirs = SigningKey::generate("theirs").unwrap();
        let a: Value = serde_json::from_str(
            &theirs
                .sign_metadata(&payload(), ISS, NOW, NOW + 100)
                .unwrap(),
        )
        .unwrap();
        let b: Value =
            serde_json::from_str(&ours.sign_metadata(&payload(), ISS, NOW, NOW + 100).unwrap())
                .unwrap();
        // Re-sign b's payload: both signatures must cover the same payload.
        let pl: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(a["payload"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap();
        let b2: Value =
            serde_json::from_str(&ours.sign_metadata(&pl, ISS, NOW, NOW + 100).unwrap()).unwrap();
        let doc = json!({"payload": a["payload"], "signatures": [a["signatures"][0], b2["signatures"][0]]});
        let v = verify(&serde_json::to_vec(&doc).unwrap(), &trust(&[&ours]), NOW, 0).unwrap();
        assert_eq!(v.kid, "ours");
        let _ = b;
    }

    fn verified(payload: Value) -> Verified {
        Verified {
            payload,
            iat: NOW,
            exp: NOW + 100,
            iss: ISS.into(),
            kid: "k".into(),
        }
    }

    #[test]
    fn tolerant_parsing_legacy_pins_and_duplicate_pins() {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let pin = |b: u8| base64::engine::general_purpose::STANDARD.encode([b; 32]);
        let doc = json!({
            "version": "1.0.0",
            "unknown_member": {"x": 1},
            "entities": [
                {"entity_id": "https://a", "organization_id": "SE1", "issuers": [], "extensions": {},
                 "clients": [{"pins": [{"alg": "sha256", "digest": pin(1)}, {"name": "sha256", "value": pin(2)}], "tags": ["x"]}]},
                {"entity_id": "https://b", "issuers": [],
                 "clients": [{"pins": [{"alg": "sha256", "digest": pin(3)}, {"alg": "sha1", "digest": pin(4)}]}]},
                {"entity_id": "https://c", "issuers": [],
                 "clients": [{"pins": [{"alg": "sha256", "digest": pin(3)}, {"alg": "sha256", "digest": "short"}]}]},
                {"no_entity_id": true}
            ]
        });
        let idx = index(&verified(doc), &provider).unwrap();
        assert_eq!(idx.by_pin.get(&pin(1)).unwrap().entity_id, "https://a");
        assert_eq!(idx.by_pin.get(&pin(2)).unwrap().entity_id, "https://a");
        assert!(!idx.by_pin.contains_key(&pin(3)));
        assert!(idx.ambiguous.contains(&pin(3)));
        assert!(!idx.by_pin.contains_key(&pin(4)));
        assert_eq!(idx.by_pin.len(), 2);
        assert!(index(&verified(json!({"version": "1.0.0"})), &provider).is_err());
    }
}
