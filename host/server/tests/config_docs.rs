//! `CONFIG.md` documents every key of `kiwano.toml` with its real default, and nothing else.

use std::collections::BTreeMap;

use kiwano_server::config::{AcceptorConfig, Config, ServerTypeConfig};

fn flatten(prefix: &str, table: &toml::Table, out: &mut BTreeMap<String, String>) {
    for (k, v) in table {
        let key = format!("{prefix}{k}");
        match v {
            toml::Value::Table(t) if !t.is_empty() => flatten(&format!("{key}."), t, out),
            toml::Value::Table(_) => {
                out.insert(key, "{}".into());
            }
            other => {
                out.insert(key, other.to_string());
            }
        }
    }
}

fn documented() -> BTreeMap<String, String> {
    let doc = include_str!("../CONFIG.md");
    let mut keys = BTreeMap::new();
    // The key tables come before the Pitaya mapping.
    let doc = doc.split("## Coming from Pitaya").next().unwrap_or_default();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | `key` | `default` | meaning |
        if cells.len() < 4 || !cells[1].starts_with('`') || !cells[2].starts_with('`') {
            continue;
        }
        let key = cells[1].trim_matches('`').to_owned();
        let default = cells[2].trim_matches('`').to_owned();
        assert!(keys.insert(key.clone(), default).is_none(), "{key} documented twice");
    }
    keys
}

fn actual() -> BTreeMap<String, String> {
    let mut keys = BTreeMap::new();
    let mut top = toml::Table::try_from(Config::default()).expect("config serializes");
    top.remove("servers");
    flatten("", &top, &mut keys);
    let server = toml::Table::try_from(ServerTypeConfig::default()).expect("server type serializes");
    flatten("servers.<type>.", &server, &mut keys);
    keys.insert("servers.<type>.acceptors".into(), "[]".into());
    let acceptor = toml::Table::try_from(AcceptorConfig::default()).expect("acceptor serializes");
    flatten("servers.<type>.acceptors[].", &acceptor, &mut keys);
    keys
}

#[test]
fn every_key_is_documented_with_its_default() {
    let doc = documented();
    let code = actual();
    for (key, default) in &code {
        match doc.get(key) {
            None => panic!("{key} (default {default}) is not documented in CONFIG.md"),
            Some(d) => assert_eq!(d, default, "documented default of {key}"),
        }
    }
    for key in doc.keys() {
        assert!(code.contains_key(key), "CONFIG.md documents {key}, which the config does not have");
    }
}

#[test]
fn every_documented_key_has_an_environment_variable() {
    for key in actual().keys().filter(|k| !k.contains('<')) {
        let var = kiwano_server::config::env_name(key);
        assert!(var.starts_with("KIWANO_") && !var.contains('.'), "{var}");
    }
    assert_eq!(kiwano_server::config::env_name("protocol.heartbeat_interval"), "KIWANO_PROTOCOL_HEARTBEAT_INTERVAL");
}

#[test]
fn the_examples_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut examples: Vec<String> = std::fs::read_dir(&dir)
        .expect("examples/")
        .filter_map(Result::ok)
        .filter(|e| e.path().join("kiwano.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    examples.sort();
    assert!(examples.len() >= 6, "{examples:?}");
    for example in &examples {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(example).join("kiwano.toml");
        Config::load(&path, std::iter::empty()).unwrap_or_else(|e| panic!("examples/{example}: {e}"));
    }
}
