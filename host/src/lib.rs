//! Airlock: an API gateway whose every policy phase runs in a sandboxed WebAssembly component.
//!
//! # Reading this crate top-down
//! - A request enters in [`server`] (listeners, HTTP/1.1 and h2c, [`tls`], the PROXY protocol header of an L4 balancer ([`proxy_protocol`]), graceful drain; hyper set up per
//!   connection by [`connections`]; an idle HTTP/1.1 keep-alive connection parked, an idle HTTP/2 one closed, by [`keepalive`]), on one of the
//!   [`workers`] (a thread per core that serves its connections start to finish), and is handed to
//!   [`gateway::Gateway::handle`] of the generation [`reload`] keeps current, whose phases are laid out in [`proxy`]: limits, [`router`],
//!   the plugin chain's request phases, the upstream ([`proxy::upstream`]), the response phases,
//!   and the response back to the client.
//! - Which plugins run is decided by the route's [`runtime::PluginChain`], built from the config
//!   ([`config`]) by [`gateway::Gateway::build`].
//! - A plugin call goes through [`runtime`]: warm instance pools within the sandbox's instance
//!   budget ([`runtime::budget`]), deadlines, memory caps, and the
//!   host interfaces a plugin can reach ([`runtime::host`], one file per WIT interface), as its
//!   grants allow ([`grants`]).
//! - Errors a request can end in, and their statuses, are in [`error`].
//! - Metrics, trace context and the access log are in [`telemetry`]; the admin listener that
//!   serves metrics and the admin API is in [`admin`].
//! - Beside the gateway, for plugin authors: [`scaffold`] (`airlock plugin new`) and
//!   [`plugin_trial`] (`airlock plugin test`: one request through one plugin); for security
//!   teams: [`audit`] (`airlock inspect`, `airlock audit`) and [`signing`] (`airlock plugin
//!   keygen/sign/verify`, `[trust]`).
#![deny(missing_docs)]
#![deny(unsafe_code)]
// The host's docs are for its contributors (`cargo doc -p airlock --document-private-items`):
// a public item's doc may point at the private helper or constant that explains it.
#![allow(rustdoc::private_intra_doc_links)]

pub mod admin;
pub mod allocator;
pub mod audit;
pub mod boxed;
pub mod client_limit;
pub mod config;
pub mod connections;
pub mod demo_upstream;
pub mod error;
pub mod exchange;
pub mod gateway;
pub mod grants;
pub mod keepalive;
pub mod plugin_trial;
pub mod proxy;
pub mod proxy_protocol;
pub mod reload;
pub mod router;
pub mod scaffold;
pub mod runtime;
pub mod server;
pub mod signing;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod workers;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Config, ConfigError, ConfigSource};
use crate::gateway::Gateway;
use crate::reload::LiveGateway;
use crate::runtime::SandboxEngine;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config is invalid (every problem, located).
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A listener could not be bound.
    #[error("{0}")]
    Listen(#[from] std::io::Error),
    /// The Wasm sandbox could not be created.
    #[error("cannot create the plugin sandbox: {0}")]
    Sandbox(String),
}

/// Parses and fully validates a config: every reference, route and plugin (loaded and
/// configured). This is `airlock check`, and the first half of `airlock run`.
pub async fn load(source: &ConfigSource) -> Result<(Config, Gateway), StartError> {
    let config = source.parse()?;
    let gateway = build(source, &config).await?;
    Ok((config, gateway))
}

/// Builds the gateway a parsed config describes, in a sandbox of its own.
pub async fn build(source: &ConfigSource, config: &Config) -> Result<Gateway, StartError> {
    let sandbox = SandboxEngine::new(&config.runtime).map_err(|e| StartError::Sandbox(format!("{e:#}")))?;
    Ok(Gateway::build(source, config, sandbox).await?)
}

