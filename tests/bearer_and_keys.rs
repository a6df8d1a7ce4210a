//! JWT bearer tokens and API keys against the real binary over TLS: a huvudman configured
//! only with a token issuer pushes the EGIL fixtures; every malformed, misdirected or
//! forged token is refused with the right status; API key rotation and expiry.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::Engine;
use common::tls::*;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use skolgrind::auth::devpki::{self, SigningKey};

const ISS: &str = "https://issuer.test.invalid";
const AUD: &str = "skolgrind-test";
const LOCATION: &str = "https://egil.example.se/egil";
const ORG_A: &str = "SE2120000001";
const ORG_B: &str = "SE2120000002";
const OLD_KEY: &str = "old-key-expired-xxxxxxxxxxxxxxxxxxx";
const NEXT_KEY: &str = "next-key-with-expiry-yyyyyyyyyyyyyy";

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn claims(org: &str) -> Value {
    let n = now();
    json!({
        "iss": ISS, "aud": AUD, "iat": n, "nbf": n, "exp": n + 600,
        "organization_id": org,
        "entity_id": "https://nutid-client.example",
        "requested_access": [
            {"type": "other-api", "locations": ["https://elsewhere.example/"]},
            {"type": "ss12000-api", "locations": [LOCATION]}
        ]
    })
}

fn with(mut c: Value, key: &str, v: Value) -> Value {
    c[key] = v;
    c
}

fn without(mut c: Value, key: &str) -> Value {
    c.as_object_mut().unwrap().remove(key);
    c
}

struct Setup {
    pki: Pki,
    k1: SigningKey,
    s: Server,
    addr: String,
}

fn setup() -> Setup {
    let pki = Pki::new();
    let k1 = SigningKey::generate("jwt-1").unwrap();
    std::fs::write(pki.path("jwt-jwks.json"), devpki::jwks(&[&k1]).unwrap()).unwrap();
    let extra = format!(
        r#"{}
[[jwt_issuers]]
issuer = "{ISS}"
audience = ["{AUD}"]
algorithms = ["ES256", "RS256"]
jwks = "{}"
location = "{LOCATION}"
jwks_min_refresh_secs = 0
"#,
        pki.tls_only_toml(),
        pki.path("jwt-jwks.json").display()
    );
    let tenants = format!(
        r#"
[[tenants]]
id = "kommunen"
name = "Kommunen"
api_keys = [{{ hash = "{}", expires = "2020-01-31", label = "old" }},
            "{}",
            {{ hash = "{}", expires = "2999-12-31", label = "next" }}]
[tenants.auth]
jwt_claim_values = ["{ORG_A}"]

[[tenants]]
id = "grannkommun"
name = "Grannkommunen"
[tenants.auth]
jwt_claim_values = ["{ORG_B}"]
"#,
        hash(OLD_KEY),
        hash(KEY_A),
        hash(NEXT_KEY)
    );
    let s = Server::start_with(&tenants, &extra);
    let addr = s.tls_addr.clone().unwrap();
    Setup { pki, k1, s, addr }
}

