//! Where requests enter: listeners accept connections and serve HTTP/1.1 and HTTP/2 (prior
//! knowledge, h2c; or HTTPS with ALPN on a TLS listener, see [`crate::tls`]) on the same port,
//! handing each request to [`crate::gateway::Gateway::handle`] of the gateway current when it
//! arrives ([`crate::reload`]). Shutdown stops
//! accepting, lets in-flight requests finish within the drain timeout, then closes.
//!
//! At `limits.max_connections` open client connections the accept loops stop accepting until
//! one closes: further clients wait in the listen backlog (their handshake done by the kernel,
//! their request buffered) and are served in arrival order as places free, rather than being
//! refused. A refused client has to retry (most HTTP clients do not retry a reset connection for
//! a non-idempotent request), while a waiting one is served late instead of failing: a burst
//! past the cap becomes latency, not errors, as with nginx's `worker_connections`. Past the
//! backlog the kernel drops new SYNs and clients back off on their own.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::service::{Service, service_fn};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use tokio_rustls::TlsAcceptor;

use crate::client_limit::{AtLimit, ClientConnections, ClientSlot};
use crate::config::{Config, ConfigError, ConfigSource};
use crate::connections::{ConnectionBuilders, Protocol};
use crate::keepalive::{self, Activity, Ended};
use crate::proxy::{client_ip, ConnectionInfo};
use crate::proxy_protocol::{self, ProxyHeaderError};
use crate::proxy::upgrade::{self, StreamTunnels};
use crate::reload::LiveGateway;
use crate::telemetry::metrics::ConnectionGauges;
use crate::telemetry::observed_body::ObservedBody;
use crate::tls;
use crate::workers::{self, ConnectionBalancer, Placement, Workers};

/// Longest a client may take to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Shortest time between two warnings about failing `accept` calls. Out of descriptors (EMFILE),
/// every accept fails, every 10 ms: one line per failure flooded the log (and the disk) just when
/// an operator needs it to read; the count of failures in between is in the next line and in
/// `airlock_accept_failures_total`.
const ACCEPT_FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The addresses the listeners bind, and each one's TLS acceptor.
pub struct ListenerPlan {
    /// Where each listener binds, in config order.
    pub addresses: Vec<SocketAddr>,
    /// Each listener's TLS acceptor (certificates read from their files), or `None` for plain HTTP.
    pub tls: Vec<Option<TlsAcceptor>>,
    /// Every listener certificate served, with when it expires: for the expiry gauge.
    pub certificates: Vec<crate::telemetry::metrics::ServedCertificate>,
}

/// When the plugin memory the config allows would need more than `machine_mib`: the smaller of
/// `runtime.plugin_memory_mb` (by default half the machine's memory, so never by default) and
/// `runtime.max_instances` x the largest `memory_mb`, said so an operator sizes them against
/// the machine before a burst of calls finds out.
fn plugin_memory_beyond(config: &Config, machine_mib: Option<u64>) -> Option<String> {
    let machine = machine_mib?;
    let budget = config.runtime.plugin_memory_mb?;
    let largest = config.plugins.values().filter_map(|p| p.memory_mb).chain([config.runtime.memory_mb]).max().unwrap_or(0);
    let worst = (u64::from(config.runtime.max_instances) * u64::from(largest)).min(budget);
    (worst > machine).then(|| {
        format!(
            "runtime.plugin_memory_mb ({budget} MiB), with runtime.max_instances ({}) x memory_mb ({largest} MiB, the largest), allows \
             {worst} MiB of plugin memory, more than this machine's {machine} MiB: a burst of plugin calls could exhaust it (lower \
             plugin_memory_mb, or leave it out for half the machine's memory)",
            config.runtime.max_instances
        )
    })
}

/// This machine's memory in MiB (`MemTotal`), where the system says (Linux).
pub(crate) fn machine_memory_mib() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib / 1024)
}

