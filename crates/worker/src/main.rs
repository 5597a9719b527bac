//! `attune-worker`: detects the shell/python/node runtimes on PATH and runs code with them.

mod detect;
mod run;

use std::ffi::OsStr;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::Value;

use attune_common::cli::{self, CommonArgs, EXIT_FAILURE, EXIT_USAGE};
use attune_common::config::{self, ConfigError, Env, LogConfig, WorkerConfig};
use attune_common::{
    Check, ExecutionRequest, ExecutionResult, ExecutionStatus, HealthReport, IdGenerator, Runtime,
};

use detect::RuntimeInfo;

pub const SERVICE: &str = "attune-worker";
/// Exit code of `run` when the requested runtime is not installed.
pub const EXIT_RUNTIME_MISSING: u8 = 3;

#[derive(Debug, Parser)]
#[command(name = SERVICE, version, about = "attune worker: detects shell/python/node runtimes and runs code with them")]
#[command(after_help = "\
Without a command, runs `serve`.
Environment: ATTUNE_WORKER_REQUIRE, ATTUNE_WORKER_TIMEOUT_MS, ATTUNE_LOG_LEVEL, ATTUNE_LOG_FORMAT,
PATH (where runtimes are looked up: sh, python3, node). Flags take precedence.
Exit codes: 0 ok; 1 self-check failed, execution failed or timed out, or a required runtime is
missing; 2 usage or configuration error; 3 `run` with a runtime that is not installed.
Smoke tests: attune-worker --self-check --require shell
             attune-worker --self-check --require all
             attune-worker run --runtime shell --code 'echo hello'")]
struct Cli {
    /// Runtimes that must be available, comma-separated (shell,python,node) or `all`;
    /// checked by --self-check and `serve` [env: ATTUNE_WORKER_REQUIRE] [default: none]
    #[arg(long, value_name = "LIST", global = true)]
    require: Option<String>,

    #[command(flatten)]
    common: CommonArgs,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the runtimes found on PATH as a JSON list (runtime, program, path, version)
    Runtimes {
        /// Also list the runtimes that are missing (with "available": false and the reason)
        #[arg(long)]
        all: bool,
    },
    /// Run code with a runtime and print the ExecutionResult as JSON
    /// (exit 0 succeeded, 1 failed or timed out, 3 runtime not installed)
    Run {
        /// shell (sh -c), python (python3 -c) or node (node -e)
        #[arg(long, value_parser = parse_runtime)]
        runtime: Runtime,
        /// The code to run
        #[arg(long, required_unless_present = "file", conflicts_with = "file")]
        code: Option<String>,
        /// Read the code from FILE (`-` for stdin)
        #[arg(long, value_name = "FILE|-")]
        file: Option<PathBuf>,
        /// JSON object passed to the code as the ATTUNE_PARAMETERS environment variable
        #[arg(long, value_name = "JSON")]
        parameters: Option<String>,
        /// Kill the code after this many ms [env: ATTUNE_WORKER_TIMEOUT_MS] [default: 60000]
        #[arg(long, value_name = "MS")]
        timeout_ms: Option<String>,
        /// Execution id to report [default: generated]
        #[arg(long)]
        id: Option<String>,
    },
    /// Read ExecutionRequest JSON lines on stdin, run each in turn and print ExecutionResult
    /// JSON lines; stops at end of input, ctrl-c or SIGTERM
    Serve {
        /// Kill each execution after this many ms [env: ATTUNE_WORKER_TIMEOUT_MS] [default: 60000]
        #[arg(long, value_name = "MS")]
        timeout_ms: Option<String>,
    },
}

fn parse_runtime(raw: &str) -> Result<Runtime, String> {
    raw.parse()
}

struct Settings {
    worker: WorkerConfig,
    log: LogConfig,
}

fn settings(cli: &Cli, env: &Env) -> Result<Settings, ConfigError> {
    let base = WorkerConfig::from_env(env)?;
    let require = config::override_with(
        base.require,
        "--require",
        cli.require.as_deref(),
        Runtime::parse_list,
    )?;
    let timeout_flag = match &cli.command {
        Some(Command::Run { timeout_ms, .. }) | Some(Command::Serve { timeout_ms }) => {
            timeout_ms.as_deref()
        }
        _ => None,
    };
    let timeout_ms = config::override_with(
        base.timeout_ms,
        "--timeout-ms",
        timeout_flag,
        config::parse_timeout_ms,
    )?;
    Ok(Settings {
        worker: WorkerConfig {
            require,
            timeout_ms,
        },
        log: cli.common.log_config(env)?,
    })
}

