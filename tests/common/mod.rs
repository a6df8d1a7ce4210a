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
/// The admin bearer token every test server accepts.
pub const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789abcdef";

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
    /// Base URL of the admin listener.
    pub admin: String,
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
    /// The admin listener takes a free port and accepts [`ADMIN_TOKEN`]; unless `extra`
    /// has its own `[rate_limits]`, quotas are high enough never to get in a test's way.
    pub fn start_with(tenants: &str, extra: &str) -> Server {
        Self::start_with_server(tenants, extra, "")
    }

    /// Starts the standard tenants with extra keys in the `[server]` table (e.g.
    /// `engine = "redb"`).
    pub fn start_with_server_keys(server: &str) -> Server {
        Self::start_with_server(&standard_tenants(), "", server)
    }

    fn start_with_server(tenants: &str, extra: &str, server: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("skolgrind.toml");
        let data = dir.path().join("data");
        let limits = if extra.contains("[rate_limits") {
            ""
        } else {
            "[rate_limits]\nwrites = { requests = 100000 }\nreads = { requests = 100000 }\nunauthenticated_per_ip = { requests = 100000 }\nproduct_lookups = { requests = 100000 }\n"
        };
        let admin = if extra.contains("[admin]") {
            String::new()
        } else {
            format!(
                "[admin]\nlisten = \"127.0.0.1:0\"\ntokens = [\"{}\"]\n",
                hash(ADMIN_TOKEN)
            )
        };
        std::fs::write(
            &config,
            format!(
                "version = 1\n{extra}\n{limits}{admin}[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{server}\n{tenants}",
                data.display()
            ),
        )
        .unwrap();
        let mut s = Server {
            child: None,
            base: String::new(),
            admin: String::new(),
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
        let a = read_addresses(&mut child);
        self.base = format!("http://{}", a.public);
        self.admin = format!("http://{}", a.admin);
        self.tls_addr = a.tls;
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

    /// Starts again (after [`Server::kill9`]) with the config file rewritten by `edit`.
    pub fn start_again_with(&mut self, edit: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        std::fs::write(&self.config, edit(text)).unwrap();
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
    read_addresses(child).public
}

/// What the server announced on stdout.
pub struct Addresses {
    /// The plain listener (`listening on ADDR`).
    pub public: String,
    /// The TLS listener (`listening tls on ADDR`), printed before the plain one.
    pub tls: Option<String>,
    /// The admin listener (`admin listening on ADDR`), printed last.
    pub admin: String,
}

/// Reads the child's stdout until the plain and the admin listener are announced.
pub fn read_addresses(child: &mut Child) -> Addresses {
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
                let _ = tx.send((false, a.to_owned(), tls.clone()));
            } else if let Some(a) = line.strip_prefix("admin listening on ") {
                let _ = tx.send((true, a.to_owned(), tls.clone()));
            }
        }
    });
    let (mut public, mut admin, mut tls) = (None, None, None);
    while public.is_none() || admin.is_none() {
        let (is_admin, a, t) = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server did not start");
        tls = tls.or(t);
        if is_admin {
            admin = Some(a);
        } else {
            public = Some(a);
        }
    }
    Addresses {
        public: public.unwrap(),
        tls,
        admin: admin.unwrap(),
    }
}

/// An admin API call with the test token (or another one).
pub async fn admin_call(
    c: &Client,
    s: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = c.request(method.parse().unwrap(), format!("{}{path}", s.admin));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    json(r.send().await.unwrap()).await
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
