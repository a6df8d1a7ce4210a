//! Assembly: from a validated [`Runtime`] config to a running server.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::middleware::{from_fn, NormalizePath, TrailingSlash};
use actix_web::{App, HttpServer};

use crate::auth::api_key::ApiKeys;
use crate::auth::{Authenticator, Mechanism, Trust};
use crate::config::Runtime;
use crate::domain::jobs::Jobs;
use crate::domain::{Controls, LoginService, Provisioning};
use crate::http::{access_log, admin, configure, guard, tls, AppState};
use crate::protocol::egil::EgilAdapter;
use crate::protocol::ss12000::{self, Ss12000Adapter};
use crate::store::Store;

/// Keeps the per-tenant object gauges current from every protocol's writes.
fn object_gauges() -> crate::domain::service::CountHook {
    Arc::new(|tenant, kind, delta| crate::ops::metrics::objects_changed(tenant, kind, delta as f64))
}

/// Opens the store and builds the shared state.
pub fn build_state(rt: &Runtime) -> Result<Arc<AppState>, String> {
    std::fs::create_dir_all(&rt.data_dir)
        .map_err(|e| format!("server.data_dir {}: {e}", rt.data_dir.display()))?;
    let store = crate::store::open(
        rt.engine,
        &rt.data_dir,
        rt.cache_bytes,
        rt.model_cache_bytes,
    )?;
    state_with_store(rt, store)
}

