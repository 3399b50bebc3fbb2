//! `kiwano run` builds a server type's component only when it is missing or its sources changed.

use std::path::Path;

use kiwano_server::config::ServerTypeConfig;
use kiwano_server::project;

fn runs(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("runs")).unwrap_or_default().lines().count()
}

#[test]
fn builds_when_missing_or_changed_and_not_otherwise() {
    let dir = std::env::temp_dir().join(format!("kiwano-build-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("src/lib.rs"), "v1").unwrap();
    let server = ServerTypeConfig {
        component: "out/game.wasm".into(),
        build: "echo ran >> runs && mkdir -p out && cp src/lib.rs out/game.wasm".into(),
        sources: vec!["src".into()],
        ..ServerTypeConfig::default()
    };
    assert!(project::build(&dir, "game", &server).unwrap(), "first build runs");
    assert!(!project::build(&dir, "game", &server).unwrap(), "nothing changed");
    assert_eq!(runs(&dir), 1);
    // A different size: seen as a change whatever the file system's timestamp resolution.
    std::fs::write(dir.join("src/lib.rs"), "v2, longer").unwrap();
    assert!(project::build(&dir, "game", &server).unwrap(), "a changed source rebuilds");
    assert_eq!(std::fs::read_to_string(dir.join("out/game.wasm")).unwrap(), "v2, longer");
    std::fs::remove_file(dir.join("out/game.wasm")).unwrap();
    assert!(project::build(&dir, "game", &server).unwrap(), "a missing component rebuilds");
    assert_eq!(runs(&dir), 3);

    let failing = ServerTypeConfig { build: "exit 3".into(), sources: vec!["src".into(), "new".into()], ..server.clone() };
    let e = project::build(&dir, "game", &failing).unwrap_err().to_string();
    assert_eq!(e, "server type game: build command `exit 3` failed: exited with exit status: 3");
    let none = ServerTypeConfig { build: String::new(), component: "nope.wasm".into(), ..server };
    let e = project::build(&dir, "game", &none).unwrap_err().to_string();
    assert!(e.ends_with("nope.wasm does not exist and no `build` command is configured"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
