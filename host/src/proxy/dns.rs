//! Upstream name resolution that rides out a failing DNS server: [`LastGoodResolver`], the
//! resolver of every connection an upstream makes, its health check's probes included.
//!
//! A target given by name is looked up each time a new connection to it is made (a request on
//! a pooled connection looks nothing up; a target given by IP address is never looked up), by
//! hyper-util's `getaddrinfo` resolver on the blocking pool. The addresses of each name's last
//! successful lookup are remembered, per upstream; when a lookup fails (the DNS server times out
//! or fails, or answers with no address), the connection is made to them instead, as Envoy keeps
//! a DNS cluster's hosts until a successful resolution replaces them. Each such fallback is
//! counted (`airlock_upstream_dns_fallbacks_total{upstream}`) and warned about with the host and
//! the lookup's error, at most once per name every [`FALLBACK_WARN_INTERVAL`]; the first good
//! lookup after failures says so at `info`. A name with no good lookup yet fails as its lookup
//! did.
//!
//! How old may a remembered answer be? There is no bound, as in Envoy: `getaddrinfo` gives no
//! TTL, and it reports a deleted name as it reports a DNS server that is down, so any fixed
//! bound would be a guess that turns a DNS outage longer than it into an outage of the upstream
//! just then. An address that no longer serves fails the connect as it would without the memory
//! (failover, `max_fails` and the health check apply), and the answer used is always the newest
//! the gateway was given. (The one risk, an address handed to another server, is refused by the
//! certificate check of a TLS upstream.) The memory holds one entry per target name of the
//! upstream: names come from its targets only.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use tower_service::Service;

use crate::telemetry::warn_throttle::WarnThrottle;

/// Longest a name's fallbacks go without a `warn` line while its lookups fail: every new
/// connection looks the name up, and one DNS outage should not log a line per connection.
pub const FALLBACK_WARN_INTERVAL: Duration = Duration::from_secs(10);

/// An error a resolver returns, boxed.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The resolver of one upstream's connections: `inner`'s answers (by default `getaddrinfo`'s,
/// [`LastGoodResolver::new`]), with each name's last good answer standing in for a failed
/// lookup. Clones share what they remember and what they count: an upstream hands one to every
/// worker's connector and to its health check.
#[derive(Clone)]
pub struct LastGoodResolver<R = GaiResolver> {
    inner: R,
    memory: Arc<Memory>,
}

/// What the clones of one resolver share.
struct Memory {
    /// The upstream's name, for the logs.
    upstream: Arc<str>,
    /// Each name's last good answer.
    names: Mutex<HashMap<Box<str>, Remembered>>,
    /// Failed lookups answered from `names`.
    fallbacks: AtomicU64,
}

/// A name's last good answer.
#[derive(Clone)]
struct Remembered {
    /// The addresses (port 0: the connector sets the target's).
    addrs: Arc<[SocketAddr]>,
    /// When the lookup that gave them succeeded.
    resolved_at: Instant,
    /// When the lookups began failing, if the last one failed.
    failing_since: Option<Instant>,
    /// Warnings about its fallbacks, one per [`FALLBACK_WARN_INTERVAL`].
    warnings: Arc<WarnThrottle>,
}

impl LastGoodResolver {
    /// The resolver of upstream `upstream`'s connections, over `getaddrinfo` (on the blocking
    /// pool: no lookup blocks an async worker).
    pub fn new(upstream: &str) -> Self {
        Self::with_inner(upstream, GaiResolver::new())
    }
}

impl<R> LastGoodResolver<R> {
    /// The resolver of upstream `upstream`'s connections, asking `inner` (a test's resolver that
    /// fails on cue).
    pub fn with_inner(upstream: &str, inner: R) -> Self {
        let memory = Memory { upstream: upstream.into(), names: Mutex::default(), fallbacks: AtomicU64::new(0) };
        Self { inner, memory: Arc::new(memory) }
    }

    /// Failed lookups answered with a name's last good addresses so far, by this resolver and
    /// its clones (and the one it [inherited](Self::inherit) from).
    pub fn fallbacks(&self) -> u64 {
        self.memory.fallbacks.load(Ordering::Relaxed)
    }