fn list(runtimes: &[Runtime]) -> String {
    if runtimes.is_empty() {
        return "none".to_string();
    }
    runtimes
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Detection plus, for every runtime found, a smoke run; failures make it unavailable.
fn detect_and_smoke(path_var: &OsStr) -> Vec<RuntimeInfo> {
    detect::detect_all(path_var)
        .into_iter()
        .map(|mut info| {
            if info.available {
                if let Err(err) = detect::smoke_run(&info) {
                    info.available = false;
                    info.error = Some(err);
                }
            }
            info
        })
        .collect()
}

fn runtime_check(info: &RuntimeInfo, required: bool) -> Check {
    let name = format!("runtime:{}", info.runtime);
    if info.available {
        Check::ok(
            name,
            format!(
                "{} {} at {}",
                info.program,
                info.version.as_deref().unwrap_or("(version unknown)"),
                info.path.as_deref().unwrap_or("?")
            ),
        )
    } else {
        let why = info.error.as_deref().unwrap_or("not available");
        if required {
            Check::fail(name, format!("required but not available: {why}"))
        } else {
            Check::ok(name, format!("not installed (not required): {why}"))
        }
    }
}

fn self_check(settings: &Result<Settings, ConfigError>, runtimes: &[RuntimeInfo]) -> HealthReport {
    let mut checks = Vec::new();
    let require: &[Runtime] = match settings {
        Ok(s) => {
            checks.push(Check::ok(
                "config",
                format!(
                    "require={} timeout_ms={}",
                    list(&s.worker.require),
                    s.worker.timeout_ms
                ),
            ));
            &s.worker.require
        }
        Err(err) => {
            checks.push(Check::fail("config", err.to_string()));
            &[]
        }
    };
    checks.extend(
        runtimes
            .iter()
            .map(|info| runtime_check(info, require.contains(&info.runtime))),
    );
    HealthReport::new(SERVICE, attune_common::VERSION, checks)
}

/// The required runtimes that are not available.
fn missing_required(require: &[Runtime], runtimes: &[RuntimeInfo]) -> Vec<Runtime> {
    require
        .iter()
        .copied()
        .filter(|rt| !runtimes.iter().any(|i| i.runtime == *rt && i.available))
        .collect()
}

fn print_json<T: serde::Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string(value).expect("worker output always serialises")
    );
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = Env::from_process();
    let settings = settings(&cli, &env);
    let path_var = detect::process_path();

    if cli.common.self_check {
        let runtimes = detect_and_smoke(&path_var);
        return cli::finish_self_check(&self_check(&settings, &runtimes));
    }
    let settings = match settings {
        Ok(s) => s,
        Err(err) => return cli::config_error(SERVICE, &err),
    };
    if let Err(err) = attune_common::init_tracing(SERVICE, settings.log.level, settings.log.json) {
        eprintln!("{SERVICE}: {err}");
        return ExitCode::from(EXIT_FAILURE);
    }
    let timeout = Duration::from_millis(settings.worker.timeout_ms);

    match cli.command.unwrap_or(Command::Serve { timeout_ms: None }) {
        Command::Runtimes { all } => {
            let found: Vec<RuntimeInfo> = detect::detect_all(&path_var)
                .into_iter()
                .filter(|i| all || i.available)
                .collect();
            print_json(&found);
            ExitCode::SUCCESS
        }
        Command::Run {
            runtime,
            code,
            file,
            parameters,
            id,
            ..
        } => {
            let code = match (code, file) {
                (Some(code), _) => code,
                (None, Some(file)) => match read_code(&file) {
                    Ok(code) => code,
                    Err(err) => {
                        eprintln!("{SERVICE}: {err}");
                        return ExitCode::from(EXIT_USAGE);
                    }
                },
                (None, None) => unreachable!("clap requires --code or --file"),
            };
            let parameters = match parse_parameters(parameters.as_deref()) {
                Ok(p) => p,
                Err(err) => {
                    eprintln!("{SERVICE}: --parameters: {err}");
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            let info = detect::detect(runtime, &path_var);
            let Some(program) = info.path_buf().filter(|_| info.available) else {
                eprintln!(
                    "{SERVICE}: runtime {runtime} is not installed: {}",
                    info.error.as_deref().unwrap_or("not available")
                );
                return ExitCode::from(EXIT_RUNTIME_MISSING);
            };
            let id = id.unwrap_or_else(|| IdGenerator::new("run").next_id());
            let result = match current_thread_runtime() {
                Ok(rt) => rt.block_on(run::execute(
                    &id,
                    runtime,
                    &program,
                    &code,
                    &parameters,
                    timeout,
                )),
                Err(code) => return code,
            };
            print_json(&result);
            if result.status == ExecutionStatus::Succeeded {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_FAILURE)
            }
        }
        Command::Serve { .. } => {
            let runtimes = detect::detect_all(&path_var);
            let missing = missing_required(&settings.worker.require, &runtimes);
            if !missing.is_empty() {
                eprintln!(
                    "{SERVICE}: required runtime(s) not available: {}",
                    list(&missing)
                );
                return ExitCode::from(EXIT_FAILURE);
            }
            match current_thread_runtime() {
                Ok(rt) => match rt.block_on(serve(runtimes, timeout)) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(err) => {
                        eprintln!("{SERVICE}: {err}");
                        ExitCode::from(EXIT_FAILURE)
                    }
                },
                Err(code) => code,
            }
        }
    }
}

