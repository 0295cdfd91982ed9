//! Exercises the `metrics` capability. Every request:
//! - adds 1 to the counter `requests` labelled `method` (its method, lower-case);
//! - sets the gauge `last_path_len` to the length of its path;
//! - observes `x-observe` (a number, if that request header is there) in histogram `observed`;
//! - with `x-metric-name: <name>`, adds 1 to a counter of that name, and answers 400 with the
//!   error if the host refused it (so tests can see bad names and the series cap refused).
use airlock_sdk::{Action, Plugin, Request, export_plugin, metrics};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Config {}

struct Metrics;

impl Plugin for Metrics {
    type Config = Config;

    fn new(_: Config) -> Result<Self, String> {
        Ok(Metrics)
    }

    fn on_request(&self, req: &Request) -> Action {
        let method = req.method().to_ascii_lowercase();
        let _ = metrics::counter_add("requests", &[("method", &method)], 1);
        let _ = metrics::gauge_set("last_path_len", &[], req.path().len() as f64);
        if let Some(v) = req.header("x-observe").and_then(|v| String::from_utf8(v).ok()).and_then(|v| v.parse::<f64>().ok()) {
            let _ = metrics::histogram_observe("observed", &[], v);
        }
        if let Some(name) = req.header("x-metric-name").and_then(|v| String::from_utf8(v).ok()) {
            let label = req.header("x-metric-label").and_then(|v| String::from_utf8(v).ok()).unwrap_or_default();
            if let Err(e) = metrics::counter_add(&name, &[("l", &label)], 1) {
                return Action::text(400, format!("{e}\n"));
            }
        }
        Action::Continue
    }
}

export_plugin!(Metrics);
