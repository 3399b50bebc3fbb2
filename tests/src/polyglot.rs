//! Guests written in Python and JavaScript, built from source with componentize-py and
//! componentize-js (through the build helpers of `guest-sdk/python` and `guest-sdk/js`).
//!
//! Their sources live in `tests/polyglot/<name>/`; components go to `target/polyglot/`. Each is
//! built at most once per test process, and only when it is missing or older than its sources,
//! the WIT or the build helper. `tests/setup.sh` installs the tools.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Instant, SystemTime};

use crate::root;

/// The Python echo guest (`tests/polyglot/python-echo/app.py`), built with componentize-py.
pub fn python_guest() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let build = || {
        build("python-echo", "guest-sdk/python/build.sh", |script, src, out| {
            let mut cmd = Command::new("bash");
            cmd.arg(script).arg(src).arg("app").arg(out);
            cmd
        })
    };
    BUILT.get_or_init(build).clone()
}

/// The JavaScript echo guest (`tests/polyglot/js-echo/echo.js`), built with componentize-js.
pub fn js_guest() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let build = || {
        build("js-echo", "guest-sdk/js/componentize.mjs", |script, src, out| {
            let installed = script.with_file_name("node_modules").join("@bytecodealliance/componentize-js");
            assert!(installed.is_dir(), "componentize-js is not installed: run tests/setup.sh (npm ci in guest-sdk/js)");
            let mut cmd = Command::new("node");
            cmd.arg(script).arg(src.join("echo.js")).arg(out);
            cmd
        })
    };
    BUILT.get_or_init(build).clone()
}

/// A Python guest of `tests/polyglot/<name>/app.py` written with the Kiwano Python SDK, built
/// with componentize-py (at most once per test process).
pub fn python_app(name: &'static str) -> PathBuf {
    sdk_app(name, "guest-sdk/python/build.sh", |script, src, out| {
        let mut cmd = Command::new("bash");
        cmd.arg(script).arg(src).arg("app").arg(out);
        cmd
    })
}

/// A JavaScript guest of `tests/polyglot/<name>/app.js` written with the Kiwano JavaScript
/// SDK, built with componentize-js (at most once per test process).
pub fn js_app(name: &'static str) -> PathBuf {
    sdk_app(name, "guest-sdk/js/componentize.mjs", |script, src, out| {
        let mut cmd = Command::new("node");
        cmd.arg(script).arg(src.join("app.js")).arg(out);
        cmd
    })
}

/// [`build`], at most once per test process and guest name.
fn sdk_app(name: &'static str, script: &str, command: impl FnOnce(&Path, &Path, &Path) -> Command) -> PathBuf {
    static BUILT: OnceLock<std::sync::Mutex<std::collections::HashMap<&'static str, PathBuf>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    built.entry(name).or_insert_with(|| build(name, script, command)).clone()
}

/// Builds `target/polyglot/<name>.wasm` from `tests/polyglot/<name>` with the build helper
/// `script` (relative to the repository), run as `command(script, sources, temporary output)`,
/// unless it is newer than the sources, the helper and the WIT; returns its path.
fn build(name: &str, script: &str, command: impl FnOnce(&Path, &Path, &Path) -> Command) -> PathBuf {
    let root = root();
    let src = root.join("tests").join("polyglot").join(name);
    let script = root.join(script);
    let dir = root.join("target").join("polyglot");
    let out = dir.join(format!("{name}.wasm"));
    let built_at = std::fs::metadata(&out).and_then(|m| m.modified()).ok();
    if built_at.is_some_and(|t| [&src, &script, &root.join("wit")].iter().all(|s| newest(s) <= t)) {
        return out;
    }
    std::fs::create_dir_all(&dir).expect("create target/polyglot");
    // Build beside the output and rename, so that an interrupted build leaves no partial file.
    let tmp = dir.join(format!("{name}.{}.tmp.wasm", std::process::id()));
    let started = Instant::now();
    let mut cmd = command(&script, &src, &tmp);
    // Their chatter on stdout would land in `cargo test`'s output; errors go to stderr.
    let status = cmd.current_dir(&root).stdout(Stdio::null()).status().unwrap_or_else(|e| {
        panic!("cannot run {:?} to build {name} ({e}): run tests/setup.sh", cmd.get_program())
    });
    assert!(status.success(), "building polyglot guest {name} failed ({status})");
    std::fs::rename(&tmp, &out).expect("move the component into place");
    eprintln!("built {} in {:.1?}", out.display(), started.elapsed());
    out
}

/// The latest modification time of the file `path` or of the files under the directory `path`
/// (directories' own times move when a build writes caches into them).
fn newest(path: &Path) -> SystemTime {
    let Ok(meta) = std::fs::metadata(path) else { return SystemTime::UNIX_EPOCH };
    if !meta.is_dir() {
        return meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    }
    let mut t = SystemTime::UNIX_EPOCH;
    for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
        let p = entry.path();
        // Python's bytecode caches are not sources.
        if p.file_name().is_some_and(|n| n == "__pycache__") {
            continue;
        }
        t = t.max(newest(&p));
    }
    t
}
