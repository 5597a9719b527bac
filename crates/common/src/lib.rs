//! Shared building blocks of the attune services.
//!
//! * [`config`]: configuration parsed from environment variables (from any map or iterator of
//!   `(name, value)` pairs, so it is unit-testable), with errors naming the variable.
//! * [`messages`]: the serde message types the services exchange.
//! * [`health`]: the `--self-check` / `GET /health` report.
//! * [`cli`]: the CLI conventions every binary follows (`--self-check`, `--log-level`, exit codes).
//! * `telemetry` (feature `telemetry`, on by default): `init_tracing`.

pub mod cli;
pub mod config;
pub mod health;
pub mod messages;
#[cfg(feature = "telemetry")]
pub mod telemetry;

pub use config::{ConfigError, Env};
pub use health::{Check, CheckStatus, HealthReport};
pub use messages::{
    now_unix_ms, Execution, ExecutionRequest, ExecutionResult, ExecutionStatus, IdGenerator,
    Runtime, SensorEvent,
};
#[cfg(feature = "telemetry")]
pub use telemetry::init_tracing;

/// The version of the attune platform (all workspace crates share it).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