/// Reads `[[listeners]]`: addresses, and TLS certificates and keys from their PEM files (blocking
/// reads: at startup, or off the async workers on reload). Every problem is reported, located.
pub fn plan_listeners(source: &ConfigSource, config: &Config) -> Result<ListenerPlan, ConfigError> {
    let mut plan = ListenerPlan { addresses: Vec::new(), tls: Vec::new(), certificates: Vec::new() };
    let mut issues = Vec::new();
    for (i, listener) in config.listeners.iter().enumerate() {
        match listener.address.get_ref().parse::<SocketAddr>() {
            Ok(a) => plan.addresses.push(a),
            Err(e) => issues.push(source.issue(
                Some(listener.address.span()),
                &format!("listeners[{i}].address"),
                format!("`{}` is not `ip:port`: {e}", listener.address.get_ref()),
            )),
        }
        plan.tls.push(match &listener.tls {
            None => None,
            Some(t) if t.certificates.is_empty() => {
                // At the `certificates` line, or the `tls` table's when it has none.
                let key = format!("listeners[{i}].tls.certificates");
                let at = source.key_span(&key).or_else(|| source.key_span(&format!("listeners[{i}].tls"))).or_else(|| Some(listener.address.span()));
                issues.push(source.issue(at, &key, "a TLS listener needs at least one `{ cert, key }`"));
                None
            }
            Some(t) if t.client_ca.is_none() && t.client_auth.is_some() => {
                // As nginx refuses `ssl_verify_client` without `ssl_client_certificate`: the
                // operator asked for client certificates, and none would be asked for.
                issues.push(source.issue(
                    t.client_auth.as_ref().map(|a| a.span()),
                    &format!("listeners[{i}].tls.client_auth"),
                    "`client_auth` without `client_ca` would ask no client for a certificate: name the PEM bundle of the CAs client certificates must chain to in `client_ca`",
                ));
                None
            }
            Some(t) => match tls::server_config(t, &source.base_dir) {
                Ok(c) => {
                    for (n, pair) in t.certificates.iter().enumerate() {
                        let path = source.base_dir.join(pair.cert.get_ref());
                        let Some(remarks) = tls::certificate_remarks(&path, std::time::SystemTime::now()) else { continue };
                        for problem in &remarks.problems {
                            tracing::warn!(config = %source.name, "listeners[{i}].tls.certificates[{n}].cert `{}`: {problem}", pair.cert.get_ref());
                        }
                        plan.certificates.push(crate::telemetry::metrics::ServedCertificate {
                            listener: listener.address.get_ref().as_str().into(),
                            cert: pair.cert.get_ref().as_str().into(),
                            expires: remarks.expires,
                        });
                    }
                    Some(TlsAcceptor::from(c))
                }
                Err(e) => {
                    // At the key the problem is in (a `certificates` entry's `cert` or `key`,
                    // `client_ca`), else at the first certificate.
                    let (key, at) = match e.field() {
                        Some(tls::TlsField::Cert(n)) => {
                            (format!("listeners[{i}].tls.certificates[{n}].cert"), t.certificates.get(n).map(|c| c.cert.span()))
                        }
                        Some(tls::TlsField::Key(n)) => {
                            (format!("listeners[{i}].tls.certificates[{n}].key"), t.certificates.get(n).map(|c| c.key.span()))
                        }
                        Some(tls::TlsField::ClientCa) => (format!("listeners[{i}].tls.client_ca"), t.client_ca.as_ref().map(|c| c.span())),
                        None => (format!("listeners[{i}].tls"), t.certificates.first().map(|c| c.cert.span())),
                    };
                    issues.push(source.issue(at, &key, e.to_string()));
                    None
                }
            },
        });
    }
    if config.listeners.is_empty() {
        issues.push(source.issue(None, "listeners", "at least one listener is needed to run"));
    }
    // Two sockets on one address cannot both be bound: found here, so `airlock check` finds it.
    let admin = config.admin.enabled.then(|| config.admin.address.get_ref().parse::<SocketAddr>().ok()).flatten();
    // Said by `check` as well as `run`: the admin API (reload, config) open beyond loopback.
    if let Some(addr) = admin
        && !addr.ip().is_loopback()
        && config.admin.token.is_none()
    {
        tracing::warn!(%addr, config = %source.name, "the admin listener is reachable beyond this machine without admin.token: set one");
    }
    // Also said by `check` and `run`: trusting the requests of trusted proxies where there are none.
    if config.tracing.trust_incoming == crate::config::TrustIncoming::TrustedProxies
        && config.listeners.iter().all(|l| l.trusted_proxies.is_empty())
    {
        tracing::warn!(
            config = %source.name,
            "tracing.trust_incoming = \"trusted_proxies\" but no listener has trusted_proxies: no request's trace context or request id is continued (as with \"none\")"
        );
    }
    // Also said by `check` and `run`: plugin memory the config allows beyond the machine's.
    if let Some(problem) = plugin_memory_beyond(config, machine_memory_mib()) {
        tracing::warn!(config = %source.name, "{problem}");
    }
    for (i, listener) in config.listeners.iter().enumerate() {
        let Ok(address) = listener.address.get_ref().parse::<SocketAddr>() else { continue };
        let earlier = config.listeners[..i]
            .iter()
            .position(|other| other.address.get_ref().parse().is_ok_and(|other| same_socket(address, other)));
        let clash = match earlier {
            Some(j) => Some(format!("`{address}` is also bound by listeners[{j}]")),
            None => admin.filter(|a| same_socket(address, *a)).map(|a| format!("`{address}` is also bound by the admin listener (`admin.address = \"{a}\"`)")),
        };
        if let Some(clash) = clash {
            issues.push(source.issue(Some(listener.address.span()), &format!("listeners[{i}].address"), clash));
        }
    }
    if issues.is_empty() { Ok(plan) } else { Err(ConfigError::Invalid(issues)) }
}

