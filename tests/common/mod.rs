//! Test harness: starts the real `skolgrind` binary on an ephemeral port and talks HTTP to
//! it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub mod tls;

use reqwest::{Client, Response};
use serde_json::Value;

pub const KEY_A: &str = "key-for-kommunen-aaaaaaaaaaaaaaaa";
pub const KEY_B: &str = "key-for-grannkommun-bbbbbbbbbbbbbb";
pub const KEY_STRICT: &str = "key-for-strict-ssssssssssssssssss";

pub fn hash(key: &str) -> String {
    skolgrind::auth::api_key::hash_for_config(key)
}

/// Two ordinary tenants plus one with strict civic-number checks and EPPN scopes.
pub fn standard_tenants() -> String {
    format!(
        r#"
[[tenants]]
id = "kommunen"
name = "Kommunen"
api_keys = ["{}"]

[[tenants]]
id = "grannkommun"
name = "Grannkommunen"
api_keys = ["{}"]

[[tenants]]
id = "strikt"
name = "Strikta kommunen"
api_keys = ["{}"]
eppn_scopes = ["strikt.example"]
civic_no_check = "strict"
"#,
        hash(KEY_A),
        hash(KEY_B),
        hash(KEY_STRICT)
    )
}

pub struct Server {
    child: Option<Child>,
    pub base: String,
    /// `host:port` of the TLS listener, if one is configured.
    pub tls_addr: Option<String>,
    pub dir: tempfile::TempDir,
    config: PathBuf,
}

impl Server {
    pub fn start() -> Server {
        Self::start_with(&standard_tenants(), "")
    }

    /// Starts with the given `[[tenants]]` blocks and extra top-level TOML (before them).
    pub fn start_with(tenants: &str, extra: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("skolgrind.toml");
        let data = dir.path().join("data");
        std::fs::write(
            &config,
            format!(
                "version = 1\n{extra}\n[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{tenants}",
                data.display()
            ),
        )
        .unwrap();
        let mut s = Server {
            child: None,
            base: String::new(),
            tls_addr: None,
            dir,
            config,
        };
        s.spawn();
        s
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_skolgrind"))
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let (addr, tls) = read_listening_with_tls(&mut child);
        self.base = format!("http://{addr}");
        self.tls_addr = tls;
        self.child = Some(child);
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// Kill -9 and start again on the same data directory.
    pub fn restart_after_kill(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Reads the child's stdout until `listening on ADDR`.
pub fn read_listening(child: &mut Child) -> String {
    read_listening_with_tls(child).0
}

/// Reads the child's stdout until `listening on ADDR`; the TLS listener's
/// `listening tls on ADDR` line, if any, comes before it.
pub fn read_listening_with_tls(child: &mut Child) -> (String, Option<String>) {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tls = None;
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if let Some(a) = line.strip_prefix("listening tls on ") {
                tls = Some(a.to_owned());
            }
            if let Some(a) = line.strip_prefix("listening on ") {
                let _ = tx.send((a.to_owned(), tls.clone()));
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("server did not start")
}

pub fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub const SCIM: &str = "application/scim+json";

pub async fn send(
    c: &Client,
    method: &str,
    url: &str,
    key: Option<&str>,
    ct: Option<&str>,
    body: Vec<u8>,
) -> Response {
    let mut r = c
        .request(method.parse().unwrap(), url)
        .header("Accept", SCIM)
        .header("User-Agent", "EgilSCIM/2.23.0 (test)");
    if let Some(k) = key {
        r = r.header("X-API-Key", k);
    }
    if let Some(ct) = ct {
        r = r.header("Content-Type", ct);
    }
    r.body(body).send().await.unwrap()
}

pub async fn json(r: Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let v = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, v)
}

pub fn fixtures_dir() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.join("../shared/fixtures/egil-wire")
}

/// The EGIL wire fixtures in send order: (method, path, content type, body bytes).
pub fn fixtures() -> Vec<(String, String, String, Vec<u8>)> {
    let dir = fixtures_dir();
    let tsv = std::fs::read_to_string(dir.join("requests.tsv"))
        .expect("shared/fixtures/egil-wire is next to the project");
    tsv.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (
                f[1].to_owned(),
                f[2].to_owned(),
                f[3].to_owned(),
                std::fs::read(dir.join(f[4])).unwrap(),
            )
        })
        .collect()
}

/// Pushes every fixture as the EGIL client does; returns the statuses.
pub async fn push_fixtures(s: &Server, c: &Client, key: &str) -> Vec<u16> {
    let mut out = Vec::new();
    for (m, p, ct, body) in fixtures() {
        let r = send(
            c,
            &m,
            &s.url(&format!("/egil{p}")),
            Some(key),
            Some(&ct),
            body,
        )
        .await;
        out.push(r.status().as_u16());
    }
    out
}
