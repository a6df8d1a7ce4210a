//! A development/test PKI: server and client certificates, a federation signing key with
//! its JWKS and signed federation metadata, and a JWT issuer key. Used by `skolgrind
//! dev-pki` (worked example in the README) and by the integration tests. Never for
//! production trust: the keys are written unencrypted.

use std::path::Path;

use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::{json, Value};

/// A certificate with its private key, both PEM.
#[derive(Debug, Clone)]
pub struct CertKey {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl CertKey {
    /// The RFC 7469 SHA-256 SPKI pin (standard base64).
    pub fn pin(&self) -> String {
        super::federation::metadata::spki_pin(&self.der.clone().into()).unwrap_or_default()
    }
}

/// A certificate authority that can issue leaf certificates.
pub struct Ca {
    pub cert: CertKey,
    issuer: Issuer<'static, KeyPair>,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Validity window relative to now, in days (negative: in the past).
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub from_days: i64,
    pub to_days: i64,
}

impl Default for Validity {
    fn default() -> Self {
        Self {
            from_days: -1,
            to_days: 365,
        }
    }
}

fn params(cn: &str, sans: &[&str], v: Validity) -> Result<CertificateParams, String> {
    let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .map_err(err)?;
    p.distinguished_name.push(DnType::CommonName, cn);
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now + time::Duration::days(v.from_days);
    p.not_after = now + time::Duration::days(v.to_days);
    Ok(p)
}

fn key() -> Result<KeyPair, String> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(err)
}

/// A self-signed certificate. `ca` makes it CA:TRUE (as `openssl req -x509` does), the
/// common shape of Moa client certificates.
pub fn self_signed(cn: &str, sans: &[&str], ca: bool, v: Validity) -> Result<CertKey, String> {
    let k = key()?;
    let mut p = params(cn, sans, v)?;
    if ca {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    }
    let c = p.self_signed(&k).map_err(err)?;
    Ok(CertKey {
        cert_pem: c.pem(),
        key_pem: k.serialize_pem(),
        der: c.der().to_vec(),
    })
}

impl Ca {
    pub fn new(cn: &str) -> Result<Ca, String> {
        let k = key()?;
        let mut p = params(
            cn,
            &[],
            Validity {
                from_days: -1,
                to_days: 3650,
            },
        )?;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let c = p.self_signed(&k).map_err(err)?;
        let cert = CertKey {
            cert_pem: c.pem(),
            key_pem: k.serialize_pem(),
            der: c.der().to_vec(),
        };
        Ok(Ca {
            cert,
            issuer: Issuer::new(p, k),
        })
    }

    /// A leaf certificate for TLS clients (and servers when `sans` are given).
    pub fn issue(&self, cn: &str, sans: &[&str], v: Validity) -> Result<CertKey, String> {
        let k = key()?;
        let mut p = params(cn, sans, v)?;
        p.is_ca = IsCa::ExplicitNoCa;
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        let c = p.signed_by(&k, &self.issuer).map_err(err)?;
        Ok(CertKey {
            cert_pem: c.pem(),
            key_pem: k.serialize_pem(),
            der: c.der().to_vec(),
        })
    }
}

/// An ES256 signing key with its `kid`.
pub struct SigningKey {
    pub kid: String,
    pub key_pem: String,
    pub public_pem: String,
    encoding: EncodingKey,
}

impl SigningKey {
    pub fn generate(kid: &str) -> Result<SigningKey, String> {
        let k = key()?;
        let key_pem = k.serialize_pem();
        let encoding = EncodingKey::from_ec_pem(key_pem.as_bytes()).map_err(err)?;
        Ok(SigningKey {
            kid: kid.to_owned(),
            key_pem,
            public_pem: k.public_key_pem(),
            encoding,
        })
    }

    /// The public key as a JWK (with `kid` and `alg`).
    pub fn jwk(&self) -> Result<Jwk, String> {
        let mut j = Jwk::from_encoding_key(&self.encoding, Algorithm::ES256).map_err(err)?;
        j.common.key_id = Some(self.kid.clone());
        Ok(j)
    }

    pub fn encoding(&self) -> &EncodingKey {
        &self.encoding
    }