/// Whether binding both addresses would clash: the same port (not 0, which picks a free one) on
/// the same IP, or on one IP and the wildcard address of its family.
fn same_socket(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && a.is_ipv4() == b.is_ipv4()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Serves the live gateway on `listeners` (in config order) until `shutdown` turns true, then
/// drains. Every worker accepts on every listener and serves what it accepted
/// ([`crate::workers`]). Each connection gets the current generation's settings and TLS
/// certificates, and each request the gateway current when it arrives, so a reload applies to
/// the next request. Returns whether the drain finished within `timeouts.drain_ms` (false:
/// requests in flight were cut).
pub async fn serve(live: Arc<LiveGateway>, listeners: Vec<SharedListener>, shutdown: watch::Receiver<bool>, workers: Workers) -> bool {
    let graceful = Arc::new(GracefulShutdown::new());
    let shutdowns = WorkerShutdowns::relay(shutdown, workers.count());
    let shared = Arc::new(AcceptShared::default());

    let mut accept_loops = Vec::new();
    for (index, handles) in listeners.into_iter().enumerate() {
        for (worker, listener) in handles.into_iter().enumerate() {
            let balancer = workers.balancer().clone();
            let accept = accept_loop(live.clone(), index, listener, balancer, graceful.clone(), shutdowns.clone(), shared.clone());
            accept_loops.push(workers.spawn(worker, accept));
        }
    }
    for accept in accept_loops {
        let _ = accept.await;
    }

    let drain = Duration::from_millis(live.gateway().timeouts.drain_ms);
    // The accept loops, the only other holders, have ended.
    let Ok(graceful) = Arc::try_unwrap(graceful) else {
        tracing::error!("internal error: connection tracker still shared; closing without drain");
        return false;
    };
    tracing::info!(in_flight_connections = graceful.count(), "draining");
    let drained = tokio::time::timeout(drain, graceful.shutdown()).await.is_ok();
    if !drained {
        tracing::warn!("drain timeout of {} ms passed; closing remaining connections", drain.as_millis());
    }
    drop(workers);
    drained
}

/// What every accept loop shares: failed accepts, and each client address's open connections.
#[derive(Default)]
struct AcceptShared {
    failures: AcceptFailures,
    clients: Arc<ClientConnections>,
}

/// Failed `accept` calls over all accept loops, and when one was last logged.
#[derive(Default)]
struct AcceptFailures {
    /// Failures since the last warning.
    unlogged: AtomicU64,
    /// When the last warning was logged: milliseconds since `origin`, plus one (0: never).
    logged_at: AtomicU64,
    /// The clock origin of `logged_at`: the first failure.
    origin: OnceLock<Instant>,
}

impl AcceptFailures {
    /// Counts a failure; returns how many to report (this one included) when a warning is due,
    /// at most once per [`ACCEPT_FAILURE_LOG_INTERVAL`] over all accept loops.
    fn record(&self) -> Option<u64> {
        self.unlogged.fetch_add(1, Ordering::Relaxed);
        let origin = *self.origin.get_or_init(Instant::now);
        let now = u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1;
        let last = self.logged_at.load(Ordering::Relaxed);
        let interval = u64::try_from(ACCEPT_FAILURE_LOG_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        let due = last == 0 || now.saturating_sub(last) >= interval;
        (due && self.logged_at.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok())
            .then(|| self.unlogged.swap(0, Ordering::Relaxed))
    }
}

/// One worker's accept loop on listener `index` (a handle of the shared listening socket): serves
/// each connection it accepts on the worker `balancer` places it on (this one unless another
/// serves fewer connections), until shutdown. At `limits.max_connections` open connections it
/// stops accepting until one closes (see the module docs for why).
async fn accept_loop(
    live: Arc<LiveGateway>,
    index: usize,
    listener: std::net::TcpListener,
    balancer: ConnectionBalancer,
    graceful: Arc<GracefulShutdown>,
    shutdowns: WorkerShutdowns,
    shared: Arc<AcceptShared>,
) {
    let mut shutdown = shutdowns.of(workers::current());
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => return tracing::error!("listener {index} cannot be registered on a worker: {e}"),
    };
    // Whether this loop is waiting at the cap (counted once per wait, not per look).
    let mut at_cap = false;
    loop {
        // The cap of the generation current now: a reload may change it.
        let limit = live.current().connections.max_connections();
        if limit != balancer.limit() {
            balancer.set_limit(limit);
            live.gateway().telemetry.metrics.connection_limit(limit);
        }
        if balancer.full() {
            if !at_cap {
                at_cap = true;
                live.gateway().telemetry.metrics.connection_limit_reached();
            }
            tokio::select! {
                () = balancer.room() => continue,
                _ = stopped(&mut shutdown) => break,
            }
        }
        at_cap = false;
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    live.gateway().telemetry.metrics.accept_failed();
                    if let Some(failed) = shared.failures.record() {
                        tracing::warn!(
                            failures = failed,
                            "accept failed: {e} (logged at most every {} s; with `Too many open files`, raise the open-file \
                             limit or lower limits.max_connections)",
                            ACCEPT_FAILURE_LOG_INTERVAL.as_secs()
                        );
                    }
                    // EMFILE and friends: back off briefly rather than spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => break,
        };
        // One client over its own limit is closed at once: waiting would hold every client up.
        // Behind the PROXY protocol the client is the one its header announces, counted once the
        // header is read (`serve_proxied`), not the balancer every connection comes from.
        let generation = live.current();
        let per_client = generation.connections.max_connections_per_client();
        let proxied = generation.config.listeners.get(index).is_some_and(|l| l.proxy_protocol);
        // Only the balancers named in `proxy_protocol_from` may announce a client.
        let peer_allowed = !proxied || generation.gateway.proxy_protocol_peers.get(index).is_none_or(|p| p.is_empty() || p.admits(peer.ip()));
        drop(generation);
        if !peer_allowed {
            live.gateway().telemetry.metrics.connection_cut("proxy_protocol_peer");
            tracing::debug!(%peer, "connection closed: the peer is not in the listener's proxy_protocol_from");
            drop(stream);
            continue;
        }
        let client_count = if proxied {
            ClientCount::Announced(shared.clients.clone())
        } else {
            match shared.clients.admit(peer.ip(), per_client) {
                Ok(slot) => ClientCount::Counted(slot),
                Err(AtLimit) => {
                    live.gateway().telemetry.metrics.connection_cut("client_limit");
                    tracing::debug!(%peer, "connection closed: the client holds limits.max_connections_per_client already");
                    drop(stream);
                    continue;
                }
            }
        };
        let _ = stream.set_nodelay(true);
        // Another accept loop may have taken the last place since `room`: this one waits, holding
        // the connection unserved, rather than serve one over the cap.
        let placement = tokio::select! {
            placement = balancer.place(workers::current()) => placement,
            _ = stopped(&mut shutdown) => break,
        };
        let watcher = graceful.watcher();
        // The connection watches the shutdown signal of the worker serving it.
        let shutdown = shutdowns.of(placement.worker());
        if placement.worker() == workers::current() {
            let live = live.clone();
            match client_count {
                ClientCount::Counted(slot) => tokio::spawn(serve_connection(live, index, stream, peer, watcher, (placement, slot), shutdown)),
                ClientCount::Announced(clients) => tokio::spawn(serve_proxied(live, index, stream, peer, watcher, (placement, clients), shutdown)),
            };
            continue;
        }
        // Moved to the other worker's runtime: taken off this one's event loop, registered on
        // that one's, so its I/O wakes the thread that serves it.
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%peer, "accepted connection could not be moved to worker {}: {e}", placement.worker());
                continue;
            }
        };
        let live = live.clone();
        let worker = placement.worker();
        balancer.spawn(worker, async move {
            match (TcpStream::from_std(stream), client_count) {
                (Ok(stream), ClientCount::Counted(slot)) => serve_connection(live, index, stream, peer, watcher, (placement, slot), shutdown).await,
                (Ok(stream), ClientCount::Announced(clients)) => {
                    serve_proxied(live, index, stream, peer, watcher, (placement, clients), shutdown).await;
                }
                (Err(e), _) => tracing::warn!(%peer, "accepted connection could not be registered on worker {worker}: {e}"),
            }
        });
    }
}