    /// Takes over what `previous` (the resolver of the upstream a reload replaces with this one)
    /// remembers, for names this one has not resolved itself, and its count of fallbacks: a
    /// reload while the DNS server fails does not leave the new upstream without an answer.
    pub fn inherit<P>(&self, previous: &LastGoodResolver<P>) {
        if Arc::ptr_eq(&self.memory, &previous.memory) {
            return;
        }
        let known: Vec<(Box<str>, Remembered)> =
            previous.memory.names.lock().unwrap_or_else(PoisonError::into_inner).iter().map(|(n, r)| (n.clone(), r.clone())).collect();
        let mut names = self.memory.names.lock().unwrap_or_else(PoisonError::into_inner);
        for (name, remembered) in known {
            names.entry(name).or_insert(remembered);
        }
        self.memory.fallbacks.fetch_add(previous.fallbacks(), Ordering::Relaxed);
    }
}

/// Why a name gave no address to connect to (it has no good lookup to fall back on).
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The lookup failed (as the resolver says).
    #[error(transparent)]
    Lookup(BoxError),
    /// The lookup succeeded without a single address.
    #[error("`{0}` resolved to no address")]
    NoAddress(String),
}

impl<R> Service<Name> for LastGoodResolver<R>
where
    R: Service<Name> + Clone + Send + 'static,
    R::Response: Iterator<Item = SocketAddr>,
    R::Error: Into<BoxError>,
    R::Future: Send + 'static,
{
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = ResolveError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ResolveError>> + Send>>;

    /// Always ready: the inner resolver is asked when a lookup is made (on a clone of it).
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ResolveError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let mut inner = self.inner.clone();
        let memory = self.memory.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            match lookup(&mut inner, name).await {
                Ok(addrs) if !addrs.is_empty() => Ok(memory.remember(&host, addrs).into_iter()),
                Ok(_) => memory.fall_back(&host, ResolveError::NoAddress(host.clone())).map(Vec::into_iter),
                Err(e) => memory.fall_back(&host, ResolveError::Lookup(e)).map(Vec::into_iter),
            }
        })
    }
}

/// One lookup of `name` by `inner`.
async fn lookup<R>(inner: &mut R, name: Name) -> Result<Vec<SocketAddr>, BoxError>
where
    R: Service<Name>,
    R::Response: Iterator<Item = SocketAddr>,
    R::Error: Into<BoxError>,
{
    std::future::poll_fn(|cx| inner.poll_ready(cx)).await.map_err(Into::into)?;
    Ok(inner.call(name).await.map_err(Into::into)?.collect())
}

impl Memory {
    /// Keeps `addrs` as `host`'s last good answer, and returns them.
    fn remember(&self, host: &str, addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
        let now = Instant::now();
        let recovered = {
            let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
            let known = names.entry(host.into()).or_insert_with(|| Remembered {
                addrs: Arc::from([]),
                resolved_at: now,
                failing_since: None,
                warnings: Arc::new(WarnThrottle::new(FALLBACK_WARN_INTERVAL)),
            });
            known.addrs = addrs.as_slice().into();
            known.resolved_at = now;
            known.failing_since.take()
        };
        if let Some(since) = recovered {
            tracing::info!(
                upstream = &*self.upstream,
                host,
                failed_for_ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX),
                addresses = %shown(&addrs),
                "upstream DNS lookups succeed again: connecting to the addresses they give"
            );
        }
        addrs
    }

    /// `host`'s last good addresses for a lookup that failed with `error`, warned about at most
    /// once per [`FALLBACK_WARN_INTERVAL`]; `error` when the name has none.
    fn fall_back(&self, host: &str, error: ResolveError) -> Result<Vec<SocketAddr>, ResolveError> {
        let (addrs, resolved_at, failing_since, warn) = {
            let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(known) = names.get_mut(host) else { return Err(error) };
            let failing_since = *known.failing_since.get_or_insert_with(Instant::now);
            (known.addrs.clone(), known.resolved_at, failing_since, known.warnings.record())
        };
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        if let Some(fallbacks) = warn {
            tracing::warn!(
                upstream = &*self.upstream,
                host,
                error = %crate::error::chain(&error),
                addresses = %shown(&addrs),
                resolved_s_ago = resolved_at.elapsed().as_secs(),
                failing_for_s = failing_since.elapsed().as_secs(),
                fallbacks_since_last_warning = fallbacks,
                "upstream DNS lookup failed: connecting to the addresses of its last good lookup (at most one such warning per host every 10 s)"
            );
        }
        Ok(addrs.to_vec())
    }
}

