//! A project directory: `kiwano.toml` and the components it names, built on demand.
//!
//! A server type may declare a `build` command and the `sources` it depends on. Before serving,
//! the command runs when the component is missing or a fingerprint of the sources (paths, sizes
//! and modification times) differs from the one recorded after the last successful build in
//! `.kiwano/build-<type>.stamp`.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::config::{Config, ServerTypeConfig};

/// Why a component could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The command could not start or failed.
    #[error("server type {server_type}: build command `{command}` failed: {msg}")]
    Failed {
        /// The server type.
        server_type: String,
        /// The command.
        command: String,
        /// Why.
        msg: String,
    },
    /// No component after building (or nothing to build it with).
    #[error("server type {server_type}: component {path} does not exist{hint}")]
    Missing {
        /// The server type.
        server_type: String,
        /// The path.
        path: String,
        /// What to do.
        hint: &'static str,
    },
}

/// Builds every server type whose sources changed. Returns the types that were built.
///
/// # Errors
/// The first build that fails.
pub fn build_all(project: &Path, config: &Config) -> Result<Vec<String>, BuildError> {
    let mut built = Vec::new();
    for (name, server) in &config.servers {
        if build(project, name, server)? {
            built.push(name.clone());
        }
    }
    Ok(built)
}

/// Builds one server type if needed; true if the command ran.
///
/// # Errors
/// A failing command or a missing component.
pub fn build(project: &Path, name: &str, server: &ServerTypeConfig) -> Result<bool, BuildError> {
    let component = Config::resolve(project, &server.component);
    if server.build.is_empty() {
        return if component.exists() {
            Ok(false)
        } else {
            Err(BuildError::Missing {
                server_type: name.to_owned(),
                path: component.display().to_string(),
                hint: " and no `build` command is configured",
            })
        };
    }
    let stamp_path = project.join(".kiwano").join(format!("build-{name}.stamp"));
    let fingerprint = fingerprint(project, &server.sources, &server.build);
    let recorded = std::fs::read_to_string(&stamp_path).unwrap_or_default();
    if component.exists() && recorded.trim() == fingerprint {
        tracing::debug!(server_type = name, "component is up to date");
        return Ok(false);
    }
    tracing::info!(server_type = name, command = %server.build, "building component");
    let fail = |msg: String| BuildError::Failed { server_type: name.to_owned(), command: server.build.clone(), msg };
    let status = Command::new("sh")
        .arg("-c")
        .arg(&server.build)
        .current_dir(project)
        .status()
        .map_err(|e| fail(format!("cannot start sh: {e}")))?;
    if !status.success() {
        return Err(fail(format!("exited with {status}")));
    }
    if !component.exists() {
        return Err(BuildError::Missing {
            server_type: name.to_owned(),
            path: component.display().to_string(),
            hint: " after its build command ran",
        });
    }
    // Only a successful build records its fingerprint; failures to record just rebuild later.
    let _ = std::fs::create_dir_all(stamp_path.parent().unwrap_or(project));
    let _ = std::fs::write(&stamp_path, &fingerprint);
    Ok(true)
}

/// The fingerprint of a server type's sources and build command: what decides whether its
/// component is rebuilt (`run --watch` also remembers a failed one, not to retry it unchanged).
pub fn sources_fingerprint(project: &Path, server: &ServerTypeConfig) -> String {
    fingerprint(project, &server.sources, &server.build)
}

/// A fingerprint of the source files (path, size, mtime) and the command.
fn fingerprint(project: &Path, sources: &[String], command: &str) -> String {
    let mut files = Vec::new();
    for s in sources {
        collect(&project.join(s), &mut files);
    }
    files.sort();
    let mut h = Sha256::new();
    h.update(command.as_bytes());
    for f in files {
        if let Ok(meta) = std::fs::metadata(&f) {
            h.update(f.to_string_lossy().as_bytes());
            h.update(meta.len().to_le_bytes());
            if let Ok(t) = meta.modified().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).map_err(std::io::Error::other)) {
                h.update(t.as_nanos().to_le_bytes());
            }
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) {
    let Ok(meta) = std::fs::metadata(path) else { return };
    if meta.is_file() {
        out.push(path.to_owned());
        return;
    }
    let Ok(entries) = std::fs::read_dir(path) else { return };
    for e in entries.flatten() {
        let p = e.path();
        let skip = p.file_name().is_some_and(|n| n == "target" || n == "node_modules" || n == ".kiwano" || n == ".git");
        if !skip {
            collect(&p, out);
        }
    }
}