/// How an accepted connection counts under `limits.max_connections_per_client`.
enum ClientCount {
    /// Counted at accept, by its TCP peer, as long as the slot lives (`None`: no limit).
    Counted(Option<ClientSlot>),
    /// On a listener with `proxy_protocol`: to be counted in this registry by the client its
    /// PROXY header announces, once read.
    Announced(Arc<ClientConnections>),
}

/// Serves an accepted connection of listener `index`, one with `proxy_protocol`: its PROXY header
/// first ([`proxy_header`]), then as [`serve_connection`] serves any, with the client the header
/// announced as its peer. Apart from `serve_connection` so that a listener without the PROXY
/// protocol pays nothing for it, not even a larger task per connection.
async fn serve_proxied(
    live: Arc<LiveGateway>,
    index: usize,
    mut stream: TcpStream,
    peer: SocketAddr,
    watcher: Watcher,
    (placement, clients): (Placement, Arc<ClientConnections>),
    mut shutdown: watch::Receiver<bool>,
) {
    // Both boxed, so the task holds neither for the connection's life: the header's state (its
    // timer, ~1 KB) is freed once read, and `serve_connection`'s is not held beside it. Inline,
    // the latter would also size every connection's task in `accept_loop`, which awaits this
    // function or `serve_connection` in place.
    let header = Box::pin(proxy_header(&live, index, &mut stream, peer, &clients, &mut shutdown)).await;
    let Some((announced, slot)) = header else { return };
    drop(clients);
    Box::pin(serve_connection(live, index, stream, announced, watcher, (placement, slot), shutdown)).await;
}

/// Reads the PROXY protocol header a connection of listener `index` (one with `proxy_protocol`)
/// starts with, and counts the client it announces (announcing none, the TCP peer `peer`) in
/// `clients` under `limits.max_connections_per_client`. The header must be complete within the
/// time the connection's next step has (a TLS listener's handshake timeout, 10 s; on cleartext
/// `timeouts.idle_ms`, as for a connection's first bytes). `None`: the connection is to be
/// closed, said at debug and, unless its peer went away or the gateway is stopping, counted in
/// `airlock_connections_cut_total`.
async fn proxy_header(
    live: &LiveGateway,
    index: usize,
    stream: &mut TcpStream,
    peer: SocketAddr,
    clients: &Arc<ClientConnections>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<(SocketAddr, Option<ClientSlot>)> {
    let generation = live.current();
    // Open while its header is read too (`serve_connection` counts it from then on).
    let _open = generation.gateway.telemetry.metrics.connection_opened();
    let tls = generation.tls.get(index).is_some_and(Option::is_some);
    let limit = if tls { TLS_HANDSHAKE_TIMEOUT } else { generation.connections.idle() };
    let per_client = generation.connections.max_connections_per_client();
    drop(generation);
    let read = tokio::select! {
        read = tokio::time::timeout(limit, proxy_protocol::read_header(stream)) => read,
        _ = stopped(shutdown) => return None,
    };
    let announced = match read {
        Ok(Ok(announced)) => announced.unwrap_or(peer),
        Ok(Err(e @ (ProxyHeaderError::Closed | ProxyHeaderError::Io(_)))) => {
            tracing::debug!(%peer, "connection closed: {e}");
            return None;
        }
        Ok(Err(e)) => {
            live.gateway().telemetry.metrics.connection_cut("proxy_protocol");
            tracing::debug!(%peer, "connection closed: {e}");
            return None;
        }
        Err(_) => {
            live.gateway().telemetry.metrics.connection_cut("proxy_protocol");
            tracing::debug!(%peer, "connection closed: no complete PROXY protocol header within {} ms", limit.as_millis());
            return None;
        }
    };
    match clients.admit(announced.ip(), per_client) {
        Ok(slot) => Some((announced, slot)),
        Err(AtLimit) => {
            live.gateway().telemetry.metrics.connection_cut("client_limit");
            tracing::debug!(%peer, client = %announced, "connection closed: the client holds limits.max_connections_per_client already");
            None
        }
    }
}

/// Serves one accepted connection of listener `index` (after the TLS handshake, if it has TLS),
/// with hyper set up for the protocol the connection turns out to speak ([`crate::connections`]).
/// It counts on its worker, and for its client address, as long as `_counted` lives.
async fn serve_connection(
    live: Arc<LiveGateway>,
    index: usize,
    stream: TcpStream,
    peer: SocketAddr,
    watcher: Watcher,
    _counted: (Placement, Option<ClientSlot>),
    mut shutdown: watch::Receiver<bool>,
) {
    let generation = live.current();
    let _open = generation.gateway.telemetry.metrics.connection_opened();
    let gauges = generation.gateway.telemetry.metrics.connection_gauges();
    let builders = generation.connections.clone();
    let tls = generation.tls.get(index).cloned().flatten();
    drop(generation);
    if let Some(tls) = tls {
        // Boxed: this task lives as long as the connection, and sized for a TLS session and its
        // handshake it would cost every cleartext connection 7.1 KB instead of 2 KB.
        return Box::pin(serve_tls(live, &builders, tls, stream, peer, index, watcher, gauges, shutdown)).await;
    }
    // Until its first bytes arrive a connection is not yet watched by the drain: a shutdown
    // closes it here instead. One that sends nothing is idle like any other (`idle_ms`): kept
    // forever, such connections would hold every file descriptor the gateway has.
    let protocol = tokio::select! {
        protocol = Protocol::sniff(&stream) => protocol,
        () = tokio::time::sleep(builders.idle()) => return tracing::debug!(%peer, "closed: no request within timeouts.idle_ms"),
        _ = stopped(&mut shutdown) => return,
    };
    let conn = ConnectionInfo { peer, client: client_ip::canonical(peer.ip()), listener: index, scheme: "http", via_trusted_proxy: false };
    if protocol == Protocol::Http1 {
        return serve_http1(live, &builders, conn, None, stream, watcher, gauges, shutdown).await;
    }
    // Boxed like the TLS path, so an HTTP/1 connection's task is not sized for HTTP/2.
    Box::pin(serve_http2(live, &builders, protocol, conn, None, stream, watcher, gauges, shutdown)).await;
}

/// Serves a connection on a TLS listener: the handshake, then HTTP in the protocol ALPN agreed
/// (HTTP/1.1 parked while idle, as on cleartext).
#[allow(clippy::too_many_arguments)]
async fn serve_tls(
    live: Arc<LiveGateway>,
    builders: &ConnectionBuilders,
    tls: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    index: usize,
    watcher: Watcher,
    gauges: ConnectionGauges,
    shutdown: watch::Receiver<bool>,
) {
    let deadline = tokio::time::Instant::now() + TLS_HANDSHAKE_TIMEOUT;
    // A TLS connection starts with a handshake record (0x16); one that starts with a letter is a
    // plain HTTP request (`http://` to the HTTPS port): answered with a 400 that says so, as
    // nginx and Go's servers do, rather than a TLS alert its client shows as garbage.
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
        Ok(Ok(1..)) if first[0].is_ascii_uppercase() => return Box::pin(refuse_plain_http(stream, peer, deadline)).await,
        Ok(Ok(1..)) => {}
        Ok(Ok(0) | Err(_)) => return,
        Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
    }
    // Boxed, so the handshake's state is freed once it is done rather than kept with the connection.
    let handshake = Box::pin(tls.accept(stream));
    let stream = match tokio::time::timeout_at(deadline, handshake).await {
        // Boxed: the session (~1.2 KB) then moves through the serving futures as a pointer.
        Ok(Ok(s)) => Box::new(s),
        Ok(Err(e)) => return tracing::debug!(%peer, "TLS handshake failed: {e}"),
        Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
    };
    let session = stream.get_ref().1;
    let protocol = Protocol::from_alpn(session.alpn_protocol());
    // The client certificate, if mTLS verified one, identifies every request on it.
    let identity = session.peer_certificates().and_then(|c| c.first()).and_then(tls::client_identity).map(Arc::new);
    let conn = ConnectionInfo { peer, client: client_ip::canonical(peer.ip()), listener: index, scheme: "https", via_trusted_proxy: false };
    if protocol == Protocol::Http1 {
        serve_http1(live, builders, conn, identity, stream, watcher, gauges, shutdown).await;
    } else {
        // Boxed, so an HTTP/1.1 connection's task, parked or not, is not sized for HTTP/2.
        Box::pin(serve_http2(live, builders, protocol, conn, identity, stream, watcher, gauges, shutdown)).await;
    }
}

