//! `skolgrind admin …`: a small client of the admin API. The token comes from
//! `SKOLGRIND_ADMIN_TOKEN` or `--token-file`; the URL from `--url`, else from the config's
//! `admin.listen` (`--config`), else `http://127.0.0.1:8081`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

/// Environment variable holding the admin bearer token for the CLI.
pub const TOKEN_ENV: &str = "SKOLGRIND_ADMIN_TOKEN";

#[derive(Args, Debug)]
pub struct AdminArgs {
    /// Base URL of the admin listener, e.g. http://127.0.0.1:8081.
    #[arg(long, global = true)]
    url: Option<String>,
    /// Take the admin listener's address from this config file.
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Read the admin token from this file (default: $SKOLGRIND_ADMIN_TOKEN).
    #[arg(long, value_name = "FILE", global = true)]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Show operator controls of every tenant and the global read-only switch.
    Status,
    /// Refuse a tenant's provisioning writes (503 + Retry-After with the reason).
    SuspendWrites {
        tenant: String,
        #[arg(long)]
        reason: String,
    },
    /// Accept a tenant's writes again.
    ResumeWrites { tenant: String },
    /// Freeze a tenant's logins in the login API.
    FreezeLogins {
        tenant: String,
        #[arg(long)]
        reason: String,
    },
    /// Unfreeze a tenant's logins.
    UnfreezeLogins { tenant: String },
    /// Refuse every provisioning write of every tenant.
    ReadOnlyOn {
        #[arg(long)]
        reason: String,
    },
    /// Leave global read-only mode.
    ReadOnlyOff,
    /// List a tenant's audit trail (one page; follow `next_cursor` with --after).
    Audit {
        tenant: String,
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long)]
        limit: Option<usize>,
        /// RFC 3339 time, e.g. 2026-11-01T00:00:00Z.
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
    },
}

fn base_url(a: &AdminArgs) -> Result<String, String> {
    if let Some(u) = &a.url {
        return Ok(u.trim_end_matches('/').to_owned());
    }
    let Some(path) = &a.config else {
        return Ok("http://127.0.0.1:8081".into());
    };
    let rt = crate::config::load_file(path).map_err(|e| e.to_string())?;
    let mut addr = rt.ops.admin_listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    Ok(format!("http://{addr}"))
}

fn token(a: &AdminArgs) -> Result<String, String> {
    let t = match &a.token_file {
        Some(f) => std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?,
        None => std::env::var(TOKEN_ENV)
            .map_err(|_| format!("no admin token: set {TOKEN_ENV} or use --token-file"))?,
    };
    let t = t.trim().to_owned();
    if t.is_empty() {
        return Err("the admin token is empty".into());
    }
    Ok(t)
}

fn seg(s: &str) -> String {
    // Tenant ids are [a-z0-9-]; anything else cannot name a tenant and is sent escaped.
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Runs an admin subcommand; prints the answer's JSON.
pub fn run(a: AdminArgs) -> ExitCode {
    match run_inner(&a) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("skolgrind admin: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_inner(a: &AdminArgs) -> Result<ExitCode, String> {
    let base = base_url(a)?;
    let token = token(a)?;
    let (method, path, body): (&str, String, Option<Value>) = match &a.command {
        AdminCommand::Status => ("GET", "/admin/v1/status".into(), None),
        AdminCommand::SuspendWrites { tenant, reason } => (
            "POST",
            format!("/admin/v1/tenants/{}/writes/suspend", seg(tenant)),
            Some(json!({ "reason": reason })),
        ),
        AdminCommand::ResumeWrites { tenant } => (
            "POST",
            format!("/admin/v1/tenants/{}/writes/resume", seg(tenant)),
            None,
        ),
        AdminCommand::FreezeLogins { tenant, reason } => (
            "POST",
            format!("/admin/v1/tenants/{}/logins/freeze", seg(tenant)),
            Some(json!({ "reason": reason })),
        ),
        AdminCommand::UnfreezeLogins { tenant } => (
            "POST",
            format!("/admin/v1/tenants/{}/logins/unfreeze", seg(tenant)),
            None,
        ),
        AdminCommand::ReadOnlyOn { reason } => (
            "POST",
            "/admin/v1/read-only".into(),
            Some(json!({ "reason": reason })),
        ),
        AdminCommand::ReadOnlyOff => ("DELETE", "/admin/v1/read-only".into(), None),
        AdminCommand::Audit {
            tenant,
            after,
            limit,
            since,
            until,
        } => {
            let mut q = vec![format!("after={after}")];
            if let Some(l) = limit {
                q.push(format!("limit={l}"));
            }
            for (k, v) in [("since", since), ("until", until)] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", v.replace('+', "%2B").replace(':', "%3A")));
                }
            }
            (
                "GET",
                format!("/admin/v1/tenants/{}/audit?{}", seg(tenant), q.join("&")),
                None,
            )
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (status, text) = rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?;
        let method: reqwest::Method = method.parse().map_err(|_| "method".to_owned())?;
        let mut r = client
            .request(method, format!("{base}{path}"))
            .bearer_auth(&token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let res = r.send().await.map_err(|e| format!("{base}: {e}"))?;
        let status = res.status();
        let text = res.text().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((status, text))
    })?;
    let pretty = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or(text);
    if status.is_success() {
        println!("{pretty}");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{status}: {pretty}");
        Ok(ExitCode::FAILURE)
    }
}