async fn get(c: &reqwest::Client, url: &str, token: &str) -> (u16, Option<String>, Value) {
    let r = c
        .get(url)
        .header("Accept", SCIM)
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    let www = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let (st, body) = json(r).await;
    (st, www, body)
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test]
async fn bearer_tokens_are_checked_strictly() {
    let Setup { pki, k1, s, addr } = setup();
    let c = pki.reqwest(None, &addr);
    let users = tls_url(&addr, "/egil/Users");

    // A huvudman configured only with a token issuer pushes the whole EGIL run.
    let token = k1.sign_jwt(&claims(ORG_A)).unwrap();
    for (m, p, ct, body) in fixtures() {
        let r = c
            .request(m.parse().unwrap(), tls_url(&addr, &format!("/egil{p}")))
            .header("Content-Type", ct)
            .header("Accept", SCIM)
            .header("Authorization", format!("Bearer {token}"))
            .body(body)
            .send()
            .await
            .unwrap();
        if r.status() != 201 {
            eprintln!("{}", std::fs::read_to_string(s.log_path()).unwrap());
        }
        assert_eq!(r.status(), 201, "{m} {p}");
    }
    let (st, _, body) = get(&c, &users, &token).await;
    assert_eq!(st, 200);
    assert!(body["totalResults"].as_u64().unwrap() > 0);
    // Another organisation's token sees only its own (empty) tenant.
    let (st, _, body) = get(&c, &users, &k1.sign_jwt(&claims(ORG_B)).unwrap()).await;
    assert_eq!((st, body["totalResults"].as_u64()), (200, Some(0)));
    // Tokens work on the plain listener too (behind a TLS-terminating proxy).
    let (st, _, _) = get(&client(), &s.url("/egil/Users"), &token).await;
    assert_eq!(st, 200);

    let n = now();
    let hs256_with_public_key = {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("jwt-1".into());
        jsonwebtoken::encode(
            &h,
            &claims(ORG_A),
            &EncodingKey::from_secret(k1.public_pem.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "kid": "jwt-1", "typ": "JWT"})),
        b64(&claims(ORG_A))
    );
    let stranger = SigningKey::generate("jwt-1").unwrap();
    let unauthorized = [
        (
            "expired",
            k1.sign_jwt(&with(claims(ORG_A), "exp", json!(n - 120)))
                .unwrap(),
        ),
        (
            "not yet valid",
            k1.sign_jwt(&with(claims(ORG_A), "nbf", json!(n + 600)))
                .unwrap(),
        ),
        (
            "issued in the future",
            k1.sign_jwt(&with(claims(ORG_A), "iat", json!(n + 600)))
                .unwrap(),
        ),
        (
            "no nbf",
            k1.sign_jwt(&without(claims(ORG_A), "nbf")).unwrap(),
        ),
        (
            "no iat",
            k1.sign_jwt(&without(claims(ORG_A), "iat")).unwrap(),
        ),
        (
            "no aud",
            k1.sign_jwt(&without(claims(ORG_A), "aud")).unwrap(),
        ),
        (
            "wrong iss",
            k1.sign_jwt(&with(claims(ORG_A), "iss", json!("https://evil.example")))
                .unwrap(),
        ),
        (
            "wrong aud",
            k1.sign_jwt(&with(claims(ORG_A), "aud", json!("nutid")))
                .unwrap(),
        ),
        ("alg none", alg_none),
        ("HS256 signed with the public key", hs256_with_public_key),
        (
            "same kid, another key",
            stranger.sign_jwt(&claims(ORG_A)).unwrap(),
        ),
        ("garbage", "garbage.token.here".into()),
        ("not even three parts", "Zm9v".into()),
    ];
    for (name, t) in unauthorized {
        let (st, www, body) = get(&c, &users, &t).await;
        assert_eq!(st, 401, "{name}");
        assert_eq!(
            www.as_deref(),
            Some("Bearer realm=\"skolgrind\", error=\"invalid_token\""),
            "{name}"
        );
        // One answer for every failure: nothing tells whether a tenant exists.
        assert_eq!(body["detail"], "missing or unknown credentials", "{name}");
        assert_eq!(body["status"], "401", "{name}");
    }

    let access = |locs: &[&str]| json!([{"type": "ss12000-api", "locations": locs}]);
    let forbidden = [
        (
            "wrong organisation",
            k1.sign_jwt(&claims("SE2120000099")).unwrap(),
        ),
        (
            "no organisation",
            k1.sign_jwt(&without(claims(ORG_A), "organization_id"))
                .unwrap(),
        ),
        (
            "location on another host with our host as prefix",
            k1.sign_jwt(&with(
                claims(ORG_A),
                "requested_access",
                access(&["https://egil.example.se.evil/egil"]),
            ))
            .unwrap(),
        ),
        (
            "location with our URL inside its path",
            k1.sign_jwt(&with(
                claims(ORG_A),
                "requested_access",
                access(&["https://host.evil/https://egil.example.se/egil"]),
            ))
            .unwrap(),
        ),
        (
            "location on another path",
            k1.sign_jwt(&with(
                claims(ORG_A),
                "requested_access",
                access(&["https://egil.example.se/egil2"]),
            ))
            .unwrap(),
        ),
        (
            "location over http",
            k1.sign_jwt(&with(
                claims(ORG_A),
                "requested_access",
                access(&["http://egil.example.se/egil"]),
            ))
            .unwrap(),
        ),
        (
            "right location, wrong type",
            k1.sign_jwt(&with(
                claims(ORG_A),
                "requested_access",
                json!([{"type": "other-api", "locations": [LOCATION]}]),
            ))
            .unwrap(),
        ),
        (
            "no requested_access",
            k1.sign_jwt(&without(claims(ORG_A), "requested_access"))
                .unwrap(),
        ),
    ];
    for (name, t) in forbidden {
        let (st, www, body) = get(&c, &users, &t).await;
        assert_eq!(st, 403, "{name}");
        assert_eq!(www, None, "{name}");
        assert_eq!(body["status"], "403", "{name}");
    }
}

