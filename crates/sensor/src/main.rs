//! `attune-sensor`: polls trigger rules and emits `SensorEvent` JSON lines on stdout.

mod rules;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

use attune_common::cli::{self, CommonArgs, EXIT_FAILURE};
use attune_common::config::{self, ConfigError, Env, LogConfig, SensorConfig};
use attune_common::{Check, HealthReport, SensorEvent};

use rules::{Evaluator, FsObserver, Rule};

pub const SERVICE: &str = "attune-sensor";

#[derive(Debug, Parser)]
#[command(name = SERVICE, version, about = "attune sensor: evaluates trigger rules and emits SensorEvent JSON lines")]
#[command(after_help = "\
Rules file: a JSON array of rules, each {\"name\", \"trigger\"?, \"kind\", ...} with kind one of
  interval {every_ms}, file_exists {path}, file_changed {path},
  json_value {path, pointer, op (eq|ne|gt|ge|lt|le|exists), value}.
Without a rules file: one `heartbeat` rule (trigger core.heartbeat, every 60 s).
Environment: ATTUNE_SENSOR_NAME, ATTUNE_SENSOR_RULES, ATTUNE_SENSOR_POLL_INTERVAL_MS,
ATTUNE_LOG_LEVEL, ATTUNE_LOG_FORMAT (flags take precedence).
Exit codes: 0 ok; 1 self-check failed or output error; 2 usage or configuration error
(including an unreadable or invalid rules file).
Smoke tests: attune-sensor --self-check
             attune-sensor --once")]
struct Cli {
    /// JSON rules file [env: ATTUNE_SENSOR_RULES] [default: a heartbeat rule]
    #[arg(long, value_name = "FILE")]
    rules: Option<PathBuf>,

    /// The sensor name put in every event [env: ATTUNE_SENSOR_NAME] [default: attune-sensor]
    #[arg(long)]
    name: Option<String>,

    /// Milliseconds between polls [env: ATTUNE_SENSOR_POLL_INTERVAL_MS] [default: 1000]
    #[arg(long, value_name = "MS")]
    poll_interval_ms: Option<String>,

    /// Evaluate the rules once, print the events and exit
    #[arg(long)]
    once: bool,

    #[command(flatten)]
    common: CommonArgs,
}

struct Settings {
    sensor: SensorConfig,
    rules: Vec<Rule>,
    log: LogConfig,
}

fn settings(cli: &Cli, env: &Env) -> Result<Settings, ConfigError> {
    let base = SensorConfig::from_env(env)?;
    let sensor = SensorConfig {
        name: cli
            .name
            .clone()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or(base.name),
        rules_file: cli.rules.clone().or(base.rules_file),
        poll_interval_ms: config::override_with(
            base.poll_interval_ms,
            "--poll-interval-ms",
            cli.poll_interval_ms.as_deref(),
            config::parse_poll_interval_ms,
        )?,
    };
    let rules = match &sensor.rules_file {
        None => rules::default_rules(),
        Some(path) => {
            let var = if cli.rules.is_some() {
                "--rules"
            } else {
                config::SENSOR_RULES
            };
            rules::load_rules(path)
                .map_err(|reason| ConfigError::new(var, path.display().to_string(), reason))?
        }
    };
    Ok(Settings {
        sensor,
        rules,
        log: cli.common.log_config(env)?,
    })
}

fn self_check(settings: &Result<Settings, ConfigError>) -> HealthReport {
    let checks = match settings {
        Ok(s) => vec![
            Check::ok(
                "config",
                format!(
                    "name={} poll_interval_ms={}",
                    s.sensor.name, s.sensor.poll_interval_ms
                ),
            ),
            Check::ok(
                "rules",
                format!(
                    "{} rule(s) from {}: {}",
                    s.rules.len(),
                    s.sensor
                        .rules_file
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "defaults".into()),
                    s.rules
                        .iter()
                        .map(|r| format!("{} ({})", r.name, r.trigger()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
        ],
        Err(err) => vec![Check::fail("config", err.to_string())],
    };
    HealthReport::new(SERVICE, attune_common::VERSION, checks)
}

/// One poll: evaluates the rules and writes the events as JSON lines.
fn poll_once(
    evaluator: &mut Evaluator,
    sensor: &str,
    started: Instant,
    out: &mut impl Write,
) -> std::io::Result<usize> {
    let now_ms = started.elapsed().as_millis() as u64;
    let firings = evaluator.poll(now_ms, &FsObserver);
    for firing in &firings {
        let event = SensorEvent::now(sensor, firing.trigger.clone(), firing.payload.clone());
        serde_json::to_writer(&mut *out, &event)?;
        out.write_all(b"\n")?;
        tracing::debug!(trigger = %firing.trigger, "event emitted");
    }
    out.flush()?;
    Ok(firings.len())
}

async fn run_loop(
    mut evaluator: Evaluator,
    sensor: String,
    interval: Duration,
) -> std::io::Result<()> {
    let started = Instant::now();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                poll_once(&mut evaluator, &sensor, started, &mut std::io::stdout().lock())?;
            }
            _ = &mut shutdown => {
                tracing::info!("shutting down");
                return Ok(());
            }
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = Env::from_process();
    let settings = settings(&cli, &env);
    if cli.common.self_check {
        return cli::finish_self_check(&self_check(&settings));
    }
    let settings = match settings {
        Ok(s) => s,
        Err(err) => return cli::config_error(SERVICE, &err),
    };
    if let Err(err) = attune_common::init_tracing(SERVICE, settings.log.level, settings.log.json) {
        eprintln!("{SERVICE}: {err}");
        return ExitCode::from(EXIT_FAILURE);
    }
    tracing::info!(
        sensor = %settings.sensor.name,
        rules = settings.rules.len(),
        poll_interval_ms = settings.sensor.poll_interval_ms,
        "sensor starting"
    );
    let mut evaluator = Evaluator::new(settings.rules);
    let result = if cli.once {
        poll_once(
            &mut evaluator,
            &settings.sensor.name,
            Instant::now(),
            &mut std::io::stdout().lock(),
        )
        .map(|_| ())
    } else {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(run_loop(
                evaluator,
                settings.sensor.name.clone(),
                Duration::from_millis(settings.sensor.poll_interval_ms),
            )),
            Err(err) => Err(err),
        }
    };
    cli::finish_output(SERVICE, result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once(SERVICE).chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn cli_shape() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_and_overrides() {
        let s = settings(&cli(&[]), &Env::default()).ok().unwrap();
        assert_eq!(s.sensor.name, "attune-sensor");
        assert_eq!(s.rules, rules::default_rules());
        assert!(self_check(&Ok(s)).is_ok());
        let env = Env::from_pairs([
            ("ATTUNE_SENSOR_NAME", "edge-1"),
            ("ATTUNE_SENSOR_POLL_INTERVAL_MS", "500"),
        ]);
        let s = settings(&cli(&["--poll-interval-ms", "250"]), &env)
            .ok()
            .unwrap();
        assert_eq!(s.sensor.name, "edge-1");
        assert_eq!(s.sensor.poll_interval_ms, 250);
        let err = settings(&cli(&["--poll-interval-ms", "1"]), &env)
            .err()
            .unwrap();
        assert_eq!(err.var, "--poll-interval-ms");
    }

    #[test]
    fn bad_rules_files_fail_the_self_check() {
        let env = Env::from_pairs([("ATTUNE_SENSOR_RULES", "/nonexistent/rules.json")]);
        let err = settings(&cli(&[]), &env).err().unwrap();
        assert_eq!(err.var, "ATTUNE_SENSOR_RULES");
        let report = self_check(&Err(err));
        assert!(!report.is_ok());
        assert!(
            report.checks[0].detail.contains("cannot read"),
            "{report:?}"
        );
    }

    #[test]
    fn once_emits_sensor_events() {
        let dir = std::env::temp_dir().join(format!("attune-sensor-main-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let marker = dir.join("marker");
        std::fs::write(&marker, "").unwrap();
        let rules_file = dir.join("rules.json");
        std::fs::write(
            &rules_file,
            serde_json::json!([
                {"name": "hb", "kind": "interval", "every_ms": 1000},
                {"name": "m", "trigger": "ops.marker", "kind": "file_exists", "path": marker},
                {"name": "never", "kind": "file_exists", "path": dir.join("absent")}
            ])
            .to_string(),
        )
        .unwrap();
        let s = settings(
            &cli(&["--rules", rules_file.to_str().unwrap(), "--name", "t"]),
            &Env::default(),
        )
        .ok()
        .unwrap();
        let mut ev = Evaluator::new(s.rules);
        let mut out = Vec::new();
        assert_eq!(
            poll_once(&mut ev, "t", Instant::now(), &mut out).unwrap(),
            2
        );
        let events: Vec<SensorEvent> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].sensor, "t");
        assert_eq!(events[0].trigger, "core.interval");
        assert_eq!(events[1].trigger, "ops.marker");
        assert_eq!(events[1].payload["rule"], "m");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
