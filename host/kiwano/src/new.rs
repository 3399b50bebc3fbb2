//! `kiwano new <name> --lang rust|python|js`: a project that builds and runs as it is, in any
//! directory — one frontend server type named after the project, one acceptor, two handlers to
//! start from, and a README of its own. Guests build against this source tree's SDKs (its
//! path is written into the project), with the language's own tools.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The languages a project can be created in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// A Rust crate (cargo, the `wasm32-wasip2` target).
    Rust,
    /// A Python module (componentize-py).
    Python,
    /// A JavaScript module (componentize-js).
    Js,
}

/// The Kiwano source tree this binary was built from (holding `guest-sdk/` and `wit/`).
fn kiwano_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("..").canonicalize().unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

/// Creates the project `dir` (its last component names the server type).
///
/// # Errors
/// A name that is not a server type name (`[a-z][a-z0-9_]*`), a directory that exists and is
/// not empty, a file that cannot be written.
pub fn create(dir: &Path, lang: Lang) -> anyhow::Result<()> {
    let name = dir.file_name().and_then(|n| n.to_str()).context("the project needs a directory name")?.to_owned();
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase()) && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        bail!("{name:?}: a project's name is its server type's: a lowercase letter, then lowercase letters, digits or _");
    }
    if dir.exists() && std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} exists and is not empty", dir.display());
    }
    let root = kiwano_root();
    let files = match lang {
        Lang::Rust => rust(&name, &root),
        Lang::Python => python(&name, &root),
        Lang::Js => js(&name, &root),
    };
    for (path, text) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!("created {} ({lang:?}): cd {} && kiwano run .", dir.display(), dir.display());
    Ok(())
}

/// `kiwano.toml`, shared by every language but for the component and its build.
fn config(name: &str, component: &str, build: &str, sources: &str) -> String {
    format!(
        r#"# The project `{name}`: one frontend server type, `{name}`, with one TCP acceptor.
# Run: kiwano run .   (builds the component when its sources change, then serves)
# Every key and its default: host/server/CONFIG.md in the Kiwano repository.

[servers.{name}]
frontend = true
component = "{component}"
build = "{build}"
sources = [{sources}]

[[servers.{name}.acceptors]]
kind = "tcp"
address = "0.0.0.0:3250"
"#
    )
}

fn readme(name: &str, lang: &str, layout: &str, test: &str) -> String {
    format!(
        r#"# {name}

A Kiwano project: one frontend server type, `{name}`, written in {lang}, serving Pitaya clients
over TCP on port 3250.

```sh
kiwano run .
```

builds the component when its sources change and serves. Its handlers:

- `{name}.hello` (request, `{{"name":"…"}}`) answers `{{"message":"hello …"}}` and keeps the name
  in the session's data;
- `{name}.count` (request) counts the calls of this session: `{{"count":1}}`, `{{"count":2}}`…

{layout}

Test the handlers without a server: {test}

Add handlers next to these, set limits and acceptors in `kiwano.toml` (every key is in Kiwano's
`host/server/CONFIG.md`), and reload a changed component while players stay connected with
`kiwano run . --watch`.
"#
    )
}

