//! Configuration from environment variables.
//!
//! Every service reads its settings through an [`Env`], a snapshot of `(name, value)` pairs:
//! `Env::from_process()` in the binaries, `Env::from_pairs([...])` in tests. Each concern has
//! its own struct with a `from_env(&Env)` constructor; an invalid value yields a [`ConfigError`]
//! that names the variable (or the CLI flag that overrode it). An empty value counts as unset,
//! so `docker run -e ATTUNE_API_BIND= ...` falls back to the default.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use crate::messages::Runtime;

pub const LOG_LEVEL: &str = "ATTUNE_LOG_LEVEL";
pub const LOG_FORMAT: &str = "ATTUNE_LOG_FORMAT";
pub const API_BIND: &str = "ATTUNE_API_BIND";
pub const EXECUTOR_MAX_CONCURRENCY: &str = "ATTUNE_EXECUTOR_MAX_CONCURRENCY";
pub const EXECUTOR_RUNTIMES: &str = "ATTUNE_EXECUTOR_RUNTIMES";
pub const WORKER_REQUIRE: &str = "ATTUNE_WORKER_REQUIRE";
pub const WORKER_TIMEOUT_MS: &str = "ATTUNE_WORKER_TIMEOUT_MS";
pub const SENSOR_NAME: &str = "ATTUNE_SENSOR_NAME";
pub const SENSOR_RULES: &str = "ATTUNE_SENSOR_RULES";
pub const SENSOR_POLL_INTERVAL_MS: &str = "ATTUNE_SENSOR_POLL_INTERVAL_MS";
pub const TIMER_INTERVAL_MS: &str = "ATTUNE_TIMER_INTERVAL_MS";
pub const TIMER_COUNT: &str = "ATTUNE_TIMER_COUNT";

/// An invalid configuration value; `var` is the environment variable (or CLI flag) it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub var: String,
    pub value: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(
        var: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            var: var.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid value {:?} for {}: {}",
            self.value, self.var, self.reason
        )
    }
}

impl std::error::Error for ConfigError {}

/// A snapshot of environment variables.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    /// The current process environment (variables that are not valid UTF-8 are skipped).
    pub fn from_process() -> Self {
        Self::from_pairs(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The trimmed value of `name`; `None` when unset or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// `name` parsed with `parse`, or `None` when unset.
    pub fn parse_with<T>(
        &self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match self.get(name) {
            None => Ok(None),
            Some(raw) => parse(raw)
                .map(Some)
                .map_err(|reason| ConfigError::new(name, raw, reason)),
        }
    }

    /// `name` parsed with `FromStr`, or `None` when unset.
    pub fn parse<T>(&self, name: &str) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        self.parse_with(name, |raw| raw.parse::<T>().map_err(|e| e.to_string()))
    }
}

/// Parses an integer in `min..=max`.
pub fn parse_bounded(raw: &str, min: u64, max: u64) -> Result<u64, String> {
    let n: u64 = raw
        .parse()
        .map_err(|_| format!("expected an integer between {min} and {max}"))?;
    if n < min || n > max {
        return Err(format!("expected an integer between {min} and {max}"));
    }
    Ok(n)
}

/// Applies a CLI override (`Some(raw)` from a flag such as `--bind`) on top of a value from the
/// environment; a bad flag value is reported under the flag's name.
pub fn override_with<T>(
    current: T,
    flag: &str,
    raw: Option<&str>,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    match raw {
        None => Ok(current),
        Some(raw) => parse(raw.trim()).map_err(|reason| ConfigError::new(flag, raw, reason)),
    }
}

/// Log verbosity, parsed without `env-filter`: `off`, `error`, `warn`, `info`, `debug`, `trace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl FromStr for LogLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" | "none" => Ok(Self::Off),
            "error" => Ok(Self::Error),
            "warn" | "warning" => Ok(Self::Warn),
            "info" => Ok(Self::Info),
            "debug" => Ok(Self::Debug),
            "trace" => Ok(Self::Trace),
            _ => Err("expected one of off, error, warn, info, debug, trace".to_string()),
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Off => "off",
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        })
    }
}

/// `ATTUNE_LOG_LEVEL` (default `info`) and `ATTUNE_LOG_FORMAT` (`text` or `json`, default `text`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub level: LogLevel,
    pub json: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: LogLevel::Info,
            json: false,
        }
    }
}

pub fn parse_log_format(raw: &str) -> Result<bool, String> {
    match raw.to_ascii_lowercase().as_str() {
        "json" => Ok(true),
        "text" | "plain" | "pretty" => Ok(false),
        _ => Err("expected `text` or `json`".to_string()),
    }
}