/// The body of the 400 that answers a plain HTTP request on a TLS listener.
const PLAIN_HTTP_ON_TLS: &str =
    r#"{"status":400,"error":"plain_http_on_https_port","message":"this port speaks HTTPS: send the request with https://"}"#;

/// Most bytes of a plain HTTP request on a TLS listener read (and dropped) before its 400: what
/// is left unread when the socket closes would have the kernel reset the connection, and the
/// client could lose the answer.
const PLAIN_HTTP_DRAIN_BYTES: usize = 16 * 1024;

/// Answers a plain HTTP request on a TLS listener with a 400 ([`PLAIN_HTTP_ON_TLS`]) and closes the
/// connection, all before `deadline` (the handshake's).
async fn refuse_plain_http(mut stream: TcpStream, peer: SocketAddr, deadline: tokio::time::Instant) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tracing::debug!(%peer, "plain HTTP on a TLS listener: answered 400");
    let answer = async {
        // The request's head, so closing does not reset the connection under the answer.
        let mut buf = vec![0u8; PLAIN_HTTP_DRAIN_BYTES];
        let mut read = 0;
        while read < buf.len() {
            let n = stream.read(&mut buf[read..]).await?;
            // Only what this read added (and the 3 bytes before it) is searched: a client
            // trickling its head a byte at a time costs no rescan of what came before.
            let from = read.saturating_sub(3);
            read += n;
            if n == 0 || buf[from..read].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        let head = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
            PLAIN_HTTP_ON_TLS.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(PLAIN_HTTP_ON_TLS.as_bytes()).await?;
        stream.shutdown().await?;
        // Until the client closes too (it has the whole answer), or the deadline.
        while stream.read(&mut buf).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout_at(deadline, answer).await;
}

/// Serves an HTTP/1.1 connection (cleartext or TLS), parked while idle by [`keepalive`], which
/// watches `shutdown` itself; the drain waits for it as long as `_drain` lives.
#[allow(clippy::too_many_arguments)]
async fn serve_http1<T: keepalive::Parkable>(
    live: Arc<LiveGateway>,
    builders: &ConnectionBuilders,
    conn: ConnectionInfo,
    identity: Option<Arc<tls::ClientIdentity>>,
    stream: T,
    _drain: Watcher,
    gauges: ConnectionGauges,
    shutdown: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::default());
    // A switch is joined by `keepalive::serve` itself, after hyper has sent the 101.
    let service = gateway_service(live.clone(), conn, identity, Some(activity.clone()), None);
    match keepalive::serve(builders, stream, service, activity, gauges, shutdown).await {
        Ok(ended) => report_cut(&live, conn.peer, ended),
        Err(e) => report_error(&live, conn.peer, &e),
    }
}

