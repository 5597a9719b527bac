//! `attune-api`: the attune HTTP API.
//!
//! Routes: `GET /health`, `POST /executions`, `GET /executions`, `GET /executions/{id}`.
//! `--probe URL [--data JSON]` turns the binary into a tiny HTTP client for smoke tests.

mod app;
mod probe;

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use attune_common::cli::{self, CommonArgs, EXIT_FAILURE, EXIT_USAGE};
use attune_common::config::{self, ApiConfig, ConfigError, Env, LogConfig};
use attune_common::{Check, HealthReport};

pub const SERVICE: &str = "attune-api";

#[derive(Debug, Parser)]
#[command(name = SERVICE, version, about = "attune HTTP API: health, executions (in-memory store)")]
#[command(after_help = "\
Environment: ATTUNE_API_BIND, ATTUNE_LOG_LEVEL, ATTUNE_LOG_FORMAT (flags take precedence).
Exit codes: 0 ok; 1 self-check or probe failed; 2 usage or configuration error.
Smoke test: attune-api --self-check
            attune-api --probe http://127.0.0.1:8080/health")]
struct Cli {
    /// Address to listen on [env: ATTUNE_API_BIND] [default: 0.0.0.0:8080]
    #[arg(long, value_name = "IP:PORT")]
    bind: Option<String>,

    /// Client mode: request URL (http:// only), print the response body on stdout,
    /// exit 0 on a 2xx status, else 1
    #[arg(long, value_name = "URL")]
    probe: Option<String>,

    /// With --probe: POST this JSON body instead of a GET
    #[arg(long, value_name = "JSON", requires = "probe")]
    data: Option<String>,

    /// With --probe: give up after this many milliseconds
    #[arg(long, value_name = "MS", default_value_t = 5000, requires = "probe")]
    timeout_ms: u64,

    #[command(flatten)]
    common: CommonArgs,
}

struct Settings {
    api: ApiConfig,
    log: LogConfig,
}

fn settings(cli: &Cli, env: &Env) -> Result<Settings, ConfigError> {
    let api = ApiConfig::from_env(env)?;
    let bind = config::override_with(
        api.bind,
        "--bind",
        cli.bind.as_deref(),
        config::parse_socket_addr,
    )?;
    Ok(Settings {
        api: ApiConfig { bind },
        log: cli.common.log_config(env)?,
    })
}

fn self_check(settings: &Result<Settings, ConfigError>) -> HealthReport {
    let checks = match settings {
        Ok(s) => vec![
            Check::ok("config", format!("bind={}", s.api.bind)),
            s.log.check(),
        ],
        Err(err) => vec![Check::fail("config", err.to_string())],
    };
    HealthReport::new(SERVICE, attune_common::VERSION, checks)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = Env::from_process();

    if let Some(url) = cli.probe.as_deref() {
        return run_probe(
            url,
            cli.data.as_deref(),
            Duration::from_millis(cli.timeout_ms),
        );
    }

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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("{SERVICE}: cannot start the tokio runtime: {err}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match runtime.block_on(serve(settings.api.bind, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err}");
            eprintln!("{SERVICE}: {err}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn run_probe(url: &str, data: Option<&str>, timeout: Duration) -> ExitCode {
    let url_parsed = match probe::parse_url(url) {
        Ok(u) => u,
        Err(err) => {
            eprintln!("{SERVICE}: --probe: {err}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("{SERVICE}: cannot start the tokio runtime: {err}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match runtime.block_on(probe::fetch(&url_parsed, data, timeout)) {
        Ok((status, body)) => {
            let text = String::from_utf8_lossy(&body);
            if text.ends_with('\n') || text.is_empty() {
                print!("{text}");
            } else {
                println!("{text}");
            }
            if (200..300).contains(&status) {
                ExitCode::SUCCESS
            } else {
                eprintln!("{SERVICE}: --probe: HTTP {status} from {url}");
                ExitCode::from(EXIT_FAILURE)
            }
        }
        Err(err) => {
            eprintln!("{SERVICE}: --probe {url}: {err}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Binds `addr` and serves until `shutdown` completes, then drains in-flight requests.
async fn serve(
    addr: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    serve_on(listener, shutdown).await
}

async fn serve_on(
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?;
    tracing::info!(service = SERVICE, version = attune_common::VERSION, addr = %local, "listening");
    axum::serve(listener, app::router(app::AppState::new()))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| format!("server error: {e}"))?;
    tracing::info!("shut down");
    Ok(())
}

/// Completes on ctrl-c (SIGINT) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("ctrl-c received, shutting down"),
        _ = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("attune-api").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn settings_env_then_flags() {
        let env = Env::from_pairs([("ATTUNE_API_BIND", "127.0.0.1:9999")]);
        let s = settings(&cli(&[]), &env).unwrap();
        assert_eq!(s.api.bind, "127.0.0.1:9999".parse().unwrap());
        let s = settings(&cli(&["--bind", "127.0.0.1:1234"]), &env).unwrap();
        assert_eq!(s.api.bind, "127.0.0.1:1234".parse().unwrap());
        let s = settings(&cli(&[]), &Env::default()).unwrap();
        assert_eq!(s.api.bind, "0.0.0.0:8080".parse().unwrap());
    }

    #[test]
    fn self_check_reports_bad_config() {
        let env = Env::from_pairs([("ATTUNE_API_BIND", "nowhere")]);
        let report = self_check(&settings(&cli(&[]), &env));
        assert!(!report.is_ok());
        assert!(report.checks[0].detail.contains("ATTUNE_API_BIND"));
        let report = self_check(&settings(&cli(&[]), &Env::default()));
        assert!(report.is_ok(), "{report:?}");
    }

    #[test]
    fn cli_shape() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        assert!(Cli::try_parse_from(["attune-api", "--data", "{}"]).is_err());
        assert_eq!(
            Cli::command().render_version().trim(),
            format!("attune-api {}", attune_common::VERSION)
        );
    }

    #[tokio::test]
    async fn serves_and_probes_over_tcp() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_on(listener, async {
            stop_rx.await.ok();
        }));
        let timeout = Duration::from_secs(5);

        let url = probe::parse_url(&format!("http://{addr}/health")).unwrap();
        let (status, body) = probe::fetch(&url, None, timeout).await.unwrap();
        assert_eq!(status, 200);
        let report: HealthReport = serde_json::from_slice(&body).unwrap();
        assert!(report.is_ok());

        let url = probe::parse_url(&format!("http://{addr}/executions")).unwrap();
        let (status, body) = probe::fetch(
            &url,
            Some(r#"{"action":"core.echo","runtime":"python","code":"print(1)"}"#),
            timeout,
        )
        .await
        .unwrap();
        assert_eq!(status, 201);
        let created: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(created["status"], "requested");

        let url = probe::parse_url(&format!(
            "http://{addr}/executions/{}",
            created["id"].as_str().unwrap()
        ))
        .unwrap();
        let (status, body) = probe::fetch(&url, None, timeout).await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), created);

        let url = probe::parse_url(&format!("http://{addr}/executions/missing")).unwrap();
        let (status, _) = probe::fetch(&url, None, timeout).await.unwrap();
        assert_eq!(status, 404);

        let (status, _) = probe::fetch(&url, Some("{oops"), timeout).await.unwrap();
        assert_eq!(status, 405, "POST on /executions/{{id}} is not allowed");

        stop_tx.send(()).unwrap();
        server.await.unwrap().unwrap();
        // after shutdown nothing listens any more
        assert!(probe::fetch(&url, None, timeout).await.is_err());
    }
}