impl LogConfig {
    /// The self-check entry every service reports for its logging settings.
    pub fn check(&self) -> crate::Check {
        crate::Check::ok(
            "logging",
            format!(
                "level={} format={}",
                self.level,
                if self.json { "json" } else { "text" }
            ),
        )
    }

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let default = Self::default();
        Ok(Self {
            level: env.parse(LOG_LEVEL)?.unwrap_or(default.level),
            json: env
                .parse_with(LOG_FORMAT, parse_log_format)?
                .unwrap_or(default.json),
        })
    }
}

/// `ATTUNE_API_BIND`: the address the API listens on (default `0.0.0.0:8080`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    pub bind: SocketAddr,
}

pub const DEFAULT_API_BIND: &str = "0.0.0.0:8080";

pub fn parse_socket_addr(raw: &str) -> Result<SocketAddr, String> {
    raw.parse()
        .map_err(|_| "expected IP:PORT, e.g. 0.0.0.0:8080".to_string())
}

impl ApiConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            bind: env
                .parse_with(API_BIND, parse_socket_addr)?
                .unwrap_or_else(|| DEFAULT_API_BIND.parse().expect("valid default")),
        })
    }
}

/// `ATTUNE_EXECUTOR_MAX_CONCURRENCY` (1..=1024, default 4) and `ATTUNE_EXECUTOR_RUNTIMES`
/// (comma-separated runtimes the worker pool offers, default `shell,python,node`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorConfig {
    pub max_concurrency: usize,
    pub runtimes: Vec<Runtime>,
}

pub fn parse_max_concurrency(raw: &str) -> Result<usize, String> {
    parse_bounded(raw, 1, 1024).map(|n| n as usize)
}

impl ExecutorConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            max_concurrency: env
                .parse_with(EXECUTOR_MAX_CONCURRENCY, parse_max_concurrency)?
                .unwrap_or(4),
            runtimes: env
                .parse_with(EXECUTOR_RUNTIMES, parse_nonempty_runtime_list)?
                .unwrap_or_else(|| Runtime::ALL.to_vec()),
        })
    }
}

fn parse_nonempty_runtime_list(raw: &str) -> Result<Vec<Runtime>, String> {
    let list = Runtime::parse_list(raw)?;
    if list.is_empty() {
        return Err("expected at least one runtime".to_string());
    }
    Ok(list)
}

/// `ATTUNE_WORKER_REQUIRE` (comma-separated runtimes that must be installed; `all` for every
/// one; default none) and `ATTUNE_WORKER_TIMEOUT_MS` (per execution, default 60000).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerConfig {
    pub require: Vec<Runtime>,
    pub timeout_ms: u64,
}

pub fn parse_timeout_ms(raw: &str) -> Result<u64, String> {
    parse_bounded(raw, 1, 24 * 3600 * 1000)
}

impl WorkerConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            require: env
                .parse_with(WORKER_REQUIRE, Runtime::parse_list)?
                .unwrap_or_default(),
            timeout_ms: env
                .parse_with(WORKER_TIMEOUT_MS, parse_timeout_ms)?
                .unwrap_or(60_000),
        })
    }
}

/// `ATTUNE_SENSOR_NAME` (default `attune-sensor`), `ATTUNE_SENSOR_RULES` (path of a JSON rules
/// file; default: one heartbeat rule) and `ATTUNE_SENSOR_POLL_INTERVAL_MS` (10..=86400000,
/// default 1000).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SensorConfig {
    pub name: String,
    pub rules_file: Option<PathBuf>,
    pub poll_interval_ms: u64,
}

pub fn parse_poll_interval_ms(raw: &str) -> Result<u64, String> {
    parse_bounded(raw, 10, 24 * 3600 * 1000)
}

impl SensorConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            name: env.get(SENSOR_NAME).unwrap_or("attune-sensor").to_string(),
            rules_file: env.get(SENSOR_RULES).map(PathBuf::from),
            poll_interval_ms: env
                .parse_with(SENSOR_POLL_INTERVAL_MS, parse_poll_interval_ms)?
                .unwrap_or(1000),
        })
    }
}

/// `ATTUNE_TIMER_INTERVAL_MS` (1..=86400000, default 1000) and `ATTUNE_TIMER_COUNT`
/// (number of ticks; default unlimited).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerConfig {
    pub interval_ms: u64,
    pub count: Option<u64>,
}

pub fn parse_interval_ms(raw: &str) -> Result<u64, String> {
    parse_bounded(raw, 1, 24 * 3600 * 1000)
}

pub fn parse_count(raw: &str) -> Result<u64, String> {
    parse_bounded(raw, 1, u64::MAX)
}