/// Logs a connection that ended with an error, and counts it in `airlock_requests_rejected_total`
/// when hyper refused what the client sent before the gateway's service saw a request
/// ([`rejection`]). At debug: anyone can send garbage, and a line per scanner's probe at a
/// higher level would flood the log; the counter is what to alert on.
fn report_error(live: &LiveGateway, peer: SocketAddr, error: &(dyn std::error::Error + 'static)) {
    match rejection(error) {
        Some(reason) => {
            live.gateway().telemetry.metrics.request_rejected(reason);
            tracing::debug!(%peer, reason, "rejected before routing: {error}{}", cause(error));
        }
        None => tracing::debug!(%peer, "connection ended with an error: {error}{}", cause(error)),
    }
}

/// `: <cause>` of an error whose own text does not include it (hyper's), or nothing.
fn cause(error: &(dyn std::error::Error + 'static)) -> String {
    error.downcast_ref::<hyper::Error>().and_then(std::error::Error::source).map(|c| format!(": {c}")).unwrap_or_default()
}

/// Why hyper refused a client's bytes, if the error a connection ended with says it did (one of
/// [`crate::telemetry::metrics::REJECTION_REASONS`]): an HTTP/1 request head it could not parse
/// (it answered a bare 400), too large (431; its text tells a URI too long, 414, apart), or an
/// HTTP/2 connection h2 closed on a protocol error of the client's (a GOAWAY it sent itself,
/// with an error code). A client that went away, a timeout or an I/O error is no rejection.
fn rejection(error: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    let error = error.downcast_ref::<hyper::Error>()?;
    if error.is_parse_too_large() {
        // hyper has no predicate of its own for the 414 case (`Parse::UriTooLong`).
        return Some(if error.to_string() == "URI too long" { "uri_too_long" } else { "headers_too_large" });
    }
    if error.is_parse() {
        return Some("malformed");
    }
    let h2 = std::error::Error::source(error)?.downcast_ref::<h2::Error>()?;
    let protocol = h2.is_go_away() && h2.is_library() && h2.reason().is_some_and(|r| r != h2::Reason::NO_ERROR);
    protocol.then_some("http2_protocol")
}

/// Logs (once per connection) and counts a client connection the gateway closed on a limit.
fn report_cut(live: &LiveGateway, peer: SocketAddr, ended: Ended) {
    let reason = match ended {
        Ended::Closed => return,
        Ended::SendTimedOut(after) => {
            tracing::warn!(
                %peer,
                "closed the connection: the client took no byte of its response (over HTTP/2: made no room for it) for {} ms (timeouts.send_ms)",
                after.as_millis()
            );
            "send_timeout"
        }
        Ended::EarlyResets { resets, requests } => {
            tracing::warn!(
                %peer,
                resets,
                requests,
                "closed the HTTP/2 connection (GOAWAY): the client reset most of its streams before their response was ready"
            );
            "early_resets"
        }
    };
    live.gateway().telemetry.metrics.connection_cut(reason);
}

/// Serves an HTTP/2 connection (or one whose protocol hyper detects itself), closed once idle
/// for `timeouts.idle_ms` by [`keepalive::serve_until_idle`], which watches `shutdown` itself;
/// the drain waits for it as long as `_drain` lives.
#[allow(clippy::too_many_arguments)]
async fn serve_http2<T>(
    live: Arc<LiveGateway>,
    builders: &ConnectionBuilders,
    protocol: Protocol,
    conn: ConnectionInfo,
    identity: Option<Arc<tls::ClientIdentity>>,
    stream: T,
    _drain: Watcher,
    gauges: ConnectionGauges,
    shutdown: watch::Receiver<bool>,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::default());
    let tunnels = StreamTunnels { metrics: gauges.tunnels, shutdown: shutdown.clone() };
    let service = gateway_service(live.clone(), conn, identity, Some(activity.clone()), Some(tunnels));
    let connection = builders.auto(protocol).serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
    match keepalive::serve_until_idle(connection, activity, (builders.idle(), builders.send()), shutdown).await {
        Ok(ended) => report_cut(&live, conn.peer, ended),
        Err(e) => report_error(&live, conn.peer, &*e),
    }
}

/// The service hyper calls for each request on one connection: the gateway current when the
/// request arrives, told about the connection (and its verified client certificate). With
/// `activity`, each request is marked as being answered until its response body is done
/// (HTTP/1; HTTP/2: its head), and an HTTP/1 request body as being read until its end
/// ([`keepalive`] parks a connection only while none is). With `tunnels`, a request that
/// switches protocols (WebSocket over HTTP/2, or over HTTP/1.1 that hyper's protocol detection
/// serves) is joined to its upstream on a task of its own; without, the connection's task joins it.
fn gateway_service(
    live: Arc<LiveGateway>,
    conn: ConnectionInfo,
    identity: Option<Arc<tls::ClientIdentity>>,
    activity: Option<Arc<Activity>>,
    tunnels: Option<StreamTunnels>,
) -> impl Service<Request<Incoming>, Response = Response<ObservedBody>, Error = Infallible, Future: Unpin + Send + 'static>
+ Unpin
+ Send
+ 'static {
    service_fn(move |mut request: Request<Incoming>| {
        let gateway = live.gateway();
        if let Some(id) = &identity {
            request.extensions_mut().insert(id.clone());
        }
        let mut answering = activity.as_ref().map(|a| a.answering());
        // HTTP/1: its body is counted as being read until its end is (proxy::body::UploadProgress).
        if request.version() < http::Version::HTTP_2
            && !hyper::body::Body::is_end_stream(request.body())
            && let Some(answering) = &answering
        {
            request.extensions_mut().insert(answering.request_body());
        }
        // The client's side of a switch, and what its task needs: only for requests asking one.
        let stream_tunnel = tunnels.as_ref().and_then(|t| Some((upgrade::client_side(&mut request)?, t.clone())));
        // Shutting down (`timeouts.shutdown_delay_ms`): each HTTP/1 request that arrives gets an
        // answer that closes its connection, so clients move their next request to a new one
        // (which the balancer, told by `/ready`, sends elsewhere) instead of finding theirs
        // closed under it when the drain begins (Envoy's drain does the same).
        let closing = request.version() < http::Version::HTTP_2 && live.is_draining();
        // HTTP/1: an exchange after which hyper closes the connection is its last (never parked).
        let http1 = request.version() < http::Version::HTTP_2;
        let asks_to_close = http1 && keepalive::asks_to_close(request.version(), request.headers());
        let http10 = request.version() == http::Version::HTTP_10;
        // Over HTTP/2 the response body counts its waits for the client (`timeouts.send_ms`).
        let sends = activity.as_ref().filter(|_| request.version() == http::Version::HTTP_2).map(|a| a.send_watch());
        // Boxed: hyper's HTTP/1 connection holds a slot the size of this future for its whole
        // life, idle or not; a box keeps that slot one pointer and the request's state is freed
        // when the response is done (~1 KB less per idle keep-alive connection).
        crate::boxed::in_place(|| async move {
            // Pinned where it is made, not copied into the await's slot (`Gateway::handle`).
            let mut response = std::pin::pin!(gateway.handle(request, conn)).await;
            if let Some(sends) = sends {
                response.body_mut().watching_sends(sends);
            }
            if closing && response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
                response.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
            }
            // HTTP/1.0 has no chunks: a body of unknown length ends with the connection, said as
            // nginx says it (hyper would answer `keep-alive`, then end the body by closing).
            if http10 && http_body::Body::size_hint(response.body()).exact().is_none() {
                *response.version_mut() = http::Version::HTTP_10;
            }
            if let Some(answering) = answering.as_ref().filter(|_| http1)
                && (asks_to_close || http10 && response.version() == http::Version::HTTP_10 || keepalive::asks_to_close(http::Version::HTTP_11, response.headers()))
            {
                answering.last_exchange();
            }
            // Answered: dropped from here on, the request was not reset early.
            if let Some(answering) = &mut answering {
                answering.answered();
            }
            if let Some(upstream) = response.extensions_mut().remove::<upgrade::UpstreamUpgrade>() {
                match stream_tunnel {
                    // A task of its own joins them once hyper has sent the response.
                    Some((client, tunnels)) => tunnels.join(client, upstream, answering),
                    // The connection's task joins them once hyper has sent the 101.
                    None => {
                        if let Some(answering) = &answering {
                            answering.switch_to(upstream);
                        }
                    }
                }
            } else if let Some(answering) = answering.filter(|_| http1) {
                // Being answered until its body is sent: an HTTP/1 connection is parked only
                // between exchanges ([`keepalive`]). (An HTTP/2 one goes idle with a response
                // still streaming: its graceful close lets the stream finish.)
                response.body_mut().answering_until_done(answering);
            }
            Ok::<_, Infallible>(response)
        })
    })
}