    /// A compact JWT with these claims, `kid` in the header.
    pub fn sign_jwt(&self, claims: &Value) -> Result<String, String> {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&h, claims, &self.encoding).map_err(err)
    }

    /// Signs a federation metadata payload as a JWS in General JSON Serialization with
    /// `iat`, `exp` and `iss` in the protected header.
    pub fn sign_metadata(
        &self,
        payload: &Value,
        iss: &str,
        iat: i64,
        exp: i64,
    ) -> Result<String, String> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = json!({"alg": "ES256", "kid": self.kid, "iat": iat, "exp": exp, "iss": iss});
        let protected = b64.encode(serde_json::to_vec(&header).map_err(err)?);
        let payload = b64.encode(serde_json::to_vec(payload).map_err(err)?);
        let msg = format!("{protected}.{payload}");
        let signature =
            jsonwebtoken::crypto::sign(msg.as_bytes(), &self.encoding, Algorithm::ES256)
                .map_err(err)?;
        serde_json::to_string_pretty(&json!({
            "payload": payload,
            "signatures": [{"protected": protected, "signature": signature}]
        }))
        .map_err(err)
    }
}

/// A JWKS document holding these keys' public halves.
pub fn jwks(keys: &[&SigningKey]) -> Result<String, String> {
    let set = JwkSet {
        keys: keys.iter().map(|k| k.jwk()).collect::<Result<_, _>>()?,
    };
    serde_json::to_string_pretty(&set).map_err(err)
}

/// One client entity of a metadata document.
pub fn client_entity(entity_id: &str, org_id: &str, issuers: &[&str], pins: &[&str]) -> Value {
    json!({
        "entity_id": entity_id,
        "organization": format!("Organisation {org_id}"),
        "organization_id": org_id,
        "issuers": issuers.iter().map(|p| json!({"x509certificate": p})).collect::<Vec<_>>(),
        "clients": [{
            "description": "EGIL SCIM client",
            "pins": pins.iter().map(|p| json!({"alg": "sha256", "digest": p})).collect::<Vec<_>>()
        }]
    })
}

/// A metadata payload around some entities.
pub fn metadata_payload(entities: Vec<Value>, cache_ttl: u64) -> Value {
    json!({"version": "1.0.0", "cache_ttl": cache_ttl, "entities": entities})
}

fn write(dir: &Path, name: &str, data: &str, private: bool) -> Result<(), String> {
    use std::io::Write;
    let path = dir.join(name);
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = o
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(data.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// `skolgrind dev-pki DIR`: writes a complete local test setup and returns a summary.
pub fn generate(dir: &Path, host: &str, entity_id: &str, org_id: &str) -> Result<String, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let server = self_signed(host, &[host], false, Validity::default())?;
    write(dir, "server.pem", &server.cert_pem, false)?;
    write(dir, "server.key", &server.key_pem, true)?;
    let client = self_signed(entity_id, &[], true, Validity::default())?;
    write(dir, "client.pem", &client.cert_pem, false)?;
    write(dir, "client.key", &client.key_pem, true)?;
    let fed = SigningKey::generate("dev-federation-1")?;
    write(dir, "federation.key", &fed.key_pem, true)?;
    write(dir, "federation-jwks.json", &jwks(&[&fed])?, false)?;
    let payload = metadata_payload(
        vec![client_entity(
            entity_id,
            org_id,
            &[&client.cert_pem],
            &[&client.pin()],
        )],
        3600,
    );
    let now = chrono::Utc::now().timestamp();
    let iss = "https://dev.federation.invalid";
    write(
        dir,
        "metadata.jws",
        &fed.sign_metadata(&payload, iss, now, now + 30 * 86400)?,
        false,
    )?;
    let jwt = SigningKey::generate("dev-jwt-1")?;
    write(dir, "jwt-issuer.key", &jwt.key_pem, true)?;
    write(dir, "jwt-jwks.json", &jwks(&[&jwt])?, false)?;
    let token = jwt.sign_jwt(&json!({
        "iss": "https://dev.issuer.invalid",
        "aud": "skolgrind-dev",
        "iat": now, "nbf": now, "exp": now + 86400,
        "organization_id": org_id,
        "entity_id": entity_id,
        "requested_access": [{"type": "ss12000-api", "locations": [format!("https://{host}:8443/egil")]}]
    }))?;
    write(dir, "token.jwt", &token, true)?;
    Ok(format!(
        "wrote {dir}: server.pem/.key ({host}), client.pem/.key (pin {pin}), federation-jwks.json, \
         metadata.jws (iss {iss}, 30 days), jwt-jwks.json, token.jwt (iss https://dev.issuer.invalid, \
         aud skolgrind-dev, organization_id {org_id}, 24 h)",
        dir = dir.display(),
        pin = client.pin()
    ))
}
