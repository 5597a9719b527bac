//! `attune-executor`: schedules ExecutionRequests onto worker runtimes and prints each
//! scheduling decision as a JSON line.
//!
//! Input (a file, or stdin with `-`): a JSON array, one JSON document, or JSON lines. Each item
//! is an `ExecutionRequest` (`{"action":..,"runtime":..,"code":..}`), or a completion that frees
//! a slot: `{"completed":"<id>"}` or an `ExecutionResult` as printed by `attune-worker run`.

mod scheduler;

use std::io::{BufRead, Read, Write};
use std::process::ExitCode;

use clap::Parser;
use serde_json::Value;

use attune_common::cli::{self, CommonArgs, EXIT_FAILURE};
use attune_common::config::{self, ConfigError, Env, ExecutorConfig, LogConfig};
use attune_common::{Check, ExecutionRequest, ExecutionResult, HealthReport, Runtime};

use scheduler::{Decision, Scheduler};

pub const SERVICE: &str = "attune-executor";

#[derive(Debug, Parser)]
#[command(name = SERVICE, version, about = "attune executor: schedules execution requests onto worker runtimes")]
#[command(after_help = "\
Without --once, reads JSON lines from stdin until end of input.
Environment: ATTUNE_EXECUTOR_MAX_CONCURRENCY, ATTUNE_EXECUTOR_RUNTIMES, ATTUNE_LOG_LEVEL,
ATTUNE_LOG_FORMAT (flags take precedence).
Exit codes: 0 ok; 1 self-check failed, unreadable or invalid input; 2 usage or configuration error.
Smoke test: attune-executor --self-check
            echo '{\"action\":\"a\",\"runtime\":\"shell\",\"code\":\"true\"}' | attune-executor --once -")]
struct Cli {
    /// Schedule every request in FILE (`-` for stdin), print the decisions and exit
    #[arg(long, value_name = "FILE|-")]
    once: Option<String>,

    /// Executions running at once [env: ATTUNE_EXECUTOR_MAX_CONCURRENCY] [default: 4]
    #[arg(long, value_name = "N")]
    max_concurrency: Option<String>,

    /// Runtimes the worker pool offers, comma-separated or `all`
    /// [env: ATTUNE_EXECUTOR_RUNTIMES] [default: shell,python,node]
    #[arg(long, value_name = "LIST")]
    runtimes: Option<String>,

    #[command(flatten)]
    common: CommonArgs,
}

struct Settings {
    executor: ExecutorConfig,
    log: LogConfig,
}

fn settings(cli: &Cli, env: &Env) -> Result<Settings, ConfigError> {
    let base = ExecutorConfig::from_env(env)?;
    let executor = ExecutorConfig {
        max_concurrency: config::override_with(
            base.max_concurrency,
            "--max-concurrency",
            cli.max_concurrency.as_deref(),
            config::parse_max_concurrency,
        )?,
        runtimes: config::override_with(
            base.runtimes,
            "--runtimes",
            cli.runtimes.as_deref(),
            |raw| {
                let list = Runtime::parse_list(raw)?;
                if list.is_empty() {
                    Err("expected at least one runtime".to_string())
                } else {
                    Ok(list)
                }
            },
        )?,
    };
    Ok(Settings {
        executor,
        log: cli.common.log_config(env)?,
    })
}

