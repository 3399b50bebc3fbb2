//! The compiled-component cache: a component compiled once is loaded in milliseconds by every
//! later start (Python and JavaScript components take seconds to compile).
//!
//! An entry is named by the SHA-256 of the `.wasm` and a hash of the engine's compatibility
//! (wasmtime version, target, configuration). It holds wasmtime's serialized component followed
//! by a trailer: the CRC-32 of those bytes and the format's magic, [`MAGIC`]. A load checks the
//! trailer, then maps the file (`Component::deserialize_file`): the code and the guests' initial
//! memory images are used from the page cache, not copied. An entry that fails the check or does
//! not deserialize is recompiled and replaced. Entries are written to a temporary file and
//! renamed into place, and never written again, so processes sharing the directory never see
//! half an entry and a mapped entry never changes under its reader.

use std::hash::{Hash, Hasher};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use sha2::{Digest, Sha256};

use crate::engine::Runtime;

/// The last four bytes of an entry of this format.
const MAGIC: &[u8; 4] = b"KWC2";

/// The trailer: CRC-32 (little-endian) and [`MAGIC`].
const TRAILER: usize = 8;

/// Reads `file` in blocks of a reused buffer (no allocation the size of the file), handing each
/// to `f`, up to `len` bytes.
fn each_block(mut file: impl Read, mut len: u64, mut f: impl FnMut(&[u8])) -> std::io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    while len > 0 {
        let want = buf.len().min(usize::try_from(len).unwrap_or(usize::MAX));
        let n = file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        f(&buf[..n]);
        len -= n as u64;
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The entry path of the component file at `wasm`.
///
/// # Errors
/// The file cannot be read.
pub(crate) fn entry(runtime: &Runtime, dir: &Path, wasm: &Path) -> std::io::Result<PathBuf> {
    let file = std::fs::File::open(wasm)?;
    let len = file.metadata()?.len();
    let mut sha = Sha256::new();
    each_block(file, len, |b| sha.update(b))?;
    let mut h = std::hash::DefaultHasher::new();
    runtime.engine.precompile_compatibility_hash().hash(&mut h);
    Ok(dir.join(format!("{}-{:016x}.cwasm", hex(&sha.finalize()), h.finish())))
}

/// Checks an entry's trailer against its bytes; the reason it fails.
fn check(path: &Path) -> Result<(), String> {
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let Some(body) = len.checked_sub(TRAILER as u64) else { return Err("truncated".into()) };
    let mut crc = crc32fast::Hasher::new();
    each_block(&mut file, body, |b| crc.update(b)).map_err(|e| e.to_string())?;
    let mut trailer = [0u8; TRAILER];
    file.read_exact(&mut trailer).map_err(|e| e.to_string())?;
    if &trailer[4..] != MAGIC {
        return Err("not an entry of this format".into());
    }
    if trailer[..4] != crc.finalize().to_le_bytes() {
        return Err("fails its checksum".into());
    }
    Ok(())
}

/// Loads an entry; `None` when absent or invalid (the reason is logged).
pub(crate) fn load(runtime: &Runtime, path: &Path) -> Option<wasmtime::component::Component> {
    if !path.exists() {
        return None;
    }
    if let Err(why) = check(path) {
        tracing::warn!(path = %path.display(), "compiled cache entry {why}: recompiling");
        return None;
    }
    // SAFETY: the file was produced by `Component::serialize` of an engine with the same
    // compatibility hash (it is in the file name), is unmodified (checked above), and is never
    // written again once renamed into place (a new entry replaces it by a rename: the mapped
    // inode stays as it is).
    match unsafe { wasmtime::component::Component::deserialize_file(&runtime.engine, path) } {
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
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes.extend_from_slice(MAGIC);
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
