//! The operator's Prometheus files (issue 16): `ops/prometheus/prometheus.yml` and its rules pass
//! `promtool check`, the alert rules' unit tests (`promtool test rules`) pass, every alert has
//! its section in `ops/RUNBOOK.md`, every sipfront metric the rules use is one the server
//! exports, and `ops/alertmanager.yml` passes `amtool check-config`.

#![allow(clippy::unwrap_used)] // a test fails loudly where a value is missing

use sipfront_storage::testing::require_program;
use std::path::{Path, PathBuf};
use std::process::Command;

fn ops() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops")
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool").args(args).current_dir(ops().join("prometheus")).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?}: {said}");
    said
}

#[test]
fn the_prometheus_files_check_and_every_alert_passes_its_tests() {
    if !require_program("promtool", "prometheus") {
        return;
    }
    promtool(&["check", "config", "prometheus.yml"]);
    promtool(&["check", "rules", "rules/sipfront-alerts.yml", "rules/sipfront-recording.yml"]);
    let tested = promtool(&["test", "rules", "tests/alerts_test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn every_alert_has_a_runbook_section_and_uses_exported_metrics() {
    let rules = std::fs::read_to_string(ops().join("prometheus/rules/sipfront-alerts.yml")).unwrap()
        + &std::fs::read_to_string(ops().join("prometheus/rules/sipfront-recording.yml")).unwrap();
    let runbook = std::fs::read_to_string(ops().join("RUNBOOK.md")).unwrap();
    let alerts: Vec<&str> = rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")).collect();
    assert!(alerts.len() >= 10, "{alerts:?}");
    for a in &alerts {
        assert!(runbook.contains(&format!("\n## {a}\n")), "RUNBOOK.md has a section for {a}");
        assert!(rules.contains(&format!("RUNBOOK.md#{}", a.to_lowercase())), "{a} links its section");
    }
    // The metric names the server exports, from its source.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ops");
    let exported = std::fs::read_to_string(src.join("metrics.rs")).unwrap()
        + &std::fs::read_to_string(src.join("process.rs")).unwrap();
    for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
        let Some(name) = word.strip_prefix("sipfront_") else { continue };
        let base = ["_bucket", "_sum", "_count"].iter().fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
        assert!(
            exported.contains(&format!("\"sipfront_{base}")),
            "the rules use sipfront_{name}, which the server does not export"
        );
    }
}

#[test]
fn the_alertmanager_example_checks() {
    if !require_program("amtool", "prometheus-alertmanager") {
        return;
    }
    let out = Command::new("amtool").arg("check-config").arg(ops().join("alertmanager.yml")).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.contains("SUCCESS"), "amtool check-config: {said}");
}
