//! What the `kiwano` binary prints when it cannot start, how its log looks when redirected, and
//! the projects `kiwano new` makes.

use std::process::Command;

use kiwano_tests::process::kiwano_bin;
use kiwano_tests::*;

/// A project of the test guest whose HTTP listener is `http`.
fn project(name: &str, http: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kiwano-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = format!(
        "[app]\nhttp = \"{http}\"\n[runtime]\ncache_dir = \"{cache}\"\n[servers.testbed]\nfrontend = true\ncomponent = \"{wasm}\"\n\
         [[servers.testbed.acceptors]]\nkind = \"tcp\"\naddress = \"127.0.0.1:0\"\n",
        cache = root().join("target/test-cache").display(),
        wasm = guest("testbed-guest").display(),
    );
    std::fs::write(dir.join("kiwano.toml"), config).unwrap();
    dir
}

fn run(dir: &std::path::Path) -> (bool, String) {
    run_with(dir, &[])
}

/// `kiwano run <dir>` with `env` set (and no `KIWANO_*` of ours); whether it succeeded, and its
/// output.
fn run_with(dir: &std::path::Path, env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(kiwano_bin());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("KIWANO_") || k.starts_with("OTEL_")) {
        cmd.env_remove(k);
    }
    let out = cmd.arg("run").arg(dir).envs(env.iter().copied()).output().expect("kiwano runs");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn a_bind_error_names_the_http_listener_and_its_cause_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (ok, output) = run(&project("bind", &addr));
    assert!(!ok, "{output}");
    let want = format!("kiwano: the HTTP listener (app.http) cannot listen on {addr}: Address already in use (os error 98)");
    assert!(output.lines().any(|l| l == want), "{output}");
    assert_eq!(output.matches("Address already in use").count(), 1, "{output}");
    assert!(!output.contains("server type http"), "{output}");
    // Redirected: no terminal colour codes.
    assert!(!output.contains('\u{1b}'), "{output:?}");
}

#[test]
fn an_otlp_protocol_other_than_grpc_is_refused_naming_the_variable() {
    let dir = project("otlp", "");
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")];
    let (ok, output) = run_with(&dir, &env);
    assert!(!ok, "{output}");
    assert!(
        output.contains(r#"OTEL_EXPORTER_OTLP_PROTOCOL: "http/protobuf": Kiwano exports OTLP over grpc only (as Go Pitaya v3 does)"#),
        "{output}"
    );
}

#[test]
fn a_memory_limit_above_the_engine_maximum_is_refused_naming_both_keys() {
    let dir = project("memory", "");
    let config = std::fs::read_to_string(dir.join("kiwano.toml")).unwrap().replace("frontend = true", "frontend = true\nmemory_limit = 2147483648");
    std::fs::write(dir.join("kiwano.toml"), config).unwrap();
    let (ok, output) = run(&dir);
    assert!(!ok);
    assert!(
        output.contains("config key `servers.testbed.memory_limit`: 2147483648 bytes is more than `runtime.max_memory` (1073741824 bytes)"),
        "{output}"
    );
}

/// `kiwano new <dir> --lang …` makes a project that builds and serves as it is, anywhere.
async fn new_project_serves(lang: &str) {
    let parent = std::env::temp_dir().join(format!("kiwano-new-{lang}-{}", std::process::id()));
    // The server type is the directory's name, `hello`, whatever the language.
    let _ = std::fs::remove_dir_all(&parent);
    std::fs::create_dir_all(&parent).unwrap();
    let dir = parent.join("hello");
    let out = std::process::Command::new(kiwano_tests::process::kiwano_bin()).args(["new", "--lang", lang]).arg(&dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(dir.join("README.md").exists() && dir.join("kiwano.toml").exists());
    // Refuses to write over a project.
    let again = std::process::Command::new(kiwano_tests::process::kiwano_bin()).args(["new", "--lang", lang]).arg(&dir).output().unwrap();
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("exists and is not empty"));
    let p = kiwano_tests::process::KiwanoProcess::run_project(&dir, &["--type", "hello", "--listen", "tcp=127.0.0.1:0"]).await;
    let mut c = Client::connect(p.addr("Tcp"), Transport::Tcp, None).await.unwrap();
    c.handshake(&serde_json::json!({"sys": {}})).await.unwrap();
    assert_eq!(ok_json(&mut c, "hello.hello", serde_json::json!({"name": "ada"})).await, serde_json::json!({"message": "hello ada"}));
    assert_eq!(ok_json(&mut c, "hello.count", serde_json::json!({})).await, serde_json::json!({"count": 1}));
    assert_eq!(ok_json(&mut c, "hello.count", serde_json::json!({})).await, serde_json::json!({"count": 2}));
    drop(p);
    let _ = std::fs::remove_dir_all(&parent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kiwano_new_makes_a_rust_project_that_serves() {
    new_project_serves("rust").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kiwano_new_makes_a_python_project_that_serves() {
    new_project_serves("python").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kiwano_new_makes_a_javascript_project_that_serves() {
    new_project_serves("js").await;
}