/// The IP addresses of `addrs`, comma-separated, for a log line (their port is the connector's
/// business).
fn shown(addrs: &[SocketAddr]) -> String {
    addrs.iter().map(|a| a.ip().to_string()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::io;
    use std::sync::Mutex;

    use super::*;

    /// A resolver answering from a script, one answer per lookup (any name), then failing.
    #[derive(Clone, Default)]
    struct Scripted(Arc<Mutex<VecDeque<io::Result<Vec<SocketAddr>>>>>);

    impl Scripted {
        fn new(answers: impl IntoIterator<Item = io::Result<Vec<SocketAddr>>>) -> Self {
            Self(Arc::new(Mutex::new(answers.into_iter().collect())))
        }
    }

    impl Service<Name> for Scripted {
        type Response = std::vec::IntoIter<SocketAddr>;
        type Error = io::Error;
        type Future = std::future::Ready<io::Result<Self::Response>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Name) -> Self::Future {
            let next = self.0.lock().unwrap().pop_front();
            std::future::ready(next.unwrap_or_else(|| Err(dns_down())).map(Vec::into_iter))
        }
    }

    /// What `getaddrinfo` says while the DNS server does not answer.
    fn dns_down() -> io::Error {
        io::Error::other("failed to lookup address information: Temporary failure in name resolution")
    }

    fn addrs(ips: &[&str]) -> Vec<SocketAddr> {
        ips.iter().map(|ip| SocketAddr::new(ip.parse().unwrap(), 0)).collect()
    }

    async fn lookup<R>(resolver: &mut LastGoodResolver<R>, name: &str) -> Result<Vec<SocketAddr>, ResolveError>
    where
        LastGoodResolver<R>: Service<Name, Response = std::vec::IntoIter<SocketAddr>, Error = ResolveError>,
    {
        std::future::poll_fn(|cx| resolver.poll_ready(cx)).await?;
        resolver.call(name.parse().unwrap()).await.map(Iterator::collect)
    }

    #[tokio::test]
    async fn a_failed_lookup_answers_with_the_last_good_addresses() {
        let good = addrs(&["10.0.0.1", "10.0.0.2"]);
        let mut resolver = LastGoodResolver::with_inner("api", Scripted::new([Ok(good.clone()), Err(dns_down())]));
        assert_eq!(lookup(&mut resolver, "api.internal").await.unwrap(), good);
        let fallen_back = lookup(&mut resolver, "api.internal").await;
        assert_eq!(fallen_back.ok(), Some(good), "the DNS server failing, the last answer stands");
        assert_eq!(resolver.fallbacks(), 1);
    }

    #[tokio::test]
    async fn a_new_answer_replaces_the_remembered_one() {
        let (old, new) = (addrs(&["10.0.0.1"]), addrs(&["10.0.0.9"]));
        let mut resolver = LastGoodResolver::with_inner("api", Scripted::new([Ok(old), Ok(new.clone()), Err(dns_down())]));
        lookup(&mut resolver, "api.internal").await.unwrap();
        assert_eq!(lookup(&mut resolver, "api.internal").await.unwrap(), new);
        assert_eq!(lookup(&mut resolver, "api.internal").await.ok(), Some(new));
    }

    #[tokio::test]
    async fn a_name_never_resolved_fails_as_its_lookup_did() {
        let mut resolver = LastGoodResolver::with_inner("api", Scripted::new([Ok(addrs(&["10.0.0.1"]))]));
        lookup(&mut resolver, "one.internal").await.unwrap();
        let err = lookup(&mut resolver, "two.internal").await.expect_err("nothing remembered for this name");
        assert!(err.to_string().contains("Temporary failure in name resolution"), "{err}");
        assert_eq!(resolver.fallbacks(), 0);
    }

    #[tokio::test]
    async fn an_answer_without_addresses_keeps_the_remembered_one() {
        let good = addrs(&["10.0.0.1"]);
        let mut resolver = LastGoodResolver::with_inner("api", Scripted::new([Ok(good.clone()), Ok(vec![])]));
        lookup(&mut resolver, "api.internal").await.unwrap();
        assert_eq!(lookup(&mut resolver, "api.internal").await.ok(), Some(good));
    }

    #[tokio::test]
    async fn clones_share_what_they_remember() {
        let good = addrs(&["10.0.0.1"]);
        let mut first = LastGoodResolver::with_inner("api", Scripted::new([Ok(good.clone())]));
        let mut second = first.clone();
        lookup(&mut first, "api.internal").await.unwrap();
        assert_eq!(lookup(&mut second, "api.internal").await.ok(), Some(good));
        assert_eq!(first.fallbacks(), 1, "one count for the upstream, whichever clone fell back");
    }

    #[tokio::test]
    async fn a_rebuilt_upstream_inherits_what_the_previous_resolver_remembered() {
        let good = addrs(&["10.0.0.1"]);
        let mut previous = LastGoodResolver::with_inner("api", Scripted::new([Ok(good.clone()), Err(dns_down())]));
        lookup(&mut previous, "api.internal").await.unwrap();
        lookup(&mut previous, "api.internal").await.unwrap();
        let mut rebuilt = LastGoodResolver::with_inner("api", Scripted::default());
        rebuilt.inherit(&previous);
        assert_eq!(lookup(&mut rebuilt, "api.internal").await.ok(), Some(good), "remembered across the reload");
        assert_eq!(rebuilt.fallbacks(), 2, "the previous one's count carried on");
    }

    /// Log lines as the gateway's fmt layer writes them, kept for a test to read.
    #[derive(Clone, Default)]
    struct Logs(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Logs {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Logs {
        fn lines(&self, containing: &str) -> Vec<String> {
            let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
            text.lines().filter(|l| l.contains(containing)).map(str::to_owned).collect()
        }
    }

    #[tokio::test]
    async fn fallbacks_are_warned_once_per_interval_naming_the_upstream_host_and_error_and_recovery_is_told() {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let (good, moved) = (addrs(&["10.0.0.1"]), addrs(&["10.0.0.7"]));
        let script = [Ok(good.clone())].into_iter().chain((0..5).map(|_| Err(dns_down()))).chain([Ok(moved.clone())]);
        let mut resolver = LastGoodResolver::with_inner("api", Scripted::new(script));
        lookup(&mut resolver, "api.internal").await.unwrap();
        for _ in 0..5 {
            assert_eq!(lookup(&mut resolver, "api.internal").await.ok(), Some(good.clone()));
        }
        assert_eq!(lookup(&mut resolver, "api.internal").await.ok(), Some(moved), "resolving again, the new answer");
        let recovered = logs.lines("upstream DNS lookups succeed again");
        assert!(recovered.len() == 1 && recovered[0].contains("INFO") && recovered[0].contains("10.0.0.7"), "{recovered:?}");
        let warnings = logs.lines("upstream DNS lookup failed");
        assert_eq!(warnings.len(), 1, "one warning for five fallbacks within the interval: {warnings:?}");
        let line = &warnings[0];
        assert!(line.contains("WARN") && line.contains("upstream=\"api\"") && line.contains("host=\"api.internal\""), "{line}");
        assert!(line.contains("Temporary failure in name resolution") && line.contains("10.0.0.1"), "{line}");
        assert_eq!(resolver.fallbacks(), 5, "each fallback counted, warned or not");
    }

    /// Through hyper-util's connector, as upstream connections are made: the remembered
    /// addresses get the target's port, and the connection is made although the lookup failed.
    #[tokio::test]
    async fn a_connector_connects_to_the_remembered_address_while_the_lookup_fails() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                drop(stream);
            }
        });
        let resolver = LastGoodResolver::with_inner("api", Scripted::new([Ok(addrs(&["127.0.0.1"]))]));
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new_with_resolver(resolver.clone());
        let target: http::Uri = format!("http://api.internal:{port}/").parse().unwrap();
        for attempt in ["resolved", "remembered"] {
            std::future::poll_fn(|cx| connector.poll_ready(cx)).await.unwrap();
            let connected = connector.call(target.clone()).await;
            assert!(connected.is_ok(), "{attempt}: {:?}", connected.err());
        }
        assert_eq!(resolver.fallbacks(), 1);
    }
}
