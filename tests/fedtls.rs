//! Federated TLS (Moa) over real TLS connections: pins in signed metadata decide the
//! tenant; every way a certificate or a metadata document can be wrong is refused; trust
//! changes reach existing and resumed connections without a restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::tls::*;
use common::*;
use serde_json::Value;
use skolgrind::auth::devpki::{self, client_entity, CertKey, SigningKey, Validity};

struct Fed {
    a: CertKey,
    b: CertKey,
    cross: CertKey,
    dup: CertKey,
    expired: CertKey,
    no_tenant: CertKey,
    unknown: CertKey,
    entities: Vec<Value>,
}

fn federation() -> Fed {
    let ss = |cn: &str, v: Validity| devpki::self_signed(cn, &[], true, v).unwrap();
    // A: a self-signed CA:TRUE certificate, its own issuer (as `openssl req -x509` makes).
    let a = ss("a", Validity::default());
    // B: a leaf from B's own CA.
    let ca_b = devpki::Ca::new("B CA").unwrap();
    let b = ca_b.issue("b-client", &[], Validity::default()).unwrap();
    // A leaf from B's CA whose pin is published by C, whose issuer is A's certificate.
    let cross = ca_b.issue("cross", &[], Validity::default()).unwrap();
    let dup = ss("dup", Validity::default());
    let expired = ss(
        "expired",
        Validity {
            from_days: -30,
            to_days: -1,
        },
    );
    let no_tenant = ss("f", Validity::default());
    let unknown = ss("unknown", Validity::default());
    let entities = vec![
        client_entity(
            "https://a.example",
            "SE2120000001",
            &[&a.cert_pem],
            &[&a.pin()],
        ),
        client_entity(
            "https://b.example",
            "SE2120000002",
            &[&ca_b.cert.cert_pem],
            &[&b.pin()],
        ),
        client_entity(
            "https://c.example",
            "SE2120000003",
            &[&a.cert_pem],
            &[&cross.pin()],
        ),
        client_entity(
            "https://d1.example",
            "SE2120000003",
            &[&dup.cert_pem],
            &[&dup.pin()],
        ),
        client_entity(
            "https://d2.example",
            "SE2120000004",
            &[&dup.cert_pem],
            &[&dup.pin()],
        ),
        client_entity(
            "https://e.example",
            "SE2120000003",
            &[&expired.cert_pem],
            &[&expired.pin()],
        ),
        client_entity(
            "https://f.example",
            "SE2120000009",
            &[&no_tenant.cert_pem],
            &[&no_tenant.pin()],
        ),
    ];
    Fed {
        a,
        b,
        cross,
        dup,
        expired,
        no_tenant,
        unknown,
        entities,
    }
}

/// kommunen = entity A; grannkommun = organisation of B; strikt = C, D1 and E (so refusals
/// of those are the certificate's fault, not a missing tenant). F maps to nothing.
fn tenants() -> String {
    format!(
        r#"
[[tenants]]
id = "kommunen"
name = "Kommunen"
api_keys = ["{}"]
[tenants.auth]
moa_entity_ids = ["https://a.example"]

[[tenants]]
id = "grannkommun"
name = "Grannkommunen"
[tenants.auth]
moa_organization_ids = ["SE2120000002"]

[[tenants]]
id = "strikt"
name = "Strikt"
[tenants.auth]
moa_entity_ids = ["https://c.example", "https://d1.example", "https://e.example"]
"#,
        hash(KEY_A)
    )
}

async fn total(c: &reqwest::Client, url: &str) -> u64 {
    let r = c.get(url).header("Accept", SCIM).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["totalResults"].as_u64().unwrap()
}

