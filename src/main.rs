//! The `skolgrind` command.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use skolgrind::config::{self, LogFormat, Runtime, DEMO_KEY_ENV};

/// mimalloc instead of the system allocator: the store decodes many small values per
/// request, and glibc malloc spent a third of a login storm in its own bookkeeping.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "skolgrind",
    version,
    about = "Receiving gateway for SS12000 school provisioning"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (without --config: embedded defaults with a demo tenant).
    Serve {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Validate a config file (with SKOLGRIND_* overrides) and say what is wrong.
    CheckConfig { file: PathBuf },
    /// Read an API key on stdin and print the value to put in the config.
    HashKey,
    /// Call the admin API: emergency brake, status, audit trail.
    Admin(skolgrind::ops::cli::AdminArgs),
    /// Print this server's own federation metadata entry (server pin, issuer, tag egilv1).
    Metadata {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Copy a stopped server's store into an empty directory with another engine (e.g.
    /// sled to redb); then point server.data_dir and server.engine at the copy.
    CopyStore {
        /// The store's data directory.
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
        #[arg(long, value_enum)]
        from_engine: EngineArg,
        /// An empty (or missing) directory for the copy.
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        #[arg(long, value_enum)]
        to_engine: EngineArg,
    },
    /// Write a development PKI: server and client certificates, federation JWKS and signed
    /// metadata, a JWT issuer JWKS and a sample token. Never for production.
    DevPki {
        dir: PathBuf,
        /// Host name of the server certificate.
        #[arg(long, default_value = "localhost")]
        host: String,
        /// The client's entity_id in the metadata.
        #[arg(long, default_value = "https://client.example")]
        entity_id: String,
        /// The client's organization_id (also the token's organization_id).
        #[arg(long, default_value = "SE2120000000")]
        organization_id: String,
    },
}

/// A storage engine as the command line names it.
#[derive(Clone, Copy, clap::ValueEnum)]
enum EngineArg {
    Sled,
    Redb,
}

use skolgrind::store::StoreEngine;

impl From<EngineArg> for StoreEngine {
    fn from(e: EngineArg) -> Self {
        match e {
            EngineArg::Sled => Self::Sled,
            EngineArg::Redb => Self::Redb,
        }
    }
}

fn init_logging(rt: &Runtime) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(rt.log.level.as_deref().unwrap_or("info")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match rt.log.format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

fn generate_key() -> String {
    use rand::Rng;
    let bytes: [u8; 24] = rand::rng().random();
    hex::encode(bytes)
}

fn own_metadata(path: &std::path::Path) -> Result<String, String> {
    let rt = config::load_file(path).map_err(|e| e.0.join("; "))?;
    let tls = rt.auth.tls.as_ref().ok_or("no [tls] section")?;
    let own = rt
        .auth
        .own_entity
        .as_ref()
        .ok_or("federation.entity_id is not set")?;
    let base = rt
        .public_base_url
        .as_ref()
        .ok_or("server.public_base_url is not set")?;
    let doc =
        skolgrind::auth::federation::server_entry(&tls.cert_chain, own, &format!("{base}/egil/"))?;
    serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Admin(args) => skolgrind::ops::cli::run(args),
        Command::HashKey => {
            let mut key = String::new();
            if let Err(e) = std::io::stdin().read_to_string(&mut key) {
                eprintln!("cannot read stdin: {e}");
                return ExitCode::FAILURE;
            }
            let key = key.trim_end_matches(['\r', '\n']);
            if key.is_empty() {
                eprintln!("no key on stdin");
                return ExitCode::FAILURE;
            }
            println!("{}", skolgrind::auth::api_key::hash_for_config(key));
            ExitCode::SUCCESS
        }
        Command::DevPki {
            dir,
            host,
            entity_id,
            organization_id,
        } => match skolgrind::auth::devpki::generate(&dir, &host, &entity_id, &organization_id) {
            Ok(summary) => {
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("dev-pki: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Metadata { config } => match own_metadata(&config) {
            Ok(doc) => {
                println!("{doc}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("metadata: {e}");
                ExitCode::FAILURE
            }
        },
        Command::CopyStore {
            from,
            from_engine,
            to,
            to_engine,
        } => {
            let (from_engine, to_engine) = (StoreEngine::from(from_engine), to_engine.into());
            match skolgrind::store::copy_store(from_engine, &from, to_engine, &to) {
                Ok(keys) => {
                    println!(
                        "copied {keys} keys from the {} store in {} to a {} store in {}",
                        from_engine.as_str(),
                        from.display(),
                        to_engine.as_str(),
                        to.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("copy-store: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig { file } => match config::load_file(&file) {
            Ok(rt) if !skolgrind::auth::config::check_offline(&rt.auth).is_empty() => {
                eprintln!("{}: invalid configuration", file.display());
                for line in skolgrind::auth::config::check_offline(&rt.auth) {
                    eprintln!("  {line}");
                }
                ExitCode::FAILURE
            }
            Ok(rt) => {
                println!(
                    "{}: OK ({} tenants, {} API keys, listen {})",
                    file.display(),
                    rt.tenants.len(),
                    rt.api_keys.len(),
                    rt.listen
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: invalid configuration", file.display());
                for line in e.0 {
                    eprintln!("  {line}");
                }
                ExitCode::FAILURE
            }
        },
        Command::Serve { config } => {
            let loaded = match &config {
                Some(path) => config::load_file(path),
                None => {
                    let (key, generated) = match std::env::var(DEMO_KEY_ENV) {
                        Ok(k) if !k.is_empty() => (k, false),
                        _ => (generate_key(), true),
                    };
                    let rt = config::load_defaults(&key);
                    if rt.is_ok() {
                        if generated {
                            println!("demo tenant 'demo': generated API key {key} (set {DEMO_KEY_ENV} to choose one)");
                        } else {
                            println!("demo tenant 'demo': API key from {DEMO_KEY_ENV}");
                        }
                    }
                    rt
                }
            };
            let rt = match loaded {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("invalid configuration:");
                    for line in e.0 {
                        eprintln!("  {line}");
                    }
                    return ExitCode::from(2);
                }
            };
            init_logging(&rt);
            let result = actix_web::rt::System::new().block_on(skolgrind::app::serve(rt));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "server failed");
                    eprintln!("skolgrind: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
