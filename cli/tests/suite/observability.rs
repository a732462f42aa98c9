//! The Compose stack's observability, checked without running it (Grafana
//! cannot run here): Prometheus scrapes every flashtix role the Compose file
//! runs, and the Grafana dashboard is well formed and asks only for metrics
//! the server exports. A dashboard that names a metric nobody exports shows
//! an empty panel forever; this catches it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use flashtix_model::roles::PROCESS_NAMES;
use flashtix_server::runtime::metrics::Metrics;
use serde_json::Value;

fn repo(path: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The metric families the server exports, by name, with their type, as
/// their `# TYPE` lines say (a labelled family shows once it has a series:
/// one of each is recorded).
fn exported() -> BTreeMap<String, String> {
    let metrics = Metrics::default();
    metrics.record_order("accepted");
    metrics.payment_recorded("SUCCEEDED");
    metrics.message_handled("payments", "handled");
    metrics.http_request("/orders", "POST", 202, std::time::Duration::from_millis(1));
    metrics
        .render()
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
        .collect()
}

/// The `flashtix_*` series an expression reads.
fn series(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("flashtix_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.push(name);
    }
    names
}

/// Whether Prometheus stores `series` for one of the exported families: a
/// counter's `_total`, a histogram's `_bucket`, `_count` and `_sum`, an
/// info's `_info`, a gauge by its own name.
fn stored(series: &str, exported: &BTreeMap<String, String>) -> bool {
    let samples: &[(&str, &str)] = &[
        ("gauge", ""),
        ("counter", "_total"),
        ("histogram", "_bucket"),
        ("histogram", "_count"),
        ("histogram", "_sum"),
        ("info", "_info"),
    ];
    samples.iter().any(|(kind, suffix)| {
        series
            .strip_suffix(suffix)
            .and_then(|family| exported.get(family))
            .is_some_and(|k| k == kind)
    })
}

/// What is wrong with a dashboard, given the metric families exported and the
/// data source Grafana is provisioned with.
fn problems(
    dashboard: &Value,
    exported: &BTreeMap<String, String>,
    datasource: &str,
) -> Vec<String> {
    let mut problems = Vec::new();
    for field in ["uid", "title"] {
        if dashboard[field].as_str().is_none_or(str::is_empty) {
            problems.push(format!("no {field}"));
        }
    }
    let panels = dashboard["panels"].as_array().cloned().unwrap_or_default();
    if panels.is_empty() {
        problems.push("no panels".into());
    }
    let mut ids = BTreeSet::new();
    for panel in &panels {
        let title = panel["title"].as_str().unwrap_or("(untitled)");
        if !ids.insert(panel["id"].as_u64()) || panel["id"].as_u64().is_none() {
            problems.push(format!("{title}: missing or repeated id"));
        }
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64(), grid["w"].as_u64());
        match (x, w, grid["y"].as_u64(), grid["h"].as_u64()) {
            (Some(x), Some(w), Some(_), Some(h)) if x + w <= 24 && w > 0 && h > 0 => {}
            _ => problems.push(format!("{title}: gridPos outside the 24 columns")),
        }
        if panel["datasource"]["uid"] != datasource {
            problems.push(format!("{title}: data source is not {datasource:?}"));
        }
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("{title}: no query"));
        }
        for target in &targets {
            let expr = target["expr"].as_str().unwrap_or("");
            if expr.is_empty() || target["refId"].as_str().is_none() {
                problems.push(format!("{title}: a query without expr or refId"));
            }
            for name in series(expr) {
                if !stored(&name, exported) {
                    problems.push(format!("{title}: {name} is not exported"));
                }
            }
        }
    }
    problems
}

fn dashboard() -> Value {
    serde_json::from_str(&repo("docker/grafana/dashboards/flashtix.json"))
        .expect("the dashboard is JSON")
}

/// The uid the provisioned Prometheus data source has.
fn provisioned_datasource() -> String {
    let file = repo("docker/grafana/provisioning/datasources/prometheus.yml");
    file.lines()
        .find_map(|line| line.trim().strip_prefix("uid:"))
        .map(|uid| uid.trim().to_owned())
        .expect("the data source has a uid")
}

#[test]
fn the_dashboard_is_well_formed_and_reads_only_exported_metrics() {
    let exported = exported();
    assert_eq!(
        exported.get("flashtix_orders").map(String::as_str),
        Some("counter")
    );
    let dashboard = dashboard();
    let problems = problems(&dashboard, &exported, &provisioned_datasource());
    assert!(problems.is_empty(), "{problems:#?}");
    // It shows what an operator watches in a sale.
    let text = dashboard.to_string();
    for metric in [
        "flashtix_orders_total",
        "flashtix_order_settle_seconds_bucket",
        "flashtix_outbox_depth",
        "flashtix_messages_total",
        "flashtix_http_request_duration_seconds_bucket",
        "flashtix_build_info",
    ] {
        assert!(text.contains(metric), "no panel shows {metric}");
    }
}

/// The check above, seen failing: a panel naming a metric nobody exports, a
/// panel off the grid, a panel on another data source, a repeated id.
#[test]
fn a_broken_dashboard_is_caught() {
    let exported = exported();
    let datasource = provisioned_datasource();
    let mut broken = dashboard();
    let panels = broken["panels"].as_array_mut().unwrap();
    panels[0]["targets"][0]["expr"] = "rate(flashtix_orders_placed_total[1m])".into();
    // A family's bare name, or a counter read as a histogram, is no series.
    panels[5]["targets"][0]["expr"] = "flashtix_orders + flashtix_orders_bucket".into();
    panels[1]["gridPos"]["x"] = 20.into();
    panels[2]["datasource"]["uid"] = "elsewhere".into();
    panels[3]["id"] = panels[4]["id"].clone();
    let problems = problems(&broken, &exported, &datasource);
    let said = problems.join("\n");
    for expected in [
        "flashtix_orders_placed_total is not exported",
        "flashtix_orders is not exported",
        "flashtix_orders_bucket is not exported",
        "gridPos outside the 24 columns",
        "data source is not",
        "missing or repeated id",
    ] {
        assert!(said.contains(expected), "{expected} in {said}");
    }
}

/// Prometheus scrapes every role the Compose file runs (and the roles the
/// docker driver's drills kill are the Compose file's).
#[test]
fn prometheus_scrapes_every_role_of_the_compose_stack() {
    let compose = repo("docker-compose.yml");
    let prometheus = repo("docker/prometheus.yml");
    for role in PROCESS_NAMES {
        assert!(
            compose.contains(&format!("\n  {role}:\n")),
            "docker-compose.yml has no service {role}"
        );
        assert!(
            prometheus.contains(&format!("\"{role}:8080\"")),
            "docker/prometheus.yml does not scrape {role}"
        );
    }
}