fn current_thread_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| {
            eprintln!("{SERVICE}: cannot start the tokio runtime: {err}");
            ExitCode::from(EXIT_FAILURE)
        })
}

fn read_code(file: &std::path::Path) -> Result<String, String> {
    if file.as_os_str() == "-" {
        let mut code = String::new();
        std::io::stdin()
            .read_to_string(&mut code)
            .map_err(|e| format!("cannot read code from stdin: {e}"))?;
        Ok(code)
    } else {
        std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))
    }
}

fn parse_parameters(raw: Option<&str>) -> Result<Value, String> {
    match raw {
        None => Ok(Value::Null),
        Some(raw) => {
            let value: Value =
                serde_json::from_str(raw).map_err(|e| format!("invalid JSON: {e}"))?;
            if value.is_object() {
                Ok(value)
            } else {
                Err("expected a JSON object".to_string())
            }
        }
    }
}

/// Runs one request line: an ExecutionResult for anything (invalid input included).
async fn handle_line(
    line: &str,
    ids: &IdGenerator,
    runtimes: &[RuntimeInfo],
    timeout: Duration,
) -> ExecutionResult {
    let id = ids.next_id();
    let failed = |runtime: Runtime, why: String| ExecutionResult {
        id: id.clone(),
        status: ExecutionStatus::Failed,
        stdout: String::new(),
        stderr: format!("attune-worker: {why}"),
        exit_code: None,
        runtime,
        duration_ms: 0,
    };
    let request: ExecutionRequest = match serde_json::from_str(line) {
        Ok(r) => r,
        Err(err) => return failed(Runtime::Shell, format!("invalid ExecutionRequest: {err}")),
    };
    if let Err(why) = request.validate() {
        return failed(request.runtime, why);
    }
    let Some(code) = request.code.as_deref() else {
        return failed(
            request.runtime,
            "the request has no `code` to run".to_string(),
        );
    };
    let info = runtimes.iter().find(|i| i.runtime == request.runtime);
    let Some(program) = info.filter(|i| i.available).and_then(|i| i.path_buf()) else {
        return failed(
            request.runtime,
            format!(
                "runtime {} is not installed on this worker",
                request.runtime
            ),
        );
    };
    tracing::info!(%id, action = %request.action, runtime = %request.runtime, "running");
    run::execute(
        &id,
        request.runtime,
        &program,
        code,
        &request.parameters,
        timeout,
    )
    .await
}