impl TimerConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            interval_ms: env
                .parse_with(TIMER_INTERVAL_MS, parse_interval_ms)?
                .unwrap_or(1000),
            count: env.parse_with(TIMER_COUNT, parse_count)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn defaults_when_unset_or_empty() {
        let empty = env(&[]);
        assert_eq!(LogConfig::from_env(&empty).unwrap(), LogConfig::default());
        assert_eq!(
            ApiConfig::from_env(&env(&[(API_BIND, "  ")])).unwrap().bind,
            "0.0.0.0:8080".parse().unwrap()
        );
        let exec = ExecutorConfig::from_env(&empty).unwrap();
        assert_eq!(exec.max_concurrency, 4);
        assert_eq!(exec.runtimes, Runtime::ALL.to_vec());
        let worker = WorkerConfig::from_env(&empty).unwrap();
        assert!(worker.require.is_empty());
        assert_eq!(worker.timeout_ms, 60_000);
        let sensor = SensorConfig::from_env(&empty).unwrap();
        assert_eq!(sensor.name, "attune-sensor");
        assert_eq!(sensor.rules_file, None);
        assert_eq!(sensor.poll_interval_ms, 1000);
        let timer = TimerConfig::from_env(&empty).unwrap();
        assert_eq!(timer.interval_ms, 1000);
        assert_eq!(timer.count, None);
    }

    #[test]
    fn parses_values() {
        let e = env(&[
            (LOG_LEVEL, "DEBUG"),
            (LOG_FORMAT, "json"),
            (API_BIND, "127.0.0.1:9000"),
            (EXECUTOR_MAX_CONCURRENCY, "16"),
            (EXECUTOR_RUNTIMES, "shell, python"),
            (WORKER_REQUIRE, "python,node"),
            (TIMER_COUNT, "3"),
        ]);
        assert_eq!(
            LogConfig::from_env(&e).unwrap(),
            LogConfig {
                level: LogLevel::Debug,
                json: true
            }
        );
        assert_eq!(
            ApiConfig::from_env(&e).unwrap().bind,
            "127.0.0.1:9000".parse().unwrap()
        );
        let exec = ExecutorConfig::from_env(&e).unwrap();
        assert_eq!(exec.max_concurrency, 16);
        assert_eq!(exec.runtimes, vec![Runtime::Shell, Runtime::Python]);
        assert_eq!(
            WorkerConfig::from_env(&e).unwrap().require,
            vec![Runtime::Python, Runtime::Node]
        );
        assert_eq!(TimerConfig::from_env(&e).unwrap().count, Some(3));
    }

    #[test]
    fn errors_name_the_variable() {
        let err = LogConfig::from_env(&env(&[(LOG_LEVEL, "loud")])).unwrap_err();
        assert_eq!(err.var, LOG_LEVEL);
        assert!(err.to_string().contains("ATTUNE_LOG_LEVEL"), "{err}");
        assert!(err.to_string().contains("\"loud\""), "{err}");

        let err = ApiConfig::from_env(&env(&[(API_BIND, "localhost")])).unwrap_err();
        assert_eq!(err.var, API_BIND);

        for bad in ["0", "-1", "many", "100000"] {
            let err =
                ExecutorConfig::from_env(&env(&[(EXECUTOR_MAX_CONCURRENCY, bad)])).unwrap_err();
            assert_eq!(err.var, EXECUTOR_MAX_CONCURRENCY, "{bad}");
        }
        let err = ExecutorConfig::from_env(&env(&[(EXECUTOR_RUNTIMES, ",")])).unwrap_err();
        assert_eq!(err.var, EXECUTOR_RUNTIMES);
        let err = WorkerConfig::from_env(&env(&[(WORKER_REQUIRE, "python,ruby")])).unwrap_err();
        assert_eq!(err.var, WORKER_REQUIRE);
        assert!(err.reason.contains("ruby"), "{err}");
        let err = SensorConfig::from_env(&env(&[(SENSOR_POLL_INTERVAL_MS, "5")])).unwrap_err();
        assert_eq!(err.var, SENSOR_POLL_INTERVAL_MS);
        let err = TimerConfig::from_env(&env(&[(TIMER_INTERVAL_MS, "0")])).unwrap_err();
        assert_eq!(err.var, TIMER_INTERVAL_MS);
    }

    #[test]
    fn flag_overrides_are_reported_under_the_flag() {
        let cfg = ApiConfig::from_env(&env(&[])).unwrap();
        let bind = override_with(cfg.bind, "--bind", Some("127.0.0.1:1"), parse_socket_addr);
        assert_eq!(bind.unwrap(), "127.0.0.1:1".parse().unwrap());
        let err = override_with(cfg.bind, "--bind", Some("nope"), parse_socket_addr).unwrap_err();
        assert_eq!(err.var, "--bind");
        let same = override_with(cfg.bind, "--bind", None, parse_socket_addr).unwrap();
        assert_eq!(same, cfg.bind);
    }

    #[test]
    fn log_levels_round_trip() {
        for level in [
            LogLevel::Off,
            LogLevel::Error,
            LogLevel::Warn,
            LogLevel::Info,
            LogLevel::Debug,
            LogLevel::Trace,
        ] {
            assert_eq!(level.to_string().parse::<LogLevel>().unwrap(), level);
        }
        assert_eq!("Warning".parse::<LogLevel>().unwrap(), LogLevel::Warn);
    }
}
