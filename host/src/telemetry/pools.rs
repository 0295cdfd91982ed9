//! Pool sizes, read when `/metrics` is scraped: each plugin's warm instance pool (idle instances
//! and capacity), the sandbox's instance budget (instances alive against `runtime.max_instances`,
//! waits for a place, idle instances reclaimed) and each upstream's connection pool (connections
//! open, and the DNS lookups of its target names that fell back on their last good answer).
//! Pools register themselves when the gateway is built; the registry holds them weakly, so
//! a dropped gateway leaves nothing behind. Also the request workers' share of the client
//! connections, set once the workers start.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::proxy::counted::OpenConnections;
use crate::proxy::upstream::Upstream;
use crate::runtime::budget::InstanceBudget;
use crate::workers::ConnectionBalancer;

/// What a plugin instance pool tells about its size.
pub trait PoolStats: Send + Sync {
    /// The plugin's name (the label).
    fn plugin_name(&self) -> &str;
    /// Warm instances idle now.
    fn idle(&self) -> usize;
    /// Most idle instances kept (0 with `isolation = "request"`).
    fn capacity(&self) -> usize;
}

/// Every pool of one gateway.
#[derive(Default)]
pub struct PoolRegistry {
    plugins: Mutex<Vec<Weak<dyn PoolStats>>>,
    upstreams: Mutex<Vec<(Arc<str>, Weak<AtomicI64>)>>,
    /// Upstreams whose targets' health is reported, oldest first.
    targets: Mutex<Vec<Weak<Upstream>>>,
    budget: Mutex<Weak<InstanceBudget>>,
    workers: Mutex<Option<ConnectionBalancer>>,
}

impl PoolRegistry {
    /// Sets the sandbox whose instance budget is reported (the one the gateway serves with).
    pub fn register_budget(&self, budget: &Arc<InstanceBudget>) {
        *self.budget.lock().unwrap_or_else(PoisonError::into_inner) = Arc::downgrade(budget);
    }

    /// Sets the request workers whose client connections are reported, one gauge per worker.
    pub fn register_workers(&self, balancer: ConnectionBalancer) {
        *self.workers.lock().unwrap_or_else(PoisonError::into_inner) = Some(balancer);
    }

    /// Adds an upstream's open connection count. It is held weakly: once the upstream and all
    /// its connections are gone, it is no longer listed.
    pub fn register_upstream(&self, name: Arc<str>, open: &OpenConnections) {
        let mut upstreams = self.upstreams.lock().unwrap_or_else(PoisonError::into_inner);
        let open = open.downgrade();
        // A reload keeps an unchanged upstream: registered once, not counted twice.
        upstreams.retain(|(_, count)| count.strong_count() > 0 && !count.ptr_eq(&open));
        upstreams.push((name, open));
    }

    /// Adds an upstream whose targets are reported in or out of rotation, held weakly. The
    /// latest one of a name is reported: a reload that rebuilt it leaves the old one to its
    /// requests in flight, not to the gauge.
    pub fn register_targets(&self, upstream: &Arc<Upstream>) {
        let mut targets = self.targets.lock().unwrap_or_else(PoisonError::into_inner);
        let weak = Arc::downgrade(upstream);
        targets.retain(|t| t.strong_count() > 0 && !t.ptr_eq(&weak));
        targets.push(weak);
    }

    /// Every live upstream registered with [`Self::register_targets`], the newest of each name.
    fn live_upstreams(&self) -> Vec<Arc<Upstream>> {
        let upstreams: Vec<Arc<Upstream>> =
            self.targets.lock().unwrap_or_else(PoisonError::into_inner).iter().rev().filter_map(Weak::upgrade).collect();
        let mut seen = std::collections::BTreeSet::new();
        upstreams.into_iter().filter(|u| seen.insert(u.name.clone())).collect()
    }

    /// Each target of every live upstream (by name, the newest of a name): whether it is in
    /// rotation, and the failures counted against it.
    fn target_health(&self) -> Vec<(String, String, i64, u64)> {
        let mut out = Vec::new();
        for upstream in self.live_upstreams() {
            for (i, target) in upstream.targets.iter().enumerate() {
                out.push((upstream.name.to_string(), target.to_string(), i64::from(!upstream.target_down(i)), upstream.target_failures(i)));
            }
        }
        out.sort();
        out
    }

    /// Per live upstream (by name, the newest of a name), the failed lookups of its target
    /// names answered with their last good addresses ([`crate::proxy::dns`]).
    fn dns_fallbacks(&self) -> BTreeMap<String, u64> {
        self.live_upstreams().iter().map(|u| (u.name.to_string(), u.dns_fallbacks())).collect()
    }