fn runtimes_text(runtimes: &[Runtime]) -> String {
    runtimes
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn self_check(settings: &Result<Settings, ConfigError>) -> HealthReport {
    let checks = match settings {
        Ok(s) => vec![
            Check::ok(
                "config",
                format!(
                    "max_concurrency={} runtimes={}",
                    s.executor.max_concurrency,
                    runtimes_text(&s.executor.runtimes)
                ),
            ),
            s.log.check(),
        ],
        Err(err) => vec![Check::fail("config", err.to_string())],
    };
    HealthReport::new(SERVICE, attune_common::VERSION, checks)
}

/// One input item.
#[derive(Debug, Clone, PartialEq)]
enum Input {
    Request(ExecutionRequest),
    Completed(String),
}

fn parse_item(value: Value) -> Result<Input, String> {
    let obj = value
        .as_object()
        .ok_or("expected a JSON object (an ExecutionRequest or a completion)")?;
    if obj.contains_key("action") {
        return serde_json::from_value(value)
            .map(Input::Request)
            .map_err(|e| format!("invalid ExecutionRequest: {e}"));
    }
    if let Some(id) = obj.get("completed") {
        return id
            .as_str()
            .map(|id| Input::Completed(id.to_string()))
            .ok_or_else(|| "`completed` must be an execution id string".to_string());
    }
    if obj.contains_key("id") && obj.contains_key("status") {
        let result: ExecutionResult =
            serde_json::from_value(value).map_err(|e| format!("invalid ExecutionResult: {e}"))?;
        return Ok(Input::Completed(result.id));
    }
    Err("expected an ExecutionRequest (with `action` and `runtime`), {\"completed\": ID} or an ExecutionResult".to_string())
}

/// Parses a whole input: a JSON array, a single JSON document, or JSON lines
/// (blank lines and lines starting with `#` are skipped). Errors name the item or line.
fn parse_input(text: &str) -> Result<Vec<Input>, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    if let Ok(value) = serde_json::from_str::<Value>(trimmed) {
        return match value {
            Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| parse_item(v).map_err(|e| format!("item {}: {e}", i + 1)))
                .collect(),
            other => Ok(vec![parse_item(other)?]),
        };
    }
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
        .map(|(i, line)| parse_line(line).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}

fn parse_line(line: &str) -> Result<Input, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    parse_item(value)
}

/// Applies one input and returns the decisions it caused.
fn apply(scheduler: &mut Scheduler, input: Input) -> Result<Vec<Decision>, String> {
    match input {
        Input::Request(request) => Ok(vec![scheduler.submit(request)]),
        Input::Completed(id) => scheduler.complete(&id),
    }
}

fn emit(out: &mut impl Write, decisions: &[Decision]) -> std::io::Result<()> {
    for d in decisions {
        serde_json::to_writer(&mut *out, d)?;
        out.write_all(b"\n")?;
        tracing::debug!(id = %d.id, decision = ?d.decision, "decision");
    }
    out.flush()
}

fn run_once(source: &str, scheduler: &mut Scheduler) -> Result<(), String> {
    let text = if source == "-" {
        let mut buf = String::new();
        std::io::stdin()
            .read_to_string(&mut buf)
            .map_err(|e| format!("cannot read stdin: {e}"))?;
        buf
    } else {
        std::fs::read_to_string(source).map_err(|e| format!("cannot read {source}: {e}"))?
    };
    let inputs = parse_input(&text).map_err(|e| format!("{source}: {e}"))?;
    let mut stdout = std::io::stdout().lock();
    for input in inputs {
        match apply(scheduler, input) {
            Ok(decisions) => {
                emit(&mut stdout, &decisions).map_err(|e| format!("cannot write: {e}"))?
            }
            Err(err) => tracing::warn!("{err}"),
        }
    }
    tracing::info!(
        running = scheduler.running(),
        queued = scheduler.queued(),
        "batch scheduled"
    );
    Ok(())
}