/// One listening socket as the workers share it: a handle (duplicated descriptor) per worker.
pub type SharedListener = Vec<std::net::TcpListener>;

/// Gives each of `workers` its own handle of every listener, so each accepts on its own
/// runtime. Fails (at startup, before serving) if a descriptor cannot be duplicated.
pub fn share(listeners: Vec<TcpListener>, workers: usize) -> std::io::Result<Vec<SharedListener>> {
    listeners
        .into_iter()
        .map(|listener| {
            let listener = listener.into_std()?;
            let mut handles = (1..workers).map(|_| listener.try_clone()).collect::<std::io::Result<Vec<_>>>()?;
            handles.push(listener);
            Ok(handles)
        })
        .collect()
}

/// Binds every configured listener (port 0 picks a free port). A failure is reported at the
/// listener's `address` in the config: the operator's next step is to change that line.
pub async fn bind(source: &ConfigSource, config: &Config, addresses: &[SocketAddr]) -> Result<Vec<TcpListener>, ConfigError> {
    let mut listeners = Vec::with_capacity(addresses.len());
    for (i, address) in addresses.iter().enumerate() {
        let listener = TcpListener::bind(address).await.map_err(|e| {
            let span = config.listeners.get(i).map(|l| l.address.span());
            ConfigError::Invalid(vec![source.issue(span, &format!("listeners[{i}].address"), cannot_listen(*address, &e))])
        })?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Why `address` cannot be listened on, with the usual cause of the usual failure named.
pub fn cannot_listen(address: SocketAddr, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "cannot listen on {address}: {e}; another process (another gateway?) holds it: pick a free port, or port 0 for any"
        ),
        std::io::ErrorKind::AddrNotAvailable => format!("cannot listen on {address}: {e}; no interface of this machine has that IP"),
        std::io::ErrorKind::PermissionDenied => format!("cannot listen on {address}: {e}; ports below 1024 need privileges"),
        _ => format!("cannot listen on {address}: {e}"),
    }
}

/// The shutdown signal as each request worker's connections watch it: one `watch` channel per
/// worker, set by a relay when the gateway's own signal is. A connection polls its signal on
/// every wake-up, and polling a waiting `watch` takes the lock of the channel's waiter list: one
/// channel shared by every connection would be a lock all cores contend for on every wake-up.
#[derive(Clone)]
struct WorkerShutdowns(Arc<[watch::Receiver<bool>]>);

impl WorkerShutdowns {
    /// One signal per worker, each set once `shutdown` is (by a task on the calling runtime).
    fn relay(mut shutdown: watch::Receiver<bool>, workers: usize) -> Self {
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..workers.max(1)).map(|_| watch::channel(false)).unzip();
        tokio::spawn(async move {
            stopped(&mut shutdown).await;
            for sender in senders {
                sender.send_replace(true);
            }
        });
        Self(receivers.into())
    }

    /// Worker `worker`'s signal.
    fn of(&self, worker: usize) -> watch::Receiver<bool> {
        self.0[worker % self.0.len()].clone()
    }
}

