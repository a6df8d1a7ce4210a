//! A test PKI and TLS clients: a server certificate from a test CA, a federation signing
//! key with its JWKS, signed metadata files, and rustls clients (reqwest and raw
//! tokio-rustls, the latter to observe session resumption).

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use skolgrind::auth::devpki::{self, Ca, CertKey, SigningKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

pub const FED_ISS: &str = "https://fed.test.invalid";

pub struct Pki {
    pub dir: tempfile::TempDir,
    pub server_ca: Ca,
    pub fed_key: SigningKey,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let server_ca = Ca::new("Test server CA").unwrap();
        let server = server_ca
            .issue("localhost", &["localhost"], devpki::Validity::default())
            .unwrap();
        std::fs::write(dir.path().join("server.pem"), &server.cert_pem).unwrap();
        std::fs::write(dir.path().join("server.key"), &server.key_pem).unwrap();
        let fed_key = SigningKey::generate("fed-2026").unwrap();
        std::fs::write(
            dir.path().join("fed-jwks.json"),
            devpki::jwks(&[&fed_key]).unwrap(),
        )
        .unwrap();
        Pki {
            dir,
            server_ca,
            fed_key,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Signs and writes `metadata.jws`; `exp_in` seconds from now (negative: expired).
    pub fn write_metadata(&self, entities: Vec<Value>, cache_ttl: u64, exp_in: i64) {
        let doc = self.sign(entities, cache_ttl, exp_in, &self.fed_key);
        self.write_raw_metadata(&doc);
    }

    pub fn sign(
        &self,
        entities: Vec<Value>,
        cache_ttl: u64,
        exp_in: i64,
        key: &SigningKey,
    ) -> String {
        let now = chrono::Utc::now().timestamp();
        key.sign_metadata(
            &devpki::metadata_payload(entities, cache_ttl),
            FED_ISS,
            now - 60,
            now + exp_in,
        )
        .unwrap()
    }

    /// Replaces the metadata file atomically (the server may read it at any moment).
    pub fn write_raw_metadata(&self, doc: &str) {
        let tmp = self.path("metadata.jws.tmp");
        std::fs::write(&tmp, doc).unwrap();
        std::fs::rename(tmp, self.path("metadata.jws")).unwrap();
    }

    /// `[tls]` and `[federation]` sections (before `[server]` in the config file).
    pub fn toml(&self, client_certificate: &str, extra_federation: &str) -> String {
        format!(
            r#"
[tls]
listen = "127.0.0.1:0"
cert_file = "{}"
key_file = "{}"
client_certificate = "{client_certificate}"

[federation]
metadata = "{}"
jwks_file = "{}"
issuer = "{FED_ISS}"
cache_file = "{}"
{extra_federation}
"#,
            self.path("server.pem").display(),
            self.path("server.key").display(),
            self.path("metadata.jws").display(),
            self.path("fed-jwks.json").display(),
            self.path("cache.jws").display(),
        )
    }

    /// `[tls]` only (no client certificates).
    pub fn tls_only_toml(&self) -> String {
        format!(
            "[tls]\nlisten = \"127.0.0.1:0\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            self.path("server.pem").display(),
            self.path("server.key").display(),
        )
    }

    /// A rustls client trusting the test server CA, optionally with a client certificate.
    pub fn client_config(&self, client: Option<&CertKey>) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from(
                self.server_ca.cert.der.clone(),
            ))
            .unwrap();
        let b = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        match client {
            Some(c) => {
                use rustls::pki_types::pem::PemObject;
                let cert = rustls::pki_types::CertificateDer::from(c.der.clone());
                let key =
                    rustls::pki_types::PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).unwrap();
                b.with_client_auth_cert(vec![cert], key).unwrap()
            }
            None => b.with_no_client_auth(),
        }
    }

    /// A reqwest client over that rustls config, resolving `localhost` to the server.
    pub fn reqwest(&self, client: Option<&CertKey>, addr: &str) -> reqwest::Client {
        reqwest::Client::builder()
            .use_preconfigured_tls(self.client_config(client))
            .resolve("localhost", addr.parse().unwrap())
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .unwrap()
    }
}

/// `https://localhost:PORT` for a TLS listener address.
pub fn tls_url(addr: &str, path: &str) -> String {
    let port = addr.rsplit(':').next().unwrap();
    format!("https://localhost:{port}{path}")
}

/// The status of a GET, or None when the TLS connection was refused.
pub async fn get_status(c: &reqwest::Client, url: &str) -> Option<u16> {
    c.get(url)
        .header("Accept", "application/scim+json")
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

pub type Raw = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A raw TLS connection (HTTP/1.1) with this config.
pub async fn connect(cfg: &Arc<rustls::ClientConfig>, addr: &str) -> std::io::Result<Raw> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost")
        .unwrap()
        .to_owned();
    tokio_rustls::TlsConnector::from(cfg.clone())
        .connect(name, tcp)
        .await
}

pub fn resumed(s: &Raw) -> bool {
    s.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
}

/// One keep-alive HTTP/1.1 GET on a raw connection; Err when the server refused.
pub async fn raw_get(s: &mut Raw, path: &str) -> std::io::Result<u16> {
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/scim+json\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::other("connection closed"));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(status)
}
