//! A server type's component, compiled and linked once: instances are made from it cheaply.

use std::path::Path;

use wasmtime::component::{HasSelf, Linker};

use crate::bindings::{Server, ServerPre};
use crate::cache;
use crate::engine::{Runtime, RuntimeError};
use crate::host::HostState;

/// A compiled `kiwano:server` component with all its imports resolved.
#[derive(Clone)]
pub struct Component {
    pub(crate) pre: ServerPre<HostState>,
    pub(crate) path: String,
}

impl std::fmt::Debug for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Component").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Component {
    /// Reads, compiles and links the component at `path`.
    ///
    /// # Errors
    /// An unreadable file, or a component that does not compile or does not fit the world.
    pub fn load(runtime: &Runtime, path: &Path) -> Result<Self, RuntimeError> {
        let shown = path.display().to_string();
        let read = |source| RuntimeError::Read { path: shown.clone(), source };
        let invalid = |source| RuntimeError::Invalid { path: shown.clone(), source };
        let start = std::time::Instant::now();
        let entry = match runtime.config.cache_dir.as_deref() {
            Some(dir) => Some(cache::entry(runtime, dir, path).map_err(read)?),
            None => None,
        };
        let cached = entry.as_deref().and_then(|e| cache::load(runtime, e));
        let component = match cached {
            Some(c) => {
                runtime.config.metrics.inc(&kiwano_metrics::families::COMPILED_CACHE, &["hit"]);
                tracing::info!(component = %shown, took = ?start.elapsed(), "loaded compiled component from cache");
                c
            }
            None => {
                let bytes = std::fs::read(path).map_err(read)?;
                let start = std::time::Instant::now();
                let c = wasmtime::component::Component::from_binary(&runtime.engine, &bytes).map_err(invalid)?;
                runtime.stats.compiled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                runtime.config.metrics.inc(&kiwano_metrics::families::COMPILED_CACHE, &["miss"]);
                tracing::info!(component = %shown, took = ?start.elapsed(), "compiled component");
                if let Some(e) = &entry {
                    cache::store(e, &c);
                }
                c
            }
        };
        Self::link(runtime, &component, shown.clone())
    }

    fn link(runtime: &Runtime, component: &wasmtime::component::Component, path: String) -> Result<Self, RuntimeError> {
        let invalid = |source| RuntimeError::Invalid { path: path.clone(), source };
        let mut linker: Linker<HostState> = Linker::new(&runtime.engine);
        crate::wasi::add_to_linker(&mut linker).map_err(invalid)?;
        crate::wasi::deny_unlinked(&mut linker, &runtime.engine, component).map_err(invalid)?;
        Server::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s).map_err(invalid)?;
        let pre = linker.instantiate_pre(component).map_err(invalid)?;
        let pre = ServerPre::new(pre).map_err(invalid)?;
        Ok(Self { pre, path })
    }
}
