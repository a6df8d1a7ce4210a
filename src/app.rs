//! Assembly: from a validated [`Runtime`] config to a running server.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::middleware::{from_fn, NormalizePath, TrailingSlash};
use actix_web::{App, HttpServer};

use crate::auth::api_key::ApiKeys;
use crate::auth::Authenticator;
use crate::config::Runtime;
use crate::domain::jobs::Jobs;
use crate::domain::{Controls, Provisioning};
use crate::http::{access_log, configure, AppState};
use crate::protocol::egil::EgilAdapter;
use crate::protocol::ss12000::{self, Ss12000Adapter};
use crate::store::sled_kv::SledStore;
use crate::store::Store;

/// Opens the store and builds the shared state.
pub fn build_state(rt: &Runtime) -> Result<Arc<AppState>, String> {
    std::fs::create_dir_all(&rt.data_dir)
        .map_err(|e| format!("server.data_dir {}: {e}", rt.data_dir.display()))?;
    let store = SledStore::open_dir(&rt.data_dir).map_err(|e| {
        format!(
            "server.data_dir {}: cannot open the store: {e}",
            rt.data_dir.display()
        )
    })?;
    let store: Arc<dyn Store> = Arc::new(store);
    state_with_store(rt, store)
}

/// Builds the shared state around a given store (tests and benchmarks use this too).
pub fn state_with_store(rt: &Runtime, store: Arc<dyn Store>) -> Result<Arc<AppState>, String> {
    let auth = Authenticator::new(
        rt.tenants.clone(),
        vec![Box::new(ApiKeys::new(rt.api_keys.clone()))],
    );
    let tenant_ids: Vec<_> = rt.tenants.iter().map(|t| t.id.clone()).collect();
    let controls = Controls::load(store.clone(), &tenant_ids)
        .map_err(|e| format!("loading operator controls: {e}"))?;
    let controls = Arc::new(controls);
    let ss12000 = ss12000_adapter(rt, &store, &controls)?;
    Ok(Arc::new(AppState {
        provisioning: Provisioning::new(store, controls),
        auth,
        egil: EgilAdapter::new()?,
        ss12000,
        max_body_bytes: rt.max_body_bytes,
        public_base_url: rt.public_base_url.clone(),
    }))
}

/// The SS12000:2020 push adapter, with its job runner started (resuming queued jobs).
fn ss12000_adapter(
    rt: &Runtime,
    store: &Arc<dyn Store>,
    controls: &Arc<Controls>,
) -> Result<Ss12000Adapter, String> {
    const KEY: &str = "ss12000/page_token_key";
    let secret = match store.get_setting(KEY).map_err(|e| e.to_string())? {
        Some(s) => s,
        None => {
            use rand::Rng;
            let s: [u8; 32] = rand::rng().random();
            store
                .put_setting(KEY, s.to_vec())
                .map_err(|e| e.to_string())?;
            store.flush().map_err(|e| e.to_string())?;
            s.to_vec()
        }
    };
    let schemas = Arc::new(ss12000::schema::Schemas::compile()?);
    let retention = chrono::Duration::hours(i64::from(rt.ss12000.job_retention_hours));
    let queue = ss12000::runner::start(ss12000::runner::Runner {
        provisioning: Provisioning::new(store.clone(), controls.clone()),
        jobs: Jobs::new(store.clone()),
        schemas: schemas.clone(),
        tenants: rt
            .tenants
            .iter()
            .map(|t| (t.id.clone(), t.clone()))
            .collect(),
        concurrency: rt.ss12000.job_concurrency,
        retention,
    })?;
    Ok(Ss12000Adapter {
        schemas,
        tokens: ss12000::paging::PageTokens::new(&secret),
        jobs: Jobs::new(store.clone()),
        queue,
        limits: ss12000::Limits {
            max_body_bytes: rt.ss12000.max_body_bytes,
            max_items: rt.ss12000.max_items,
        },
    })
}

/// Binds the public listener (HTTP/1.1 with keep-alive, and h2c with prior knowledge).
pub fn bind(
    rt: &Runtime,
    state: Arc<AppState>,
) -> std::io::Result<(actix_web::dev::Server, SocketAddr)> {
    let listener = TcpListener::bind(rt.listen)?;
    let addr = listener.local_addr()?;
    let mut server = HttpServer::new(move || {
        App::new()
            .wrap(NormalizePath::new(TrailingSlash::MergeOnly))
            .wrap(from_fn(access_log::middleware))
            .configure(configure(state.clone()))
    })
    .shutdown_timeout(10);
    if let Some(w) = rt.workers {
        server = server.workers(w);
    }
    Ok((server.listen_auto_h2c(listener)?.run(), addr))
}

/// Runs the server until SIGINT/SIGTERM. Prints `listening on ADDR` on stdout once bound.
pub async fn serve(rt: Runtime) -> Result<(), String> {
    let state = build_state(&rt)?;
    let (server, addr) =
        bind(&rt, state.clone()).map_err(|e| format!("server.listen {}: {e}", rt.listen))?;
    tracing::info!(%addr, tenants = rt.tenants.len(), "skolgrind started");
    println!("listening on {addr}");
    server.await.map_err(|e| e.to_string())?;
    state
        .provisioning
        .store()
        .flush()
        .map_err(|e| e.to_string())?;
    tracing::info!("skolgrind stopped");
    Ok(())
}
