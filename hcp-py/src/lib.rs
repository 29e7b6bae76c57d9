//! # hcp-py
//!
//! The native half of the `hcp` Python package (`hcp._hcp`), built with maturin over pyo3.
//!
//! The package is a mixed layout: `python/hcp/` holds the typed Python API (`Engine`, `Client`,
//! `AsyncEngine`, `AsyncClient`, the exception classes, `.pyi` stubs and `py.typed`); this crate
//! supplies what only Rust can do:
//!
//! - [`core::Core`]: every operation once as a Rust future over hcp-core's engine (or a running
//!   `hcp serve`), offered both as a blocking call that releases the GIL and turns Ctrl-C into
//!   `KeyboardInterrupt`, and as an asyncio awaitable (pyo3-async-runtimes) — all on one shared
//!   tokio runtime ([`runtime`]);
//! - the typed result objects (`Vm`, `Job`, `Host`, ...) with `repr`s and `to_dict()`
//!   ([`types`]);
//! - the one mapping from an HCP error to its Python exception class ([`errors`]).

pub mod backend;
pub mod core;
pub mod errors;
pub mod runtime;
pub mod spec;
pub mod types;

use pyo3::prelude::*;

/// The native module `hcp._hcp`.
#[pymodule]
fn _hcp(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<core::Core>()?;
    m.add_class::<core::JobLogs>()?;
    m.add_class::<core::AsyncLogCursor>()?;
    types::register(m)?;
    let drain = wrap_pyfunction!(runtime::drain, m)?;
    m.add("_drain", &drain)?;
    m.py()
        .import("atexit")?
        .call_method1("register", (drain,))?;
    Ok(())
}
