//! The compiled-component cache: a component compiled once is loaded in milliseconds by every
//! later start (Python and JavaScript components take seconds to compile).
//!
//! An entry is named by the SHA-256 of the `.wasm` and a hash of the engine's compatibility
//! (wasmtime version, target, configuration), and holds wasmtime's serialized component followed
//! by the SHA-256 of those bytes. An entry that fails that check or does not deserialize is
//! recompiled and replaced. Entries are written to a temporary file and renamed into place, so
//! processes sharing the directory never see half an entry.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use sha2::{Digest, Sha256};

use crate::engine::Runtime;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The entry path of a component's bytes.
pub(crate) fn entry(runtime: &Runtime, dir: &Path, wasm: &[u8]) -> PathBuf {
    let mut h = std::hash::DefaultHasher::new();
    runtime.engine.precompile_compatibility_hash().hash(&mut h);
    dir.join(format!("{}-{:016x}.cwasm", hex(&Sha256::digest(wasm)), h.finish()))
}

/// Loads an entry; `None` when absent or invalid (the reason is logged).
pub(crate) fn load(runtime: &Runtime, path: &Path) -> Option<wasmtime::component::Component> {
    let data = std::fs::read(path).ok()?;
    let Some(split) = data.len().checked_sub(32) else {
        tracing::warn!(path = %path.display(), "compiled cache entry is truncated: recompiling");
        return None;
    };
    let (body, sum) = data.split_at(split);
    if Sha256::digest(body).as_slice() != sum {
        tracing::warn!(path = %path.display(), "compiled cache entry fails its checksum: recompiling");
        return None;
    }
    // SAFETY: the bytes were produced by `Component::serialize` of an engine with the same
    // compatibility hash (it is in the file name) and are unmodified (checksum above).
    match unsafe { wasmtime::component::Component::deserialize(&runtime.engine, body) } {
        Ok(c) => {
            runtime.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
            Some(c)
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), "compiled cache entry does not load ({e:#}): recompiling");
            None
        }
    }
}

/// Stores a compiled component; failures are logged, never fatal.
pub(crate) fn store(path: &Path, component: &wasmtime::component::Component) {
    let write = || -> Result<(), String> {
        let mut bytes = component.serialize().map_err(|e| e.to_string())?;
        let sum = Sha256::digest(&bytes);
        bytes.extend_from_slice(&sum);
        let dir = path.parent().ok_or("no parent directory")?;
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let tmp = dir.join(format!(".{}.{}-{nanos}.tmp", path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(), std::process::id()));
        std::fs::write(&tmp, &bytes).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            e.to_string()
        })
    };
    if let Err(e) = write() {
        tracing::warn!(path = %path.display(), "cannot write compiled cache entry: {e}");
    }
}