#[tokio::test]
async fn pins_in_metadata_decide_the_tenant_and_everything_else_is_refused() {
    let pki = Pki::new();
    let fed = federation();
    pki.write_metadata(fed.entities.clone(), 3600, 86400);
    let s = Server::start_with(&tenants(), &pki.toml("optional", ""));
    let addr = s.tls_addr.clone().unwrap();
    let users = tls_url(&addr, "/egil/Users");

    // The full EGIL push from the core tests, over mutual TLS with metadata, no API key.
    let ca = pki.reqwest(Some(&fed.a), &addr);
    for (m, p, ct, body) in fixtures() {
        let r = ca
            .request(m.parse().unwrap(), tls_url(&addr, &format!("/egil{p}")))
            .header("Content-Type", ct)
            .header("Accept", SCIM)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{m} {p}");
    }
    assert!(total(&ca, &users).await > 0);

    // B (a CA-issued leaf, mapped by organisation) sees its own, empty tenant only.
    let cb = pki.reqwest(Some(&fed.b), &addr);
    assert_eq!(total(&cb, &users).await, 0);
    let stefan = tls_url(&addr, "/egil/Users/39732dea-e4a6-4d8f-96de-925a679c56ff");
    assert_eq!(get_status(&ca, &stefan).await, Some(200));
    assert_eq!(get_status(&cb, &stefan).await, Some(404));

    // Refused in the handshake: unknown pin, a pin under two entities, a chain from
    // another entity's issuer, an expired certificate.
    for (name, cert) in [
        ("unknown pin", &fed.unknown),
        ("pin under two entities", &fed.dup),
        ("chain from another entity's issuer", &fed.cross),
        ("expired certificate", &fed.expired),
    ] {
        let c = pki.reqwest(Some(cert), &addr);
        assert_eq!(get_status(&c, &users).await, None, "{name}");
    }

    // Authenticated entity with no tenant: 403, in SCIM format.
    let cf = pki.reqwest(Some(&fed.no_tenant), &addr);
    let r = cf.get(&users).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let (_, body) = json(r).await;
    assert_eq!(body["status"], "403");

    // Shared listener: without a certificate an API key still works, nothing else does.
    let anon = pki.reqwest(None, &addr);
    let r = anon.get(&users).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    let r = anon
        .get(&users)
        .header("X-API-Key", KEY_A)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A pin never works over plain HTTP (no certificate there).
    let r = send(&client(), "GET", &s.url("/egil/Users"), None, None, vec![]).await;
    assert_eq!(r.status(), 401);

    let log = std::fs::read_to_string(s.log_path()).unwrap();
    assert!(log.contains("client pin published by more than one entity"));
}