async fn serve(runtimes: Vec<RuntimeInfo>, timeout: Duration) -> Result<(), String> {
    use tokio::io::AsyncBufReadExt;
    let available: Vec<Runtime> = runtimes
        .iter()
        .filter(|i| i.available)
        .map(|i| i.runtime)
        .collect();
    tracing::info!(runtimes = %list(&available), "worker serving ExecutionRequest lines on stdin");
    let ids = IdGenerator::new("exe");
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let line = tokio::select! {
            line = lines.next_line() => line.map_err(|e| format!("cannot read stdin: {e}"))?,
            _ = &mut shutdown => {
                tracing::info!("shutting down");
                return Ok(());
            }
        };
        let Some(line) = line else {
            return Ok(());
        };
        if line.trim().is_empty() {
            continue;
        }
        let result = handle_line(&line, &ids, &runtimes, timeout).await;
        print_json(&result);
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

#[cfg(test)]
mod tests {
    use super::*;
    use attune_common::CheckStatus;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once(SERVICE).chain(args.iter().copied())).unwrap()
    }

    fn info(runtime: Runtime, available: bool) -> RuntimeInfo {
        RuntimeInfo {
            runtime,
            program: runtime.program(),
            available,
            path: available.then(|| format!("/usr/bin/{}", runtime.program())),
            version: None,
            error: (!available).then(|| format!("{} not found on PATH", runtime.program())),
        }
    }

    #[test]
    fn cli_shape() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        assert!(Cli::try_parse_from([SERVICE, "run", "--runtime", "ruby", "--code", "x"]).is_err());
        assert!(Cli::try_parse_from([SERVICE, "run", "--runtime", "shell"]).is_err());
        let c = cli(&["--self-check", "--require", "python,node"]);
        assert!(c.common.self_check);
        let c = cli(&[
            "run",
            "--runtime",
            "python3",
            "--code",
            "print(1)",
            "--require",
            "all",
        ]);
        assert!(matches!(
            c.command,
            Some(Command::Run {
                runtime: Runtime::Python,
                ..
            })
        ));
        assert_eq!(c.require.as_deref(), Some("all"));
    }

    #[test]
    fn require_from_env_and_flag() {
        let env = Env::from_pairs([("ATTUNE_WORKER_REQUIRE", "node")]);
        assert_eq!(
            settings(&cli(&[]), &env).ok().unwrap().worker.require,
            vec![Runtime::Node]
        );
        let s = settings(&cli(&["--require", "shell,python"]), &env)
            .ok()
            .unwrap();
        assert_eq!(s.worker.require, vec![Runtime::Shell, Runtime::Python]);
        let err = settings(&cli(&["--require", "cobol"]), &env).err().unwrap();
        assert_eq!(err.var, "--require");
        let s = settings(&cli(&["serve", "--timeout-ms", "5"]), &Env::default())
            .ok()
            .unwrap();
        assert_eq!(s.worker.timeout_ms, 5);
    }

    #[test]
    fn self_check_fails_only_for_missing_required_runtimes() {
        let runtimes = vec![
            info(Runtime::Shell, true),
            info(Runtime::Python, false),
            info(Runtime::Node, false),
        ];
        let ok = self_check(
            &settings(&cli(&["--require", "shell"]), &Env::default()),
            &runtimes,
        );
        assert!(ok.is_ok(), "{ok:?}");
        assert_eq!(ok.checks.len(), 4);
        let bad = self_check(
            &settings(&cli(&["--require", "python,node"]), &Env::default()),
            &runtimes,
        );
        assert!(!bad.is_ok());
        let failed: Vec<&str> = bad.failures().map(|c| c.name.as_str()).collect();
        assert_eq!(failed, vec!["runtime:python", "runtime:node"]);
        assert_eq!(bad.checks[1].status, CheckStatus::Ok, "shell is fine");
        assert_eq!(
            missing_required(&Runtime::ALL, &runtimes),
            vec![Runtime::Python, Runtime::Node]
        );
        let bad_config = self_check(
            &settings(
                &cli(&[]),
                &Env::from_pairs([("ATTUNE_WORKER_TIMEOUT_MS", "0")]),
            ),
            &runtimes,
        );
        assert!(!bad_config.is_ok());
        assert!(bad_config.checks[0]
            .detail
            .contains("ATTUNE_WORKER_TIMEOUT_MS"));
    }

    #[test]
    fn self_check_on_the_real_path_finds_the_shell() {
        let runtimes = detect_and_smoke(&detect::process_path());
        let report = self_check(
            &settings(&cli(&["--require", "shell"]), &Env::default()),
            &runtimes,
        );
        assert!(report.is_ok(), "{report:?}");
    }

    #[test]
    fn parameters_must_be_an_object() {
        assert!(parse_parameters(None).unwrap().is_null());
        assert_eq!(parse_parameters(Some(r#"{"a":1}"#)).unwrap()["a"], 1);
        assert!(parse_parameters(Some("[1]")).is_err());
        assert!(parse_parameters(Some("{")).is_err());
    }

    #[tokio::test]
    async fn serve_lines() {
        let runtimes = vec![
            detect::detect(Runtime::Shell, &detect::process_path()),
            info(Runtime::Node, false),
        ];
        let ids = IdGenerator::new("t");
        let t = Duration::from_secs(10);
        let ok = handle_line(
            r#"{"action":"a","runtime":"shell","code":"echo hi"}"#,
            &ids,
            &runtimes,
            t,
        )
        .await;
        assert_eq!(ok.status, ExecutionStatus::Succeeded, "{ok:?}");
        assert_eq!(ok.stdout, "hi\n");
        let missing = handle_line(
            r#"{"action":"a","runtime":"node","code":"1"}"#,
            &ids,
            &runtimes,
            t,
        )
        .await;
        assert_eq!(missing.status, ExecutionStatus::Failed);
        assert!(missing.stderr.contains("not installed"));
        let no_code = handle_line(r#"{"action":"a","runtime":"shell"}"#, &ids, &runtimes, t).await;
        assert!(no_code.stderr.contains("no `code`"));
        let garbage = handle_line("{", &ids, &runtimes, t).await;
        assert!(garbage.stderr.contains("invalid ExecutionRequest"));
        assert_ne!(ok.id, missing.id);
    }
}