    /// Open connections summed per upstream name.
    fn upstream_connections(&self) -> BTreeMap<String, i64> {
        let mut sizes: BTreeMap<String, i64> = BTreeMap::new();
        for (name, count) in self.upstreams.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            if let Some(count) = count.upgrade() {
                *sizes.entry(name.to_string()).or_default() += count.load(Ordering::Relaxed);
            }
        }
        sizes
    }

    /// Adds a plugin instance pool.
    pub fn register_plugin(&self, pool: Weak<dyn PoolStats>) {
        self.plugins.lock().unwrap_or_else(PoisonError::into_inner).push(pool);
    }

    /// (idle, capacity) summed per plugin name.
    fn plugin_sizes(&self) -> BTreeMap<String, (i64, i64)> {
        let mut sizes: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for pool in self.plugins.lock().unwrap_or_else(PoisonError::into_inner).iter().filter_map(Weak::upgrade) {
            let entry = sizes.entry(pool.plugin_name().to_owned()).or_default();
            entry.0 += pool.idle() as i64;
            entry.1 += pool.capacity() as i64;
        }
        sizes
    }
}

/// Encodes the pool gauges at scrape time.
#[derive(Debug)]
pub struct PoolCollector(pub Arc<PoolRegistry>);

impl std::fmt::Debug for PoolRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolRegistry").finish_non_exhaustive()
    }
}

/// Encodes one gauge family with a single label.
fn gauges(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: impl Iterator<Item = (String, i64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (value_label, value) in values {
        let labels = [(label, value_label)];
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Encodes one unlabelled gauge or counter.
fn single(encoder: &mut DescriptorEncoder, name: &str, help: &str, kind: MetricType, value: u64) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, kind)?;
    match kind {
        MetricType::Counter => ConstCounter::new(value).encode(metric),
        _ => ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(metric),
    }
}

impl Collector for PoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let budget = self.0.budget.lock().unwrap_or_else(PoisonError::into_inner).upgrade();
        if let Some(budget) = budget {
            let e = &mut encoder;
            let in_use = budget.in_use() as u64;
            single(e, "plugin_instances", "Plugin instances alive now, busy or idle, over all plugins", MetricType::Gauge, in_use)?;
            let limit = budget.limit() as u64;
            single(e, "plugin_instance_limit", "Most plugin instances alive at once (runtime.max_instances)", MetricType::Gauge, limit)?;
            let help = "Calls that found every instance place taken, or their entry's share of them, and waited";
            single(e, "plugin_instance_waits", help, MetricType::Counter, budget.waits())?;
            let help = "Idle warm instances dropped to make room for another plugin's";
            single(e, "plugin_instances_reclaimed", help, MetricType::Counter, budget.reclaimed())?;
        }
        let sizes = self.0.plugin_sizes();
        gauges(
            &mut encoder,
            "plugin_pool_idle_instances",
            "Warm plugin instances idle in their pools, by plugin",
            "plugin",
            sizes.iter().map(|(k, v)| (k.clone(), v.0)),
        )?;
        gauges(
            &mut encoder,
            "plugin_pool_capacity",
            "Most idle warm instances the pools keep, by plugin",
            "plugin",
            sizes.iter().map(|(k, v)| (k.clone(), v.1)),
        )?;
        let workers = self.0.workers.lock().unwrap_or_else(PoisonError::into_inner).as_ref().map(ConnectionBalancer::connections);
        gauges(
            &mut encoder,
            "worker_connections",
            "Client connections each request worker serves now, by worker (placed on the worker serving fewest)",
            "worker",
            workers.unwrap_or_default().into_iter().enumerate().map(|(i, n)| (i.to_string(), n as i64)),
        )?;
        gauges(
            &mut encoder,
            "upstream_connections",
            "Connections to upstream targets open now (in use or idle in the pool), by upstream",
            "upstream",
            self.0.upstream_connections().into_iter(),
        )?;
        let help = "1 while an upstream target is in rotation, 0 while it is out (weight 0, or marked down by failures or its health check)";
        let targets = self.0.target_health();
        let mut family = encoder.encode_descriptor("upstream_target_up", help, None, MetricType::Gauge)?;
        for (upstream, target, up, _) in &targets {
            let labels = [("upstream", upstream), ("target", target)];
            ConstGauge::new(*up).encode(family.encode_family(&labels)?)?;
        }
        let help = "Failed exchanges with an upstream target (refused, timed out, broken off, not HTTP, or a retry_on status): what max_fails counts, each failover attempt included";
        let mut family = encoder.encode_descriptor("upstream_target_failures", help, None, MetricType::Counter)?;
        for (upstream, target, _, failures) in &targets {
            let labels = [("upstream", upstream), ("target", target)];
            ConstCounter::new(*failures).encode(family.encode_family(&labels)?)?;
        }
        let help = "Failed DNS lookups of an upstream's target names (for new connections and health probes) answered with the name's last good addresses, by upstream";
        let mut family = encoder.encode_descriptor("upstream_dns_fallbacks", help, None, MetricType::Counter)?;
        for (upstream, fallbacks) in self.0.dns_fallbacks() {
            ConstCounter::new(fallbacks).encode(family.encode_family(&[("upstream", upstream)])?)?;
        }
        Ok(())
    }
}