#[tokio::test]
async fn bad_metadata_is_never_trusted() {
    let pki = Pki::new();
    let fed = federation();
    let entities = fed.entities.clone();
    let stranger = SigningKey::generate("other-kid").unwrap();
    let impostor = SigningKey::generate("fed-2026").unwrap();
    let good = pki.sign(entities.clone(), 3600, 86400, &pki.fed_key);
    let tampered = {
        let mut v: Value = serde_json::from_str(&good).unwrap();
        let other: Value = serde_json::from_str(&pki.sign(
            vec![client_entity(
                "https://x",
                "SE1",
                &[&fed.unknown.cert_pem],
                &[&fed.unknown.pin()],
            )],
            3600,
            86400,
            &pki.fed_key,
        ))
        .unwrap();
        v["payload"] = other["payload"].clone();
        v.to_string()
    };
    let cases = [
        (
            "expired",
            pki.sign(entities.clone(), 3600, -10, &pki.fed_key),
        ),
        (
            "unknown kid",
            pki.sign(entities.clone(), 3600, 86400, &stranger),
        ),
        (
            "bad signature",
            pki.sign(entities.clone(), 3600, 86400, &impostor),
        ),
        ("tampered payload", tampered),
        ("garbage", "not json".to_owned()),
    ];
    for (name, doc) in cases {
        pki.write_raw_metadata(&doc);
        let s = Server::start_with(&tenants(), &pki.toml("required", ""));
        let addr = s.tls_addr.clone().unwrap();
        let c = pki.reqwest(Some(&fed.a), &addr);
        assert_eq!(
            get_status(&c, &tls_url(&addr, "/egil/Users")).await,
            None,
            "{name}"
        );
        // check-config says what is wrong with the file.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_skolgrind"))
            .arg("check-config")
            .arg(s.dir.path().join("skolgrind.toml"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{name}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("federation.metadata"),
            "{name}"
        );
    }

    // An explicitly configured grace period lets expired metadata through.
    pki.write_raw_metadata(&pki.sign(entities.clone(), 3600, -10, &pki.fed_key));
    let s = Server::start_with(
        &tenants(),
        &pki.toml("required", "expired_grace_secs = 3600"),
    );
    let addr = s.tls_addr.clone().unwrap();
    let c = pki.reqwest(Some(&fed.a), &addr);
    assert_eq!(
        get_status(&c, &tls_url(&addr, "/egil/Users")).await,
        Some(200)
    );

    // Required mode: no certificate, no connection (an API key does not help).
    let anon = pki.reqwest(None, &addr);
    let r = anon
        .get(tls_url(&addr, "/egil/Users"))
        .header("X-API-Key", KEY_A)
        .send()
        .await;
    assert!(r.is_err());
}

#[tokio::test]
async fn metadata_that_expires_while_held_stops_being_trusted() {
    let pki = Pki::new();
    let fed = federation();
    // Valid for a few seconds; the file keeps the same (soon expired) document.
    pki.write_metadata(fed.entities.clone(), 3600, 8);
    let s = Server::start_with(&tenants(), &pki.toml("optional", ""));
    let addr = s.tls_addr.clone().unwrap();
    let cfg = Arc::new(pki.client_config(Some(&fed.a)));
    let mut conn = connect(&cfg, &addr).await.unwrap();
    assert_eq!(raw_get(&mut conn, "/egil/Users").await.unwrap(), 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let st = raw_get(&mut conn, "/egil/Users").await.unwrap();
        if st == 401 {
            break;
        }
        assert_eq!(st, 200);
        assert!(
            std::time::Instant::now() < deadline,
            "expired metadata still trusted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let mut fresh = connect(&Arc::new(pki.client_config(Some(&fed.a))), &addr)
        .await
        .unwrap();
    assert!(raw_get(&mut fresh, "/egil/Users").await.is_err());
    let log = std::fs::read_to_string(s.log_path()).unwrap();
    assert!(log.contains("federation metadata has EXPIRED"));
    // Readiness and metrics say so too.
    let c = reqwest::Client::new();
    let r = c.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("federation metadata"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let m = c
            .get(format!("{}/metrics", s.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if m.contains("skolgrind_federation_metadata_trusted 0")
            && m.contains("skolgrind_federation_expired_refusals_total")
        {
            assert!(m.contains("skolgrind_federation_metadata_expires_in_seconds"));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "metadata metrics missing: {m}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn removing_a_pin_cuts_existing_and_resumed_connections() {
    let pki = Pki::new();
    let fed = federation();
    // cache_ttl 1: the server re-reads the file every second.
    pki.write_metadata(fed.entities.clone(), 1, 86400);
    let s = Server::start_with(&tenants(), &pki.toml("optional", ""));
    let addr = s.tls_addr.clone().unwrap();

    let cfg = Arc::new(pki.client_config(Some(&fed.a)));
    let mut kept = connect(&cfg, &addr).await.unwrap();
    assert!(!resumed(&kept));
    assert_eq!(raw_get(&mut kept, "/egil/Users").await.unwrap(), 200);
    // A second connection resumes the TLS session (the verifier is skipped).
    let mut again = connect(&cfg, &addr).await.unwrap();
    assert_eq!(raw_get(&mut again, "/egil/Users").await.unwrap(), 200);
    assert!(
        resumed(&again),
        "the client should resume its TLS 1.3 session"
    );

    // Publish metadata without A's pin.
    let without_a: Vec<Value> = fed.entities[1..].to_vec();
    pki.write_metadata(without_a, 1, 86400);

    // The kept-alive connection loses access once the refresh happened.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let st = raw_get(&mut kept, "/egil/Users").await.unwrap();
        if st == 401 {
            break;
        }
        assert_eq!(st, 200);
        assert!(
            std::time::Instant::now() < deadline,
            "pin removal not applied"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // A resumed session has no access either.
    let mut resumed_conn = connect(&cfg, &addr).await.unwrap();
    assert!(resumed(&resumed_conn));
    assert_eq!(
        raw_get(&mut resumed_conn, "/egil/Users").await.unwrap(),
        401
    );
    // And a full handshake is refused.
    let mut fresh = connect(&Arc::new(pki.client_config(Some(&fed.a))), &addr)
        .await
        .unwrap();
    assert!(!resumed(&fresh));
    assert!(raw_get(&mut fresh, "/egil/Users").await.is_err());
    // B is untouched.
    let cb = pki.reqwest(Some(&fed.b), &addr);
    assert_eq!(
        get_status(&cb, &tls_url(&addr, "/egil/Users")).await,
        Some(200)
    );
    let log = std::fs::read_to_string(s.log_path()).unwrap();
    assert!(log.contains("entity no longer has client pins"));
}

/// A tiny HTTPS server for trust documents (path → body), with the test server certificate.
async fn doc_server(
    pki: &Pki,
    docs: Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>,
) -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let chain: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(pki.path("server.pem"))
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(pki.path("server.key")).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let docs = docs.clone();
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                let body = docs.lock().unwrap().get(&path).cloned();
                let resp = match body {
                    Some(b) => format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
                        b.len()
                    ),
                    None => {
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_owned()
                    }
                };
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (format!("https://localhost:{port}"), task)
}

#[tokio::test]
async fn metadata_and_jwks_over_https_with_a_verified_disk_cache() {
    let pki = Pki::new();
    let fed = federation();
    std::fs::write(pki.path("server-ca.pem"), &pki.server_ca.cert.cert_pem).unwrap();
    let jwt_key = SigningKey::generate("jwt-1").unwrap();
    let docs = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let md = pki.sign(fed.entities.clone(), 3600, 86400, &pki.fed_key);
    docs.lock()
        .unwrap()
        .insert("/md.jws".to_owned(), md.clone());
    docs.lock()
        .unwrap()
        .insert("/jwks.json".to_owned(), devpki::jwks(&[&jwt_key]).unwrap());
    let (base, task) = doc_server(&pki, docs.clone()).await;

    let ca = pki.path("server-ca.pem").display().to_string();
    let file_line = format!("metadata = \"{}\"", pki.path("metadata.jws").display());
    let toml = pki
        .toml("optional", &format!("fetch_ca_file = \"{ca}\""))
        .replace(&file_line, &format!("metadata = \"{base}/md.jws\""));
    let toml = format!(
        "{toml}\n[[jwt_issuers]]\nissuer = \"https://issuer.example\"\naudience = [\"a\"]\n\
         jwks = \"{base}/jwks.json\"\nfetch_ca_file = \"{ca}\"\ncheck_location = false\n"
    );
    let tenants = tenants().replace(
        "moa_entity_ids = [\"https://a.example\"]",
        "moa_entity_ids = [\"https://a.example\"]\njwt_claim_values = [\"SE2120000001\"]",
    );
    let mut s = Server::start_with(&tenants, &toml);
    let addr = s.tls_addr.clone().unwrap();
    let users = tls_url(&addr, "/egil/Users");
    let ca_client = pki.reqwest(Some(&fed.a), &addr);
    let n = chrono::Utc::now().timestamp();
    let token = jwt_key
        .sign_jwt(
            &serde_json::json!({"iss": "https://issuer.example", "aud": "a",
            "iat": n, "nbf": n, "exp": n + 600, "organization_id": "SE2120000001"}),
        )
        .unwrap();
    let anon = pki.reqwest(None, &addr);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let moa = get_status(&ca_client, &users).await;
        let jwt = anon
            .get(&users)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if moa == Some(200) && jwt == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never loaded over https: {moa:?} {jwt}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // The signed document is cached on disk, readable by the owner only.
    // (It is written right after the verified document is installed, so allow a moment.)
    let cache = pki.path("cache.jws");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_to_string(&cache).ok().as_deref() != Some(md.as_str()) {
        assert!(
            std::time::Instant::now() < deadline,
            "metadata never cached"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&cache).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // The publisher goes away; a restart re-verifies the cached copy and trusts it.
    task.abort();
    let _ = task.await;
    s.restart_after_kill();
    let addr = s.tls_addr.clone().unwrap();
    let c = pki.reqwest(Some(&fed.a), &addr);
    assert_eq!(
        get_status(&c, &tls_url(&addr, "/egil/Users")).await,
        Some(200)
    );

    // A cache file that does not verify is not trusted.
    let mut v: Value = serde_json::from_str(&md).unwrap();
    v["payload"] = Value::String(v["payload"].as_str().unwrap().replace('A', "B"));
    std::fs::write(&cache, v.to_string()).unwrap();
    s.restart_after_kill();
    let addr = s.tls_addr.clone().unwrap();
    let c = pki.reqwest(Some(&fed.a), &addr);
    assert_eq!(get_status(&c, &tls_url(&addr, "/egil/Users")).await, None);
    let log = std::fs::read_to_string(s.log_path()).unwrap();
    assert!(log.contains("cached federation metadata re-verified"));
    assert!(log.contains("cached federation metadata not trusted"));
}
