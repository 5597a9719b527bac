//! Tracing setup (no `env-filter`: the level comes from [`LogLevel`]).

use std::io::IsTerminal;

use tracing::level_filters::LevelFilter;

use crate::config::LogLevel;

fn level_filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Off => LevelFilter::OFF,
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    }
}

/// Installs the global subscriber: logs on stderr, as text (ANSI colours only on a terminal)
/// or as JSON lines. Fails if a global subscriber is already set.
pub fn init_tracing(service: &str, level: LogLevel, json: bool) -> Result<(), String> {
    let builder = tracing_subscriber::fmt()
        .with_max_level(level_filter(level))
        .with_writer(std::io::stderr)
        .with_ansi(!json && std::io::stderr().is_terminal());
    let result = if json {
        builder
            .json()
            .with_current_span(false)
            .with_span_list(false)
            .try_init()
    } else {
        builder.try_init()
    };
    result.map_err(|err| format!("cannot initialise tracing: {err}"))?;
    tracing::debug!(service, version = crate::VERSION, %level, json, "tracing initialised");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_once() {
        assert_eq!(level_filter(LogLevel::Debug), LevelFilter::DEBUG);
        assert!(init_tracing("attune-test", LogLevel::Off, true).is_ok());
        assert!(init_tracing("attune-test", LogLevel::Info, false).is_err());
    }
}
