//! The reliability harness never rots: `kiwano reliability --smoke` runs every scenario at small
//! scale and writes its report. Behaviour is asserted by the test suite (`tests/tests/memory.rs`,
//! `guests.rs`, `liveness.rs`, `shutdown.rs`); RELIABILITY.md holds the figures at full scale.

use std::process::Command;

#[test]
fn reliability_smoke_runs_every_scenario() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::env::temp_dir().join(format!("kiwano-reliability-smoke-{}.md", std::process::id()));
    let status = Command::new(env!("CARGO_BIN_EXE_kiwano"))
        .args(["reliability", "--smoke", "--root"])
        .arg(&root)
        .arg("--out")
        .arg(&out)
        .env_remove("KIWANO_LOG")
        .status()
        .expect("kiwano reliability runs");
    assert!(status.success(), "kiwano reliability --smoke failed: {status}");
    let report = std::fs::read_to_string(&out).expect("report written");
    for scenario in [
        "announce a 1 MiB packet before the handshake",
        "floods pings",
        "send a 1 MiB handshake",
        "inflating to 1 MiB",
        "sleeps 20 s in WASI",
        "`every(1 ms)`",
        "one-hour timers",
        "lines printed to stdout",
        "its own type's single remote instance",
        "a guest error of 17 MB",
        "pomelo-style clients",
        "SIGTERM with a guest stuck",
        "a second signal",
    ] {
        assert!(report.contains(scenario), "report lacks {scenario:?}:\n{report}");
    }
    assert!(!report.contains("failed"), "{report}");
    let _ = std::fs::remove_file(out);
}
