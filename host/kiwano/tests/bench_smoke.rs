//! The benchmark harness never rots: `kiwano bench --smoke` runs every scenario for seconds and
//! writes its report. No speed is asserted here; BENCHMARKS.md holds the real figures.

use std::process::Command;

/// One harness at a time: each starts its own servers and load generators, and two at once
/// on a busy 2-core machine starve each other into timeouts.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn bench_smoke_runs_every_scenario() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::env::temp_dir().join(format!("kiwano-bench-smoke-{}.md", std::process::id()));
    let status = Command::new(env!("CARGO_BIN_EXE_kiwano"))
        .args(["bench", "--smoke", "--root"])
        .arg(&root)
        .arg("--out")
        .arg(&out)
        .status()
        .expect("kiwano bench runs");
    assert!(status.success(), "kiwano bench --smoke failed: {status}");
    let report = std::fs::read_to_string(&out).expect("report written");
    for heading in [
        "## 1. Echo of a 64-byte JSON body",
        "## 2. The same request forwarded",
        "## 3. Group broadcast",
        "## 4. Idle WebSocket connections",
        "## 5. Connection rate",
        "## 6. Guest call cost",
        "## 8. A hot reload under load",
        "## 9. Echo per language",
        "## 10. The cost of metrics and of traces",
    ] {
        assert!(report.contains(heading), "report lacks {heading:?}:\n{report}");
    }
    // The reload happened, was answered, and no request failed during it.
    let reload = report.lines().skip_while(|l| !l.starts_with("## 8.")).find(|l| l.starts_with("| ") && l.contains("ms |") && !l.starts_with("| ---")).unwrap_or_default();
    assert!(reload.contains("HTTP/1.1 200 OK") && reload.contains(r#""version":2"#) && reload.ends_with("| 0 |"), "{reload}");
    // Traces reached the harness's receiver when sampled, and none when not.
    let spans = |run: &str| -> u64 {
        let line = report.lines().find(|l| l.starts_with(&format!("| {run} |"))).unwrap_or_default();
        line.split('|').nth(5).and_then(|c| c.trim().parse().ok()).unwrap_or_else(|| panic!("no spans column in {line:?}"))
    };
    assert_eq!(spans("traces at 0 %"), 0, "{report}");
    assert!(spans("traces at 100 %") > 0, "{report}");
    // Every scenario ran without errors or dropped connections.
    assert!(report.contains("| tcp | 4 |") && report.contains("| ws | 8 |"), "{report}");
    let _ = std::fs::remove_file(out);
}

/// `kiwano bench-cluster --smoke` (nats-server and etcd from Debian's packages, installed by
/// tests/setup.sh): the forward across processes and raw NATS, each without errors.
#[test]
fn bench_cluster_smoke_runs_every_path() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::env::temp_dir().join(format!("kiwano-bench-cluster-smoke-{}.md", std::process::id()));
    let status = Command::new(env!("CARGO_BIN_EXE_kiwano"))
        .args(["bench-cluster", "--smoke", "--root"])
        .arg(&root)
        .arg("--out")
        .arg(&out)
        .status()
        .expect("kiwano bench-cluster runs");
    assert!(status.success(), "kiwano bench-cluster --smoke failed: {status}");
    let report = std::fs::read_to_string(&out).expect("report written");
    assert!(report.contains("## 7. A forwarded request across processes over NATS"), "{report}");
    let rows: Vec<&str> = report.lines().filter(|l| l.starts_with("| raw NATS") || l.starts_with("| Kiwano forward")).collect();
    assert_eq!(rows.len(), 3, "{report}");
    for row in rows {
        assert!(row.ends_with("| 0 |"), "errors in {row}");
    }
    let _ = std::fs::remove_file(out);
}
