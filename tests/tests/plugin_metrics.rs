//! The `metrics` capability end to end: a real plugin (tests/plugins/metrics) adds counters,
//! gauges and histograms, and `/metrics` (parsed with an independent parser) shows them under
//! the plugin's name, with bad names and the series cap refused; a component importing the
//! capability without the grant is refused at load. Also the plugin pool gauges.

use airlock_tests::metrics::{sample, scrape};
use airlock_tests::{Gateway, HttpClient, Upstream, plugins};

fn config(grant: bool) -> String {
    let capabilities = if grant { r#"capabilities = ["metrics"]"# } else { "" };
    format!(
        r#"
[plugins.counter]
source = "{}"
{capabilities}

[upstreams.backend]
targets = ["{{upstream}}"]

[[routes]]
id = "counted"
path_prefix = "/"
upstream = "backend"
[[routes.plugins]]
plugin = "counter"
"#,
        plugins::METRICS
    )
}

#[tokio::test]
async fn plugin_metrics_are_exported_under_the_plugin_name_checked_and_bounded() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config(true), Some(&upstream)).await;
    let client = HttpClient::http1();
    for _ in 0..3 {
        assert_eq!(client.get(&gw.url("/a")).await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(client.request("POST", &gw.url("/abc"), &[], b"x").await.status, 200);
    }
    assert_eq!(client.request("GET", &gw.url("/observed/path"), &[("x-observe", "0.02")], b"").await.status, 200);

    let m = scrape(&client, &gw, None).await;
    assert_eq!(sample(&m, "airlock_custom_counter_requests_total", &[("method", "get")]), 4.0);
    assert_eq!(sample(&m, "airlock_custom_counter_requests_total", &[("method", "post")]), 2.0);
    assert_eq!(sample(&m, "airlock_custom_counter_last_path_len", &[]), "/observed/path".len() as f64);
    assert_eq!(sample(&m, "airlock_custom_counter_observed", &[]), 1.0);
    let bucket = m
        .samples
        .iter()
        .find(|s| s.metric == "airlock_custom_counter_observed")
        .and_then(|s| match &s.value {
            prometheus_parse::Value::Histogram(b) => b.iter().find(|b| b.less_than == 0.025).map(|b| b.count),
            _ => None,
        });
    assert_eq!(bucket, Some(1.0), "0.02 falls in the 0.025 bucket");

    // Names are checked; the plugin is told why.
    let bad = client.request("GET", &gw.url("/"), &[("x-metric-name", "Bad-Name")], b"").await;
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("invalid metric") && bad.text().contains("Bad-Name"), "{}", bad.text());

    // At most 256 series per plugin: 5 exist (requests x2, last_path_len, observed, and the
    // first `dynamic`), so the 252nd new label value is refused, and existing series keep working.
    let mut refused_at = None;
    for i in 0..300 {
        let label = i.to_string();
        let r = client.request("GET", &gw.url("/"), &[("x-metric-name", "dynamic"), ("x-metric-label", &label)], b"").await;
        if r.status == 400 {
            assert!(r.text().contains("too many metric series"), "{}", r.text());
            refused_at = Some(i);
            break;
        }
    }
    assert_eq!(refused_at, Some(252));
    let m = scrape(&client, &gw, None).await;
    let series = m.samples.iter().filter(|s| s.metric == "airlock_custom_counter_dynamic_total").count();
    assert_eq!(series, 252);
    assert!(sample(&m, "airlock_custom_counter_requests_total", &[("method", "get")]) > 250.0);

    // The plugin's instance pool.
    assert_eq!(sample(&m, "airlock_plugin_pool_capacity", &[("plugin", "counter")]), 16.0);
    assert!(sample(&m, "airlock_plugin_pool_idle_instances", &[("plugin", "counter")]) >= 1.0);
    gw.stop().await;
}

#[tokio::test]
async fn a_plugin_importing_metrics_without_the_grant_is_refused_at_load() {
    let err = Gateway::try_start(&config(false), None).await.err().expect("refused").to_string();
    assert!(err.contains("plugin `counter`"), "{err}");
    assert!(err.contains("airlock:plugin/metrics") && err.contains("needs capability `metrics`"), "{err}");
}
