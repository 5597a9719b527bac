//! `attune-core-timer-sensor`: a pack binary that emits one timer `SensorEvent` JSON line every
//! `--interval-ms`, `--count` times (default: forever). No async runtime, no logging stack.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;

use attune_common::cli;
use attune_common::config::{self, ConfigError, Env, TimerConfig};
use attune_common::{Check, HealthReport, SensorEvent};

pub const SERVICE: &str = "attune-core-timer-sensor";

#[derive(Debug, Parser)]
#[command(name = SERVICE, version, about = "attune core timer sensor: emits timer SensorEvents as JSON lines")]
#[command(after_help = "\
Each tick prints {\"sensor\",\"trigger\",\"payload\":{\"tick\",\"interval_ms\"},\"emitted_at_unix_ms\"};
the first tick comes one interval after start.
Environment: ATTUNE_TIMER_INTERVAL_MS, ATTUNE_TIMER_COUNT (flags take precedence).
Exit codes: 0 ok (also when stdout is closed); 1 self-check failed or output error;
2 usage or configuration error.
Smoke tests: attune-core-timer-sensor --self-check
             attune-core-timer-sensor --interval-ms 10 --count 3")]
struct Cli {
    /// Milliseconds between ticks [env: ATTUNE_TIMER_INTERVAL_MS] [default: 1000]
    #[arg(long, value_name = "MS")]
    interval_ms: Option<String>,

    /// Stop after N ticks [env: ATTUNE_TIMER_COUNT] [default: unlimited]
    #[arg(long, value_name = "N")]
    count: Option<String>,

    /// The sensor name put in every event
    #[arg(long, default_value = "core.timer")]
    sensor: String,

    /// The trigger put in every event
    #[arg(long, default_value = "core.intervaltimer")]
    trigger: String,

    /// Validate the configuration, print a JSON health report on stdout and exit
    /// (0 healthy, 1 a check failed)
    #[arg(long)]
    self_check: bool,
}

fn settings(cli: &Cli, env: &Env) -> Result<TimerConfig, ConfigError> {
    let base = TimerConfig::from_env(env)?;
    Ok(TimerConfig {
        interval_ms: config::override_with(
            base.interval_ms,
            "--interval-ms",
            cli.interval_ms.as_deref(),
            config::parse_interval_ms,
        )?,
        count: config::override_with(base.count, "--count", cli.count.as_deref(), |raw| {
            config::parse_count(raw).map(Some)
        })?,
    })
}

fn self_check(cli: &Cli, settings: &Result<TimerConfig, ConfigError>) -> HealthReport {
    let checks = match settings {
        Ok(t) => vec![Check::ok(
            "config",
            format!(
                "interval_ms={} count={} sensor={} trigger={}",
                t.interval_ms,
                t.count
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "unlimited".into()),
                cli.sensor,
                cli.trigger
            ),
        )],
        Err(err) => vec![Check::fail("config", err.to_string())],
    };
    HealthReport::new(SERVICE, attune_common::VERSION, checks)
}

/// Emits the ticks at a fixed rate (no drift: tick n is due at start + n * interval).
fn run(cli: &Cli, timer: &TimerConfig, out: &mut impl Write) -> std::io::Result<()> {
    let interval = Duration::from_millis(timer.interval_ms);
    let started = Instant::now();
    let mut tick: u64 = 0;
    while timer.count.is_none_or(|count| tick < count) {
        tick += 1;
        let due = started + interval.saturating_mul(u32::try_from(tick).unwrap_or(u32::MAX));
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let event = SensorEvent::now(
            cli.sensor.clone(),
            cli.trigger.clone(),
            json!({ "tick": tick, "interval_ms": timer.interval_ms }),
        );
        serde_json::to_writer(&mut *out, &event)?;
        out.write_all(b"\n")?;
        out.flush()?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = settings(&cli, &Env::from_process());
    if cli.self_check {
        return cli::finish_self_check(&self_check(&cli, &settings));
    }
    let timer = match settings {
        Ok(t) => t,
        Err(err) => return cli::config_error(SERVICE, &err),
    };
    // the only errors are writes to stdout
    cli::finish_output(SERVICE, run(&cli, &timer, &mut std::io::stdout().lock()))
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
        assert_eq!(
            Cli::command().render_version().trim(),
            format!("{SERVICE} {}", attune_common::VERSION)
        );
    }

    #[test]
    fn settings_env_then_flags() {
        let env = Env::from_pairs([
            ("ATTUNE_TIMER_INTERVAL_MS", "250"),
            ("ATTUNE_TIMER_COUNT", "2"),
        ]);
        let t = settings(&cli(&[]), &env).unwrap();
        assert_eq!((t.interval_ms, t.count), (250, Some(2)));
        let t = settings(&cli(&["--interval-ms", "5", "--count", "9"]), &env).unwrap();
        assert_eq!((t.interval_ms, t.count), (5, Some(9)));
        let t = settings(&cli(&[]), &Env::default()).unwrap();
        assert_eq!((t.interval_ms, t.count), (1000, None));
        let err = settings(&cli(&["--count", "0"]), &env).unwrap_err();
        assert_eq!(err.var, "--count");
        let err = settings(
            &cli(&[]),
            &Env::from_pairs([("ATTUNE_TIMER_INTERVAL_MS", "fast")]),
        )
        .unwrap_err();
        assert_eq!(err.var, "ATTUNE_TIMER_INTERVAL_MS");
        let c = cli(&[]);
        assert!(!self_check(&c, &Err(err)).is_ok());
        assert!(self_check(&c, &settings(&c, &Env::default())).is_ok());
    }

    #[test]
    fn emits_count_ticks_at_the_interval() {
        let c = cli(&["--sensor", "s", "--trigger", "t"]);
        let timer = TimerConfig {
            interval_ms: 20,
            count: Some(3),
        };
        let started = Instant::now();
        let mut out = Vec::new();
        run(&c, &timer, &mut out).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(60));
        let events: Vec<SensorEvent> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(events.len(), 3);
        assert_eq!(events[2].payload["tick"], 3);
        assert_eq!(events[0].sensor, "s");
        assert_eq!(events[0].trigger, "t");
        assert_eq!(events[0].payload["interval_ms"], 20);
        assert!(events[0].emitted_at_unix_ms <= events[2].emitted_at_unix_ms);
    }
}