fn rust(name: &str, root: &Path) -> Vec<(PathBuf, String)> {
    let sdk = root.join("guest-sdk");
    let crate_name = format!("{name}-guest").replace('_', "-");
    let wasm = format!("guest/target/wasm32-wasip2/release/{}.wasm", crate_name.replace('-', "_"));
    let cargo = format!(
        r#"[package]
name = "{crate_name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
kiwano-guest = {{ path = "{sdk}" }}
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"

[profile.release]
opt-level = "s"
strip = true

# A workspace of its own, wherever the project lives.
[workspace]
"#,
        sdk = sdk.display()
    );
    let lib = format!(
        r#"//! The `{name}` server type.

use kiwano_guest::{{Context, Error, Server}};
use serde::Deserialize;
use serde_json::{{Value, json}};

#[derive(Deserialize)]
struct Hello {{
    name: String,
}}

fn hello(ctx: &Context, req: Hello) -> Result<Value, Error> {{
    ctx.set("name", &req.name)?;
    Ok(json!({{"message": format!("hello {{}}", req.name)}}))
}}

fn count(ctx: &Context, _: Value) -> Result<Value, Error> {{
    let count = ctx.get::<u64>("count").unwrap_or(0) + 1;
    ctx.set("count", &count)?;
    Ok(json!({{"count": count}}))
}}

fn server() -> Server {{
    Server::new().request("{name}.hello", hello).request("{name}.count", count)
}}

kiwano_guest::export!(server);

#[cfg(test)]
mod tests {{
    use kiwano_guest::testing::MockSession;

    use super::*;

    #[test]
    fn hello_then_count() {{
        let (s, session) = (server(), MockSession::new(1));
        let r: Value = s.call_json(&session, "{name}.hello", &json!({{"name": "ada"}})).unwrap();
        assert_eq!(r, json!({{"message": "hello ada"}}));
        let r: Value = s.call_json(&session, "{name}.count", &json!({{}})).unwrap();
        assert_eq!(r, json!({{"count": 1}}));
    }}
}}
"#
    );
    vec![
        ("kiwano.toml".into(), config(name, &wasm, "cd guest && cargo build --release --target wasm32-wasip2", r#""guest/src", "guest/Cargo.toml""#)),
        ("guest/Cargo.toml".into(), cargo),
        ("guest/src/lib.rs".into(), lib),
        (".gitignore".into(), "guest/target/\n.kiwano/\n".into()),
        ("README.md".into(), readme(name, "Rust", "The guest is the crate in `guest/` (`src/lib.rs`), built for `wasm32-wasip2` (`rustup target add wasm32-wasip2`).", "`cd guest && cargo test`.")),
    ]
}

fn python(name: &str, root: &Path) -> Vec<(PathBuf, String)> {
    let build = root.join("guest-sdk").join("python").join("build.sh");
    let app = format!(
        r#""""The `{name}` server type (Kiwano's Python SDK: guest-sdk/python in the Kiwano repository)."""

import kiwano

server = kiwano.Server()


@server.request("{name}.hello")
def hello(ctx, body):
    ctx.set("name", body["name"])
    return {{"message": f"hello {{body['name']}}"}}


@server.request("{name}.count")
def count(ctx, body):
    n = ctx.get("count", 0) + 1
    ctx.set("count", n)
    return {{"count": n}}


Guest = server.guest()
"#
    );
    let test = format!(
        r#"import sys
import unittest
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parent.parent / "guest"), "{sdk}"]

from kiwano import testing  # noqa: E402
import app  # noqa: E402


class HelloTest(unittest.TestCase):
    def test_hello_then_count(self):
        testing.reset()
        session = testing.MockSession(1)
        self.assertEqual(app.server.call(session, "{name}.hello", {{"name": "ada"}}), {{"message": "hello ada"}})
        self.assertEqual(app.server.call(session, "{name}.count", {{}}), {{"count": 1}})


if __name__ == "__main__":
    unittest.main()
"#,
        sdk = root.join("guest-sdk").join("python").display()
    );
    let cmd = format!("{} guest app .kiwano/{name}.wasm", build.display());
    vec![
        ("kiwano.toml".into(), config(name, &format!(".kiwano/{name}.wasm"), &cmd, r#""guest""#)),
        ("guest/app.py".into(), app),
        ("tests/test_app.py".into(), test),
        (".gitignore".into(), ".kiwano/\n__pycache__/\n".into()),
        ("README.md".into(), readme(name, "Python", "The guest is `guest/app.py`, built into a component by componentize-py 0.25 (`pip install 'componentize-py==0.25.*'`).", "`python3 -m unittest discover -s tests`.")),
    ]
}

fn js(name: &str, root: &Path) -> Vec<(PathBuf, String)> {
    let sdk = root.join("guest-sdk").join("js");
    // The SDK is copied in: componentize-js bundles the app's relative imports.
    let copy = |file: &str| std::fs::read_to_string(sdk.join(file)).unwrap_or_default();
    let app = format!(
        r#"// The `{name}` server type (Kiwano's JavaScript SDK: guest-sdk/js in the Kiwano repository;
// src/kiwano.js and src/testing.js are copies of it).
import {{ Server }} from './kiwano.js';

export const server = new Server()
  .request('{name}.hello', (ctx, body) => {{
    ctx.set('name', body.name);
    return {{ message: `hello ${{body.name}}` }};
  }})
  .request('{name}.count', (ctx) => {{
    const count = (ctx.get('count') ?? 0) + 1;
    ctx.set('count', count);
    return {{ count }};
  }});

export const guest = server.guest();
"#
    );
    let test = format!(
        r#"// `node --test test/`: the handlers against the SDK's in-memory host.
import assert from 'node:assert/strict';
import {{ test }} from 'node:test';

import {{ MockSession, reset }} from '../src/testing.js';
import {{ server }} from '../src/main.js';

test('hello then count', () => {{
  reset();
  const session = new MockSession(1);
  assert.deepEqual(server.call(session, '{name}.hello', {{ name: 'ada' }}), {{ message: 'hello ada' }});
  assert.deepEqual(server.call(session, '{name}.count', {{}}), {{ count: 1 }});
}});
"#
    );
    let cmd = format!("node {} src/main.js .kiwano/{name}.wasm", sdk.join("componentize.mjs").display());
    vec![
        ("kiwano.toml".into(), config(name, &format!(".kiwano/{name}.wasm"), &cmd, r#""src""#)),
        ("src/main.js".into(), app),
        ("src/kiwano.js".into(), copy("kiwano.js")),
        ("src/testing.js".into(), copy("testing.js")),
        ("test/app.test.mjs".into(), test),
        (".gitignore".into(), ".kiwano/\n".into()),
        ("README.md".into(), readme(name, "JavaScript", "The guest is `src/main.js`, built into a component by componentize-js 0.23 (installed in the Kiwano repository's `guest-sdk/js` by `npm ci`).", "`node --test test/`.")),
    ]
}
