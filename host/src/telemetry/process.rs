//! The standard process metrics of the Prometheus client libraries, read when `/metrics` is
//! scraped, under their usual names (no `airlock_` prefix), so dashboards and alerts written for
//! any Prometheus-instrumented process work unchanged:
//!
//! | metric | type | from (Linux) |
//! |---|---|---|
//! | `process_cpu_seconds_total` | counter | `/proc/self/stat` `utime + stime`, in clock ticks |
//! | `process_resident_memory_bytes` | gauge | `/proc/self/stat` `rss` x the page size |
//! | `process_virtual_memory_bytes` | gauge | `/proc/self/stat` `vsize` |
//! | `process_open_fds` | gauge | entries of `/proc/self/fd` |
//! | `process_max_fds` | gauge | the soft `RLIMIT_NOFILE` (left out when unlimited) |
//! | `process_start_time_seconds` | gauge | `/proc/stat` `btime` + `/proc/self/stat` `starttime` (read once) |
//!
//! prometheus-client (the crate behind [`super::metrics`]) has no process collector, hence this
//! one. What cannot be read (no procfs: not Linux, or a sandbox hiding it) is left out of the
//! scrape, never failing it. The reads are procfs files the kernel writes on the fly (no disk),
//! but listing `/proc/self/fd` takes time in proportion to the open descriptors (a few ms at tens
//! of thousands of connections): the admin listener encodes `/metrics` on tokio's blocking pool,
//! so none of this runs on an async worker ([`crate::admin`]).

use std::sync::OnceLock;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Exposes the process metrics (module docs) at scrape time.
#[derive(Debug, Default)]
pub struct ProcessCollector;

/// What `/proc/self/stat` tells, converted to seconds and bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stat {
    /// User plus system CPU time, in seconds.
    cpu_seconds: f64,
    /// Virtual memory size, in bytes.
    virtual_bytes: u64,
    /// Resident set size, in bytes.
    resident_bytes: u64,
    /// When the process started, in seconds after boot.
    started_after_boot: f64,
}

impl Stat {
    /// Parses the text of `/proc/<pid>/stat` with `ticks` clock ticks per second and pages of
    /// `page_size` bytes; `None` if it is not in the format proc(5) describes.
    fn parse(text: &str, ticks: u64, page_size: u64) -> Option<Self> {
        // The command name (field 2) is in parentheses and may hold spaces and parentheses:
        // fields are counted after the last `)`, from field 3 (`state`) at index 0.
        let (_, rest) = text.rsplit_once(')')?;
        let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
        let field = |number: usize| -> Option<u64> { fields.get(number.checked_sub(3)?)?.parse().ok() };
        let ticks = ticks.max(1) as f64;
        Some(Self {
            cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
            started_after_boot: field(22)? as f64 / ticks,
            virtual_bytes: field(23)?,
            resident_bytes: field(24)?.saturating_mul(page_size),
        })
    }

    /// This process's, if procfs is there to say.
    fn read() -> Option<Self> {
        let text = std::fs::read_to_string("/proc/self/stat").ok()?;
        Self::parse(&text, rustix::param::clock_ticks_per_second(), rustix::param::page_size() as u64)
    }
}

/// The boot time (`btime`, seconds since the Unix epoch) in the text of `/proc/stat`.
fn boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat.lines().find_map(|line| line.strip_prefix("btime "))?.trim().parse().ok()
}

/// When this process started, in seconds since the Unix epoch: worked out once (it cannot change,
/// and `/proc/stat` is the largest file read here).
fn start_time(stat: &Stat) -> Option<f64> {
    static START: OnceLock<Option<f64>> = OnceLock::new();
    *START.get_or_init(|| {
        let boot = boot_time(&std::fs::read_to_string("/proc/stat").ok()?)?;
        Some(boot as f64 + stat.started_after_boot)
    })
}

/// Open file descriptors: the entries of `/proc/self/fd` (the one listing it included, as the
/// other Prometheus clients count).
fn open_fds() -> Option<u64> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?;
    Some(entries.filter(Result::is_ok).count() as u64)
}

/// The soft open-file limit, read now (it can be changed while the process runs); `None` when
/// unlimited.
fn max_fds() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stat = Stat::read();
        if let Some(stat) = &stat {
            let cpu = ConstCounter::new(stat.cpu_seconds);
            let metric = encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                cpu.metric_type(),
            )?;
            cpu.encode(metric)?;
        }
        let mut gauge = |name: &str, help: &str, value: Option<f64>| -> Result<(), std::fmt::Error> {
            let Some(value) = value else { return Ok(()) };
            let gauge = ConstGauge::new(value);
            let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(metric)
        };
        gauge("process_open_fds", "Number of open file descriptors", open_fds().map(|n| n as f64))?;
        gauge("process_max_fds", "Maximum number of open file descriptors", max_fds().map(|n| n as f64))?;
        gauge("process_virtual_memory_bytes", "Virtual memory size in bytes", stat.map(|s| s.virtual_bytes as f64))?;
        gauge("process_resident_memory_bytes", "Resident memory size in bytes", stat.map(|s| s.resident_bytes as f64))?;
        gauge(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds",
            stat.as_ref().and_then(start_time),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with a space and a `)` in it (proc(5): it is not escaped).
        let text = "4242 (air lock) x) S 1 4242 4242 0 -1 4194560 1200 0 0 0 250 50 0 0 20 0 9 0 123400 \
                    987654321 2048 18446744073709551615 1 1 0 0 0 0 0 4096 17664 0 0 0 17 3 0 0 0 0 0\n";
        let stat = Stat::parse(text, 100, 4096).expect("parsed");
        assert_eq!(stat, Stat { cpu_seconds: 3.0, virtual_bytes: 987_654_321, resident_bytes: 2048 * 4096, started_after_boot: 1234.0 });
        assert_eq!(Stat::parse("4242 (truncated) S 1 2 3", 100, 4096), None);
        assert_eq!(Stat::parse("no parentheses", 100, 4096), None);
    }

    #[test]
    fn the_boot_time_is_the_btime_line() {
        assert_eq!(boot_time("cpu  1 2 3\nintr 5\nbtime 1767225600\nprocesses 9\n"), Some(1_767_225_600));
        assert_eq!(boot_time("cpu  1 2 3\n"), None);
    }

    #[test]
    fn this_process_is_read_where_procfs_is() {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &{
            let mut registry = prometheus_client::registry::Registry::default();
            registry.register_collector(Box::new(ProcessCollector));
            registry
        })
        .expect("encoded");
        if !std::path::Path::new("/proc/self/stat").exists() {
            assert!(!text.contains("process_resident_memory_bytes"), "{text}");
            return;
        }
        let value = |name: &str| -> f64 {
            let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name} missing: {text}"));
            line.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("a number")
        };
        assert!(value("process_cpu_seconds_total") >= 0.0);
        assert!(value("process_resident_memory_bytes") > 0.0);
        assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
        assert!(value("process_open_fds") >= 1.0);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs_f64();
        let started = value("process_start_time_seconds");
        assert!(started <= now + 1.0 && started > now - 3600.0, "started at {started}, now {now}");
        assert!(text.contains("# TYPE process_cpu_seconds_total counter"), "{text}");
    }
}
