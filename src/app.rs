//! Assembly: from a validated [`Runtime`] config to a running server.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::middleware::{from_fn, NormalizePath, TrailingSlash};
use actix_web::{App, HttpServer};

use crate::auth::api_key::ApiKeys;
use crate::auth::Authenticator;
use crate::config::Runtime;
use crate::domain::{Controls, LoginService, Provisioning};
use crate::http::{access_log, configure, AppState};
use crate::protocol::egil::EgilAdapter;
use crate::store::sled_kv::SledStore;
use crate::store::Store;

/// Opens the store and builds the shared state.
pub fn build_state(rt: &Runtime) -> Result<Arc<AppState>, String> {
    std::fs::create_dir_all(&rt.data_dir)
        .map_err(|e| format!("server.data_dir {}: {e}", rt.data_dir.display()))?;
    let store = SledStore::open_dir_with_cache(&rt.data_dir, rt.cache_bytes).map_err(|e| {
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
    )
    .with_products(rt.products.clone());
    let tenant_ids: Vec<_> = rt.tenants.iter().map(|t| t.id.clone()).collect();
    let controls = Controls::load(store.clone(), &tenant_ids)
        .map_err(|e| format!("loading operator controls: {e}"))?;
    let controls = Arc::new(controls);
    let bindings: std::collections::HashMap<_, _> = rt.login_bindings.iter().cloned().collect();
    let login = LoginService::new(
        store.clone(),
        controls.clone(),
        rt.tenants
            .iter()
            .map(|t| (t.clone(), bindings.get(&t.id).cloned().unwrap_or_default()))
            .collect(),
        rt.shared_scopes.clone(),
    );
    Ok(Arc::new(AppState {
        login,
        provisioning: Provisioning::new(store, controls),
        auth,
        egil: EgilAdapter::new()?,
        max_body_bytes: rt.max_body_bytes,
        public_base_url: rt.public_base_url.clone(),
    }))
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