/// A gateway serving in the background of the current tokio runtime.
pub struct RunningGateway {
    addrs: Vec<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    /// Stops the client listeners (then they drain).
    shutdown: watch::Sender<bool>,
    /// Stops the admin listener and the access log's reopener: after the drain, so `/ready`
    /// and `/metrics` answer during it.
    stop_admin: watch::Sender<bool>,
    task: JoinHandle<bool>,
    live: Arc<LiveGateway>,
}

impl RunningGateway {
    /// The bound address of each listener, in config order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The first listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// The admin listener's address, if `[admin]` is enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The gateway serving new requests now.
    pub fn gateway(&self) -> Arc<Gateway> {
        self.live.gateway()
    }

    /// The served generation and the way to reload it.
    pub fn live(&self) -> &Arc<LiveGateway> {
        &self.live
    }

    /// Shuts down as a balancer expects: `/ready` fails at once; new connections are still
    /// accepted and served for `timeouts.shutdown_delay_ms` (the time balancers take to notice);
    /// then the listeners stop accepting and in-flight requests drain (up to
    /// `timeouts.drain_ms`). The admin listener answers until the end. Returns whether the drain
    /// was clean (false: requests in flight were cut at `drain_ms`).
    pub async fn shutdown(self) -> bool {
        self.live.begin_draining();
        let delay = std::time::Duration::from_millis(self.live.gateway().timeouts.shutdown_delay_ms);
        if !delay.is_zero() {
            tracing::info!(delay_ms = delay.as_millis() as u64, "shutting down: failing readiness, still serving until the delay ends");
            tokio::time::sleep(delay).await;
        }
        let _ = self.shutdown.send(true);
        let drained = self.task.await.unwrap_or(false);
        let gateway = self.live.gateway();
        if let Some(exporter) = gateway.telemetry.otlp() {
            exporter.flush().await;
        }
        gateway.sandbox.stop();
        let _ = self.stop_admin.send(true);
        drained
    }
}

/// Loads `source` and starts serving it on its listeners.
pub async fn start(source: &ConfigSource) -> Result<RunningGateway, StartError> {
    let (config, gateway) = load(source).await?;
    let plan = server::plan_listeners(source, &config)?;
    let listeners = server::bind(source, &config, &plan.addresses).await?;
    let addrs = listeners.iter().map(|l| l.local_addr()).collect::<Result<Vec<_>, _>>()?;
    let workers = workers::Workers::start(config.runtime.worker_count())?;
    gateway.telemetry.metrics.pools.register_workers(workers.balancer().clone());
    let listeners = server::share(listeners, workers.count())?;
    let admin_listener = admin::bind(source, &config).await?;
    let admin_addr = admin_listener.as_ref().map(|l| l.local_addr()).transpose()?;
    // A file that cannot be opened for appending (permission denied, read-only) is found only
    // here: reported at `access_log.path`, as `check` reports the problems it can see.
    let access_log = gateway.telemetry.start_access_log(&config, &source.base_dir).map_err(|e| {
        let key = if config.access_log.path.is_some() { "access_log.path" } else { "access_log" };
        StartError::Config(source.error_at(config.access_log.path.as_ref().map(toml::Spanned::span), key, e.to_string()))
    })?;
    gateway.telemetry.start_otlp(&config);
    gateway.telemetry.metrics.certificates_served(&plan.certificates);
    let live = Arc::new(LiveGateway::new(gateway, plan.tls, config, source.clone()));
    let (shutdown, stop) = watch::channel(false);
    let (stop_admin, admin_stopped) = watch::channel(false);
    telemetry::access_log::reopen_on_sigusr1(access_log, admin_stopped.clone());
    if let Some(listener) = admin_listener {
        let state = Arc::new(admin::AdminState::new(live.clone()));
        tokio::spawn(admin::serve(state, listener, admin_stopped));
    }
    let task = tokio::spawn(server::serve(live.clone(), listeners, stop, workers));
    Ok(RunningGateway { addrs, admin_addr, shutdown, stop_admin, task, live })
}
