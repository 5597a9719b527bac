//! CLI conventions shared by every attune binary.
//!
//! * `--help` / `--version` (clap; the version line is `attune-<name> 0.1.0`), exit 0.
//! * `--self-check`: validate the configuration from the environment, print a
//!   [`HealthReport`] as one JSON line on stdout, exit 0 when every check passed, else 1
//!   (each failed check is also explained on stderr).
//! * `--log-level` / `--log-format` override `ATTUNE_LOG_LEVEL` / `ATTUNE_LOG_FORMAT`;
//!   logs always go to stderr so that stdout carries only JSON output.
//! * Exit codes: 0 success, 1 failure (failed check or job), 2 usage or configuration error.

use std::process::ExitCode;

use crate::config::{self, ConfigError, Env, LogConfig};
use crate::health::HealthReport;

pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

/// Flags every binary flattens into its clap parser.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CommonArgs {
    /// Validate the configuration, print a JSON health report on stdout and exit
    /// (0 healthy, 1 a check failed)
    #[arg(long, global = true)]
    pub self_check: bool,

    /// Log level: off, error, warn, info, debug or trace [env: ATTUNE_LOG_LEVEL] [default: info]
    #[arg(long, value_name = "LEVEL", global = true)]
    pub log_level: Option<String>,

    /// Log format on stderr: text or json [env: ATTUNE_LOG_FORMAT] [default: text]
    #[arg(long, value_name = "FORMAT", global = true)]
    pub log_format: Option<String>,
}

impl CommonArgs {
    /// The log configuration: environment first, flags on top.
    pub fn log_config(&self, env: &Env) -> Result<LogConfig, ConfigError> {
        let cfg = LogConfig::from_env(env)?;
        Ok(LogConfig {
            level: config::override_with(
                cfg.level,
                "--log-level",
                self.log_level.as_deref(),
                |raw| raw.parse(),
            )?,
            json: config::override_with(
                cfg.json,
                "--log-format",
                self.log_format.as_deref(),
                config::parse_log_format,
            )?,
        })
    }
}

/// Prints the report on stdout (one JSON line) and returns exit code 0 or 1.
pub fn finish_self_check(report: &HealthReport) -> ExitCode {
    println!("{}", report.to_json());
    if report.is_ok() {
        ExitCode::from(EXIT_OK)
    } else {
        for check in report.failures() {
            eprintln!(
                "{}: self-check failed: {}: {}",
                report.service, check.name, check.detail
            );
        }
        ExitCode::from(EXIT_FAILURE)
    }
}

/// Reports an invalid configuration on stderr and returns exit code 2.
pub fn config_error(service: &str, err: &ConfigError) -> ExitCode {
    eprintln!("{service}: invalid configuration: {err}");
    ExitCode::from(EXIT_USAGE)
}

/// The exit status of a service whose output stream ended with `result`: a closed stdout
/// (e.g. `| head -1`) is a normal way to stop; any other error is reported and exits 1.
pub fn finish_output(service: &str, result: std::io::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::from(EXIT_OK),
        Err(err) => {
            eprintln!("{service}: {err}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LogLevel;
    use clap::Parser;

    #[derive(Parser)]
    #[command(name = "attune-test", version)]
    struct Cli {
        #[command(flatten)]
        common: CommonArgs,
    }

    #[test]
    fn flags_override_env() {
        let env = Env::from_pairs([("ATTUNE_LOG_LEVEL", "warn"), ("ATTUNE_LOG_FORMAT", "json")]);
        let cli = Cli::try_parse_from(["attune-test"]).unwrap();
        assert_eq!(
            cli.common.log_config(&env).unwrap(),
            LogConfig {
                level: LogLevel::Warn,
                json: true
            }
        );
        let cli = Cli::try_parse_from([
            "attune-test",
            "--log-level",
            "trace",
            "--log-format",
            "text",
            "--self-check",
        ])
        .unwrap();
        assert!(cli.common.self_check);
        assert_eq!(
            cli.common.log_config(&env).unwrap(),
            LogConfig {
                level: LogLevel::Trace,
                json: false
            }
        );
        let cli = Cli::try_parse_from(["attune-test", "--log-level", "loud"]).unwrap();
        assert_eq!(cli.common.log_config(&env).unwrap_err().var, "--log-level");
    }
}