#[tokio::test]
async fn unknown_kid_then_key_rotation() {
    let Setup {
        pki,
        k1,
        s: _s,
        addr,
    } = setup();
    let c = pki.reqwest(None, &addr);
    let users = tls_url(&addr, "/egil/Users");
    let k2 = SigningKey::generate("jwt-2").unwrap();
    let t2 = k2.sign_jwt(&claims(ORG_A)).unwrap();
    // Not published yet: refused.
    assert_eq!(get(&c, &users, &t2).await.0, 401);
    // The issuer publishes the new key next to the old one.
    std::fs::write(
        pki.path("jwt-jwks.json"),
        devpki::jwks(&[&k1, &k2]).unwrap(),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let st = get(&c, &users, &t2).await.0;
        if st == 200 {
            break;
        }
        assert_eq!(st, 401);
        assert!(std::time::Instant::now() < deadline, "JWKS never refreshed");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The old key keeps working during the rotation.
    assert_eq!(
        get(&c, &users, &k1.sign_jwt(&claims(ORG_A)).unwrap())
            .await
            .0,
        200
    );
    // Once the old key is withdrawn, its tokens stop working.
    std::fs::write(pki.path("jwt-jwks.json"), devpki::jwks(&[&k2]).unwrap()).unwrap();
    let t1 = k1.sign_jwt(&claims(ORG_A)).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    // k1 is still cached until a refresh: trigger one with an unknown kid.
    let k3 = SigningKey::generate("jwt-3")
        .unwrap()
        .sign_jwt(&claims(ORG_A))
        .unwrap();
    loop {
        assert_eq!(get(&c, &users, &k3).await.0, 401);
        if get(&c, &users, &t1).await.0 == 401 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "old key never withdrawn"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn api_keys_rotate_and_expire() {
    let Setup { pki, s, addr, .. } = setup();
    let tls = pki.reqwest(None, &addr);
    for (base, c) in [
        (s.url("/egil/Users"), client()),
        (tls_url(&addr, "/egil/Users"), tls),
    ] {
        for (key, want) in [
            (KEY_A, 200),
            (NEXT_KEY, 200),
            (OLD_KEY, 401),
            ("unknown", 401),
        ] {
            let r = send(&c, "GET", &base, Some(key), None, vec![]).await;
            assert_eq!(r.status().as_u16(), want, "{key} on {base}");
        }
    }
    let log = std::fs::read_to_string(s.log_path()).unwrap();
    assert!(log.contains("expired API key presented"));
}

#[tokio::test]
async fn tls_offers_h2_and_http11_on_tls12_and_tls13() {
    let Setup {
        pki,
        k1,
        addr,
        s: _s,
    } = setup();
    let token = k1.sign_jwt(&claims(ORG_A)).unwrap();
    let users = tls_url(&addr, "/egil/Users");
    let versions: [&[&tokio_rustls::rustls::SupportedProtocolVersion]; 2] = [
        &[&tokio_rustls::rustls::version::TLS12],
        &[&tokio_rustls::rustls::version::TLS13],
    ];
    for tls_versions in versions {
        for (alpn, want) in [
            (
                vec![b"h2".to_vec(), b"http/1.1".to_vec()],
                reqwest::Version::HTTP_2,
            ),
            (vec![b"http/1.1".to_vec()], reqwest::Version::HTTP_11),
        ] {
            let mut roots = tokio_rustls::rustls::RootCertStore::empty();
            roots
                .add(tokio_rustls::rustls::pki_types::CertificateDer::from(
                    pki.server_ca.cert.der.clone(),
                ))
                .unwrap();
            let mut cfg = tokio_rustls::rustls::ClientConfig::builder_with_provider(
                std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider()),
            )
            .with_protocol_versions(tls_versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
            cfg.alpn_protocols = alpn;
            let c = reqwest::Client::builder()
                .use_preconfigured_tls(cfg)
                .resolve("localhost", addr.parse().unwrap())
                .build()
                .unwrap();
            let r = c
                .get(&users)
                .header("Authorization", format!("Bearer {token}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.version(), want);
        }
    }
}
