//! Which log lines the gateway writes: the `RUST_LOG` spec, `info` when it is unset or unusable.
//!
//! Most specs name only targets and levels (`info`, `warn,airlock::plugin=debug`). Those are
//! served by [`Targets`], which decides once per log call site. Only a spec with span or field
//! directives (`[request{route=api}]=debug`) needs [`EnvFilter`], which tracks every span it
//! might care about: it takes a lock shared by all request workers on each span created,
//! entered, exited and closed, several times per request. Serving the default `info` that way
//! cost ~1.3 us of the gateway's CPU per proxied request (`bench/cpu_per_request.py`, 35.5 ->
//! 34.2 us; the per-request span, since a debug one, was the other ~4 us).

use std::str::FromStr;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Targets;

/// What a spec with none given, or one that cannot be read, logs.
pub const DEFAULT_SPEC: &str = "info";

/// The filter for a `RUST_LOG` spec.
#[derive(Debug)]
#[allow(clippy::large_enum_variant, reason = "made once, at startup")]
pub enum LogFilter {
    /// Targets and levels only: decided per call site.
    Static(Targets),
    /// Span or field directives: decided per span as well.
    Dynamic(EnvFilter),
}

impl LogFilter {
    /// The filter `RUST_LOG` asks for, and why it was not read if it could not be (to be logged
    /// once logging is set up).
    pub fn from_env() -> (Self, Option<String>) {
        Self::from_spec(std::env::var(EnvFilter::DEFAULT_ENV).ok().as_deref())
    }

    /// The filter for `spec` (`None`: unset). A spec of targets and levels only is static; any
    /// other is read as `EnvFilter` reads it, and one neither can read falls back to
    /// [`DEFAULT_SPEC`], with the reason.
    pub fn from_spec(spec: Option<&str>) -> (Self, Option<String>) {
        let spec = spec.unwrap_or(DEFAULT_SPEC);
        let simple = !spec.trim().is_empty()
            && spec.split(',').all(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_alphanumeric() || b"_:=-".contains(&b)));
        if simple && let Ok(targets) = Targets::from_str(spec) {
            return (Self::Static(targets), None);
        }
        match EnvFilter::try_new(spec) {
            Ok(filter) => (Self::Dynamic(filter), None),
            Err(e) => (
                Self::Static(Targets::from_str(DEFAULT_SPEC).unwrap_or_default()),
                Some(format!("RUST_LOG `{spec}` cannot be read ({e}); logging at `{DEFAULT_SPEC}`")),
            ),
        }
    }

    /// The filter as layers for a subscriber: exactly one of them is `Some`.
    pub fn into_layers(self) -> (Option<Targets>, Option<EnvFilter>) {
        match self {
            Self::Static(targets) => (Some(targets), None),
            Self::Dynamic(filter) => (None, Some(filter)),
        }
    }
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::*;

    fn static_levels(filter: &LogFilter) -> &Targets {
        match filter {
            LogFilter::Static(t) => t,
            LogFilter::Dynamic(f) => panic!("expected a static filter, got {f}"),
        }
    }

    #[test]
    fn targets_and_levels_are_static_and_mean_what_env_filter_means() {
        let unset = LogFilter::from_spec(None).0;
        let t = static_levels(&unset);
        assert!(t.would_enable("airlock::proxy", &Level::INFO));
        assert!(!t.would_enable("airlock::proxy", &Level::DEBUG));

        let mixed = LogFilter::from_spec(Some("warn,airlock::plugin=debug,hyper=error")).0;
        let t = static_levels(&mixed);
        assert!(t.would_enable("airlock::plugin", &Level::DEBUG));
        assert!(t.would_enable("airlock::proxy", &Level::WARN));
        assert!(!t.would_enable("airlock::proxy", &Level::INFO));
        assert!(!t.would_enable("hyper::proto", &Level::WARN));
        assert!(t.would_enable("hyper::proto", &Level::ERROR));

        let off = LogFilter::from_spec(Some("off")).0;
        assert!(!static_levels(&off).would_enable("airlock", &Level::ERROR));
    }

    #[test]
    fn span_and_field_directives_need_the_env_filter() {
        for spec in ["[request]=debug", "airlock[request{route=api}]=trace"] {
            assert!(matches!(LogFilter::from_spec(Some(spec)), (LogFilter::Dynamic(_), None)), "{spec}");
        }
    }

    #[test]
    fn an_unreadable_spec_falls_back_to_info() {
        let (filter, problem) = LogFilter::from_spec(Some("airlock=loud"));
        let problem = problem.expect("the fallback is reported");
        assert!(problem.contains("`airlock=loud`") && problem.contains("`info`"), "{problem}");
        let t = static_levels(&filter);
        assert!(t.would_enable("airlock", &Level::INFO));
        assert!(!t.would_enable("airlock", &Level::DEBUG));
    }
}