/// Resolves once shutdown is requested (or the sender is gone).
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    while !*shutdown.borrow_and_update() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_memory_the_machine_lacks_is_said() {
        let config = |text: &str| ConfigSource::inline("t.toml", text, ".".into()).parse().unwrap();
        // A budget past a 16 GiB machine, with room for it in the instances' caps.
        let raised = config("[runtime]\nplugin_memory_mb = 65536\n");
        let said = plugin_memory_beyond(&raised, Some(16 * 1024)).expect("said");
        assert!(said.contains("allows 32768 MiB") && said.contains("16384 MiB"), "{said}");
        assert_eq!(plugin_memory_beyond(&raised, Some(64 * 1024)), None);
        // The default budget (half the machine) is not warned about, even with large caps.
        assert_eq!(plugin_memory_beyond(&config("[runtime]\nmax_instances = 10000\nmemory_mb = 1024\n"), Some(4 * 1024)), None);
        // The instances' caps bound it too: 10 x 1024 MiB (a definition's cap counts).
        let big = config("[runtime]\nmax_instances = 10\nplugin_memory_mb = 65536\n[plugins.p]\nsource = \"p.wasm\"\nmemory_mb = 1024\n");
        assert!(plugin_memory_beyond(&big, Some(8 * 1024)).expect("said").contains("allows 10240 MiB"));
        assert_eq!(plugin_memory_beyond(&big, Some(16 * 1024)), None);
        assert_eq!(plugin_memory_beyond(&big, None), None, "unknown machine memory: nothing to say");
    }

    #[test]
    fn accept_failures_are_logged_at_most_once_per_interval_with_the_count_between() {
        let failures = AcceptFailures::default();
        assert_eq!(failures.record(), Some(1), "the first is logged");
        assert_eq!((0..500).filter_map(|_| failures.record()).count(), 0, "then none within the interval");
        // As if the interval had passed: the next is logged with every failure since.
        failures.logged_at.store(1, Ordering::Relaxed);
        let origin = Instant::now().checked_sub(ACCEPT_FAILURE_LOG_INTERVAL + Duration::from_secs(1));
        let Some(origin) = origin else { return };
        let failures = AcceptFailures { origin: OnceLock::from(origin), ..failures };
        assert_eq!(failures.record(), Some(501));
        assert_eq!(failures.record(), None);
    }

    /// The error a hyper server connection (HTTP/2 with `http2`) ends with after reading `bytes`.
    async fn served_error(bytes: &[u8], http2: bool) -> Box<dyn std::error::Error + Send + Sync> {
        use tokio::io::AsyncWriteExt;
        let (mut client, server) = tokio::io::duplex(256 * 1024);
        client.write_all(bytes).await.unwrap();
        let service = service_fn(|_| async { Ok::<_, Infallible>(Response::new(http_body_util::Empty::<bytes::Bytes>::new())) });
        let io = TokioIo::new(server);
        let served = async {
            if http2 {
                let builder = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
                builder.serve_connection(io, service).await
            } else {
                hyper::server::conn::http1::Builder::new().max_buf_size(8192).serve_connection(io, service).await
            }
        };
        let result = tokio::time::timeout(Duration::from_secs(5), served).await.expect("the connection ends");
        drop(client);
        Box::new(result.expect_err("hyper refuses it"))
    }

    #[tokio::test]
    async fn what_hyper_refuses_is_told_by_reason() {
        let malformed = served_error(b"GET / HTTP/1.1\r\nbad header\r\n\r\n", false).await;
        assert_eq!(rejection(&*malformed), Some("malformed"), "{malformed}");
        let line = served_error(b"NOT AN HTTP REQUEST LINE\r\n\r\n", false).await;
        assert_eq!(rejection(&*line), Some("malformed"), "{line}");
        let mut big = b"GET / HTTP/1.1\r\nx-big: ".to_vec();
        big.resize(20_000, b'a');
        let too_large = served_error(&big, false).await;
        assert_eq!(rejection(&*too_large), Some("headers_too_large"), "{too_large}");
        // The HTTP/2 preface, then a DATA frame on stream 0 (RFC 9113 6.1: a connection error).
        let h2 = served_error(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\0\0\0\0\0\0", true).await;
        assert_eq!(rejection(&*h2), Some("http2_protocol"), "{h2}: {:?}", h2.source());
        // Not a rejection: other errors, and no hyper error at all.
        assert_eq!(rejection(&std::io::Error::other("reset")), None);
    }

    #[tokio::test]
    async fn every_worker_signal_is_set_when_the_gateway_stops() {
        let (stop, shutdown) = watch::channel(false);
        let shutdowns = WorkerShutdowns::relay(shutdown, 3);
        let mut signals: Vec<_> = (0..3).map(|w| shutdowns.of(w)).collect();
        assert!(signals.iter().all(|s| !*s.borrow()), "set before the gateway stops");
        stop.send_replace(true);
        for signal in &mut signals {
            tokio::time::timeout(Duration::from_secs(5), stopped(signal)).await.expect("worker signal set");
        }
        // A signal made after the stop is set too (the relay has already run).
        assert!(*shutdowns.of(7).borrow());
    }

    #[tokio::test]
    async fn each_worker_gets_a_handle_of_every_listener() {
        let config = ConfigSource::inline("t.toml", "", ".".into());
        let listeners =
            bind(&config, &config.parse().unwrap(), &["127.0.0.1:0".parse().unwrap(), "127.0.0.1:0".parse().unwrap()]).await.unwrap();
        let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let shared = share(listeners, 3).unwrap();
        assert_eq!(shared.len(), 2);
        for (handles, addr) in shared.iter().zip(&addrs) {
            assert_eq!(handles.len(), 3);
            assert!(handles.iter().all(|h| h.local_addr().unwrap() == *addr), "one socket, three handles");
        }
        // A connection to the socket is accepted on any of its handles.
        let _client = std::net::TcpStream::connect(addrs[0]).unwrap();
        let last = &shared[0][2];
        last.set_nonblocking(false).unwrap();
        assert!(last.accept().is_ok());
    }
}
