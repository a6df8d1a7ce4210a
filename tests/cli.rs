//! The command line: `hash-key`, `check-config`, and `serve` with embedded defaults.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_skolgrind"))
}

#[test]
fn hash_key_prints_the_config_value() {
    let mut child = bin()
        .arg("hash-key")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"my-secret-key\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        hash("my-secret-key")
    );
    let out = bin().arg("hash-key").stdin(Stdio::null()).output().unwrap();
    assert!(!out.status.success(), "an empty key is refused");
}

#[test]
fn check_config_says_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        format!(
            "version = 1\n[server]\nlisten = \"127.0.0.1:8080\"\ndata_dir = \"/tmp/x\"\n{}",
            standard_tenants()
        ),
    )
    .unwrap();
    let out = bin().arg("check-config").arg(&good).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .contains("OK (3 tenants"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "version = 1\n[server]\nlisten = \"nowhere\"\ndata_dir = \"/tmp/x\"\n[[tenants]]\nid = \"Bad Id\"\nname = \"x\"\napi_keys = [\"plaintext-key\"]\n",
    )
    .unwrap();
    let out = bin().arg("check-config").arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    for expected in [
        "server.listen: expected IP:port",
        "tenants[0].id: a tenant id is",
        "tenants[0].api_keys[0]: expected \"sha256:\"",
    ] {
        assert!(err.contains(expected), "{expected:?} not in {err}");
    }
    // Environment overrides are applied and validated too.
    let out = bin()
        .arg("check-config")
        .arg(&good)
        .env("SKOLGRIND_SERVER__LISTEN", "bad")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("server.listen"));
    let out = bin()
        .arg("check-config")
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[tokio::test]
async fn serve_with_embedded_defaults_prints_a_demo_key_that_works() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = bin()
        .arg("serve")
        .current_dir(dir.path())
        .env("SKOLGRIND_SERVER__LISTEN", "127.0.0.1:0")
        .env("SKOLGRIND_ADMIN__LISTEN", "127.0.0.1:0")
        .env_remove("SKOLGRIND_DEMO_API_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The first stdout line announces the generated key, the second the address.
    let out = child.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(out));
    let key_line = lines.next().unwrap().unwrap();
    let key = key_line
        .split("generated API key ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let addr = lines
        .next()
        .unwrap()
        .unwrap()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    let c = client();
    let body = std::fs::read(fixtures_dir().join("01-POST-Organisation.body")).unwrap();
    let r = send(
        &c,
        "POST",
        &format!("http://{addr}/egil/Organisations"),
        Some(&key),
        Some(SCIM),
        body,
    )
    .await;
    assert_eq!(r.status(), 201);
    assert!(
        dir.path().join("skolgrind-data").is_dir(),
        "data in ./skolgrind-data"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The shipped example config and the Kubernetes ConfigMap's config both validate.
#[test]
fn deploy_configs_validate() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = root.join("deploy/skolgrind.example.toml");
    let out = bin()
        .arg("check-config")
        .arg(&example)
        .env_remove("SKOLGRIND_ADMIN__TOKENS")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = std::fs::read_to_string(root.join("deploy/kubernetes/skolgrind.yaml")).unwrap();
    let start = yaml.find("skolgrind.toml: |\n").unwrap() + "skolgrind.toml: |\n".len();
    let block: String = yaml[start..]
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("k8s.toml");
    std::fs::write(&file, block).unwrap();
    // The Secret provides the admin tokens through the environment.
    let out = bin()
        .arg("check-config")
        .arg(&file)
        .env(
            "SKOLGRIND_ADMIN__TOKENS",
            format!("[\"{}\"]", hash("admin-token")),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
