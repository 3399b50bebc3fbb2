//! The process-wide engine: configuration, pooling allocator and the epoch ticker.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances: the granularity of call deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Limits of the process-wide engine.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Component instances the pooling allocator holds at most, over all server types (each pool
    /// instance takes one; a rebuild briefly takes a second).
    pub max_instances: u32,
    /// The largest linear memory any instance may grow to: the hard backstop behind each server
    /// type's own memory limit.
    pub max_memory: usize,
    /// Directory of the compiled-component cache; `None`: compile every time.
    pub cache_dir: Option<PathBuf>,
    /// Bytes of native stack wasm code may use in one call; deeper recursion traps (the call
    /// fails with `PIT-500`, the instance is rebuilt). One value for the engine: wasmtime sets
    /// it per engine, not per instance.
    pub max_wasm_stack: usize,
    /// Where compiled-cache hits and misses are recorded.
    pub metrics: kiwano_metrics::Metrics,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self { max_instances: 128, max_memory: 1 << 30, cache_dir: None, max_wasm_stack: 512 << 10, metrics: kiwano_metrics::Metrics::disabled() }
    }
}

/// Counters of the runtime, for tests and metrics.
#[derive(Debug, Default)]
pub struct RuntimeStats {
    /// Components compiled from `.wasm` (cache misses, corrupt entries, no cache).
    pub compiled: AtomicU64,
    /// Components loaded from the compiled cache.
    pub cache_hits: AtomicU64,
}

/// Why the runtime or a component could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The engine configuration was refused.
    #[error("cannot create the wasm engine: {0:#}")]
    Engine(wasmtime::Error),
    /// A component file could not be read.
    #[error("cannot read component {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A component did not compile or does not match the `kiwano:server` world.
    #[error("component {path} is not a valid kiwano:server component: {source:#}")]
    Invalid {
        /// The file.
        path: String,
        /// Why.
        source: wasmtime::Error,
    },
    /// Creating or initialising an instance failed.
    #[error("server type {server_type}: {msg}")]
    Instance {
        /// The server type.
        server_type: String,
        /// Why.
        msg: String,
    },
}

/// The process-wide Wasm runtime: one engine and its epoch ticker.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) config: Arc<RuntimeConfig>,
    pub(crate) stats: Arc<RuntimeStats>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Runtime {
    /// Creates the engine and starts the epoch ticker thread (it stops when the last clone of
    /// the runtime is dropped).
    ///
    /// # Errors
    /// When wasmtime refuses the configuration (e.g. not enough address space for the pool).
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        let mut cfg = Config::new();
        cfg.wasm_component_model(true)
            // Deadlines: cheap checks at loop headers and function entries.
            .epoch_interruption(true)
            // The world is synchronous; CM-async task state would cost every call (wasmtime #12836).
            .concurrency_support(false)
            .memory_init_cow(true)
            .max_wasm_stack(config.max_wasm_stack)
            // Untrusted code is compiled by Cranelift, never by Winch, and without the
            // proposals with recent sandbox advisories (GC, component-model async: above).
            .strategy(wasmtime::Strategy::Cranelift)
            .wasm_gc(false)
            .cranelift_opt_level(wasmtime::OptLevel::Speed);
        let slots = config.max_instances.max(2);
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(slots)
            // Python and JS components hold several core instances, memories and tables each.
            .total_core_instances(slots * 8)
            .total_memories(slots * 2)
            .total_tables(slots * 4)
            .total_stacks(slots)
            .max_memories_per_component(8)
            .max_tables_per_component(16)
            // CPython's and SpiderMonkey's instances have large vmctx sizes and function tables.
            .max_component_instance_size(10 << 20)
            .max_core_instance_size(10 << 20)
            .table_elements(100_000)
            .max_memory_size(config.max_memory)
            // Reuse warm slots without returning their first pages to the kernel.
            .linear_memory_keep_resident(1 << 20)
            .table_keep_resident(64 << 10)
            .decommit_batch_size(16);
        cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&cfg).map_err(RuntimeError::Engine)?;
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("kiwano-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| RuntimeError::Engine(wasmtime::Error::msg(format!("cannot start the epoch thread: {e}"))))?;
        Ok(Self { engine, config: Arc::new(config), stats: Arc::new(RuntimeStats::default()) })
    }

    /// The runtime's counters.
    pub fn stats(&self) -> &RuntimeStats {
        &self.stats
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}