fn run_stream(scheduler: &mut Scheduler) -> Result<(), String> {
    let stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    for (i, line) in stdin.lines().enumerate() {
        let line = line.map_err(|e| format!("cannot read stdin: {e}"))?;
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let result = parse_line(&line).and_then(|input| apply(scheduler, input));
        match result {
            Ok(decisions) => {
                emit(&mut stdout, &decisions).map_err(|e| format!("cannot write: {e}"))?
            }
            Err(err) => tracing::warn!("stdin line {}: {err}", i + 1),
        }
    }
    Ok(())
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
        max_concurrency = settings.executor.max_concurrency,
        runtimes = %runtimes_text(&settings.executor.runtimes),
        "executor starting"
    );
    let mut scheduler = Scheduler::new(
        settings.executor.max_concurrency,
        settings.executor.runtimes.clone(),
    );
    let result = match cli.once.as_deref() {
        Some(source) => run_once(source, &mut scheduler),
        None => run_stream(&mut scheduler),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{SERVICE}: {err}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scheduler::DecisionKind;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once(SERVICE).chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn settings_env_then_flags() {
        let env = Env::from_pairs([
            ("ATTUNE_EXECUTOR_MAX_CONCURRENCY", "8"),
            ("ATTUNE_EXECUTOR_RUNTIMES", "shell"),
        ]);
        let s = settings(&cli(&[]), &env).unwrap();
        assert_eq!(s.executor.max_concurrency, 8);
        assert_eq!(s.executor.runtimes, vec![Runtime::Shell]);
        let s = settings(&cli(&["--max-concurrency", "2", "--runtimes", "all"]), &env).unwrap();
        assert_eq!(s.executor.max_concurrency, 2);
        assert_eq!(s.executor.runtimes, Runtime::ALL.to_vec());
        let err = settings(&cli(&["--max-concurrency", "0"]), &env)
            .err()
            .unwrap();
        assert_eq!(err.var, "--max-concurrency");
        let err = settings(
            &cli(&[]),
            &Env::from_pairs([("ATTUNE_EXECUTOR_MAX_CONCURRENCY", "x")]),
        )
        .err()
        .unwrap();
        assert_eq!(err.var, "ATTUNE_EXECUTOR_MAX_CONCURRENCY");
        let report = self_check(&Err(err));
        assert!(!report.is_ok());
        assert!(self_check(&settings(&cli(&[]), &Env::default())).is_ok());
    }

    #[test]
    fn parses_arrays_documents_and_lines() {
        let req = r#"{"action":"a","runtime":"shell","code":"true"}"#;
        assert_eq!(parse_input(&format!("[{req},{req}]")).unwrap().len(), 2);
        assert_eq!(
            parse_input("{\n  \"action\": \"a\",\n  \"runtime\": \"node\"\n}")
                .unwrap()
                .len(),
            1
        );
        let lines = format!("# comment\n{req}\n\n{{\"completed\":\"exe-1\"}}\n");
        let inputs = parse_input(&lines).unwrap();
        assert_eq!(inputs.len(), 2);
        assert_eq!(inputs[1], Input::Completed("exe-1".into()));
        let result = r#"{"id":"exe-2","status":"succeeded","stdout":"","stderr":"","exit_code":0,"runtime":"shell"}"#;
        assert_eq!(
            parse_input(result).unwrap(),
            vec![Input::Completed("exe-2".into())]
        );
        assert!(parse_input("").unwrap().is_empty());

        let err = parse_input(&format!("{req}\n{{broken\n")).unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
        let err = parse_input(r#"[{"action":"a","runtime":"ruby"}]"#).unwrap_err();
        assert!(err.starts_with("item 1:") && err.contains("ruby"), "{err}");
        assert!(parse_input("42").is_err());
    }

    #[test]
    fn batch_with_completions() {
        let mut s = Scheduler::new(1, Runtime::ALL.to_vec());
        let req = r#"{"action":"a","runtime":"shell"}"#;
        let inputs = parse_input(&format!("{req}\n{req}\n")).unwrap();
        let mut decisions = Vec::new();
        for input in inputs {
            decisions.extend(apply(&mut s, input).unwrap());
        }
        assert_eq!(decisions[0].decision, DecisionKind::Scheduled);
        assert_eq!(decisions[1].decision, DecisionKind::Queued);
        let next = apply(&mut s, Input::Completed(decisions[0].id.clone())).unwrap();
        assert_eq!(next[0].id, decisions[1].id);
        assert_eq!(next[0].decision, DecisionKind::Scheduled);

        let mut out = Vec::new();
        emit(&mut out, &next).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert!(text.contains("\"decision\":\"scheduled\""));
    }
}