/// Builds the shared state around a given store (tests and benchmarks use this too).
pub fn state_with_store(rt: &Runtime, store: Arc<dyn Store>) -> Result<Arc<AppState>, String> {
    let (trust, more) = Trust::build(&rt.auth, tls::provider())?;
    let mut mechanisms: Vec<Box<dyn Mechanism>> = vec![Box::new(ApiKeys::new(rt.api_keys.clone()))];
    mechanisms.extend(more);
    let auth =
        Authenticator::new(rt.tenants.clone(), mechanisms).with_products(rt.products.clone());
    let tenant_ids: Vec<_> = rt.tenants.iter().map(|t| t.id.clone()).collect();
    let controls = Controls::load(store.clone(), &tenant_ids)
        .map_err(|e| format!("loading operator controls: {e}"))?;
    let controls = Arc::new(controls);
    let ss12000 = ss12000_adapter(rt, &store, &controls)?;
    let bindings: std::collections::HashMap<_, _> = rt.login_bindings.iter().cloned().collect();
    let login = LoginService::new(
        store.clone(),
        controls.clone(),
        rt.tenants
            .iter()
            .map(|t| (t.clone(), bindings.get(&t.id).cloned().unwrap_or_default()))
            .collect(),
        rt.shared_scopes.clone(),
    )
    .with_context_idps(rt.external_id_idps.clone());
    Ok(Arc::new(AppState {
        login,
        provisioning: Provisioning::new(store, controls).with_count_hook(object_gauges()),
        auth,
        egil: EgilAdapter::new()?,
        ss12000,
        max_body_bytes: rt.max_body_bytes,
        public_base_url: rt.public_base_url.clone(),
        ops: Arc::new(crate::ops::Ops::new(
            rt.ops.clone(),
            Some(rt.data_dir.clone()),
        )?),
        trust,
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
        provisioning: Provisioning::new(store.clone(), controls.clone())
            .with_count_hook(object_gauges()),
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

/// Binds the public listener (HTTP/1.1 with keep-alive, and h2c with prior knowledge), or
/// the TLS listener if plain HTTP is switched off.
pub fn bind(
    rt: &Runtime,
    state: Arc<AppState>,
) -> std::io::Result<(actix_web::dev::Server, SocketAddr)> {
    let (server, bound) = bind_all(rt, state)?;
    let addr = bound
        .plain
        .or(bound.tls)
        .ok_or_else(|| std::io::Error::other("no listener configured"))?;
    Ok((server, addr))
}

/// The addresses actually bound.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub plain: Option<SocketAddr>,
    pub tls: Option<SocketAddr>,
}

/// Binds the plain listener (unless `tls.plain_http = false`) and the TLS listener (if
/// `[tls]` is configured) on one server.
pub fn bind_all(
    rt: &Runtime,
    state: Arc<AppState>,
) -> std::io::Result<(actix_web::dev::Server, Bound)> {
    let federation = state.trust.federation.clone();
    let mut server = HttpServer::new(move || {
        App::new()
            .wrap(NormalizePath::new(TrailingSlash::MergeOnly))
            .wrap(from_fn(guard::middleware))
            .wrap(from_fn(access_log::middleware))
            .configure(configure(state.clone()))
    })
    .shutdown_timeout(10)
    // Must come before the TLS listener is added, or it silently does nothing.
    .on_connect(tls::capture_peer_pin);
    if let Some(w) = rt.workers {
        server = server.workers(w);
    }
    let mut bound = Bound {
        plain: None,
        tls: None,
    };
    if rt.auth.tls.as_ref().is_none_or(|t| t.plain_http) {
        let listener = TcpListener::bind(rt.listen)?;
        bound.plain = Some(listener.local_addr()?);
        server = server.listen_auto_h2c(listener)?;
    }
    if let Some(t) = &rt.auth.tls {
        let cfg = tls::server_config(t, federation).map_err(std::io::Error::other)?;
        let listener = TcpListener::bind(t.listen)?;
        bound.tls = Some(listener.local_addr()?);
        server = server.listen_rustls_0_23(listener, cfg)?;
    }
    Ok((server.run(), bound))
}

/// Starts the background refresh of federation metadata and JWKS (on the server's runtime).
fn start_refreshers(state: &AppState) {
    if let Some(fed) = &state.trust.federation {
        let first = fed.start();
        actix_web::rt::spawn(fed.clone().run_refresher(first));
    }
    for j in &state.trust.jwks {
        actix_web::rt::spawn(j.clone().run_refresher());
    }
}

/// Binds the admin listener (emergency brake, audit, metrics, health); one worker.
pub fn bind_admin(
    rt: &Runtime,
    state: Arc<AppState>,
) -> std::io::Result<(actix_web::dev::Server, SocketAddr)> {
    let listener = TcpListener::bind(rt.ops.admin_listen)?;
    let addr = listener.local_addr()?;
    let server = HttpServer::new(move || {
        App::new()
            .wrap(from_fn(access_log::middleware))
            .configure(admin::configure(state.clone()))
    })
    .workers(1)
    .shutdown_timeout(10)
    .listen(listener)?
    .run();
    Ok((server, addr))
}

/// Starts the periodic upkeep (metrics, limiter clean-up, audit retention).
pub fn spawn_upkeep(rt: &Runtime, state: &Arc<AppState>) {
    let tenants = rt.tenants.iter().map(|t| t.id.clone()).collect();
    actix_web::rt::spawn(crate::ops::upkeep(
        state.ops.clone(),
        state.provisioning.store().clone(),
        state.provisioning.controls().clone(),
        tenants,
        state.trust.federation.clone(),
    ));
}

/// Fills the store's read cache with the objects that many logins share, tenant by
/// tenant, so that the first logins after a start do not each wait for them (a login
/// storm on a cold cache ran at 0.41–0.44x of its warm rate in its first 10 s at 1M
/// persons). Best effort: a store error ends it with a warning.
pub fn warm_cache(store: &dyn Store, tenants: &[crate::domain::TenantId]) {
    let started = std::time::Instant::now();
    let mut objects = 0;
    for t in tenants {
        match store.warm_cache(t) {
            Ok(n) => objects += n,
            Err(e) => {
                tracing::warn!(tenant = %t, error = %e, "cache warm-up stopped");
                return;
            }
        }
    }
    tracing::info!(
        objects,
        seconds = started.elapsed().as_secs_f64(),
        "read cache warmed"
    );
}

/// Runs [`warm_cache`] on a thread of its own: serving starts at once.
fn spawn_cache_warmup(state: &Arc<AppState>, tenants: Vec<crate::domain::TenantId>) {
    let store = state.provisioning.store().clone();
    let spawned = std::thread::Builder::new()
        .name("cache-warmup".into())
        .spawn(move || warm_cache(&*store, &tenants));
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cache warm-up not started");
    }
}

/// Runs the server until SIGINT/SIGTERM. Prints `listening on ADDR` and then
/// `admin listening on ADDR` on stdout once bound.
pub async fn serve(rt: Runtime) -> Result<(), String> {
    let state = build_state(&rt)?;
    // Count objects for the gauges before any write can race with the count.
    let tenant_ids: Vec<_> = rt.tenants.iter().map(|t| t.id.clone()).collect();
    crate::ops::metrics::count_objects(&**state.provisioning.store(), &tenant_ids);
    start_refreshers(&state);
    let (server, bound) =
        bind_all(&rt, state.clone()).map_err(|e| format!("server.listen/tls.listen: {e}"))?;
    let (admin_server, admin_addr) = bind_admin(&rt, state.clone())
        .map_err(|e| format!("admin.listen {}: {e}", rt.ops.admin_listen))?;
    spawn_upkeep(&rt, &state);
    spawn_cache_warmup(&state, tenant_ids);
    tracing::info!(plain = ?bound.plain, tls = ?bound.tls, %admin_addr, tenants = rt.tenants.len(), "skolgrind started");
    if let Some(addr) = bound.tls {
        println!("listening tls on {addr}");
    }
    if let Some(addr) = bound.plain {
        println!("listening on {addr}");
    }
    println!("admin listening on {admin_addr}");
    let (public, admin) = futures_util::future::join(server, admin_server).await;
    public.map_err(|e| e.to_string())?;
    admin.map_err(|e| e.to_string())?;
    state
        .provisioning
        .store()
        .flush()
        .map_err(|e| e.to_string())?;
    tracing::info!("skolgrind stopped");
    Ok(())
}
