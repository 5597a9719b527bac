//! The xtask's library: everything the commands stand on (the declaration, the plan, the
//! pipeline, the cache, the engine, processes), below them. The commands (`cmd/`) and `main.rs`
//! are the binary; Cargo keeps this library from naming them (ARCHITECTURE.md).

pub mod binaries;
pub mod cache;
pub mod cargo_log;
pub mod compose;
pub mod docker;
pub mod dockerfile;
pub mod engine;
pub mod engine_config;
pub mod engine_idle;
pub mod engine_use;
pub mod exec;
pub mod farm;
pub mod flags;
pub mod git_times;
pub mod history;
pub mod http;
pub mod pipeline;
pub mod plan;
pub mod proc;
pub mod publish;
pub mod registry;
pub mod report;
pub mod sandbox;
pub mod scale;
pub mod second_engine;
pub mod session;
pub mod target;
pub mod timings;
pub mod util;
pub mod workspace;

pub use util::{Status, UsageError};
