//! The attune workspace's task runner: `cargo xtask <command>`.
//!
//! `main` parses the flags, finds the workspace root and dispatches with one `match`.
//! Every command module exposes `run(..) -> anyhow::Result<Status>`; see ARCHITECTURE.md. The
//! commands are this binary's; the library they stand on is `src/lib.rs`.

mod cmd;

// the library (src/lib.rs): what the commands stand on; `crate::session` and the like in cmd/
// name these
#[allow(unused_imports)]
use xtask::*;

use std::process::ExitCode;

use clap::Parser;

use util::{Status, UsageError};

fn main() -> ExitCode {
    // a build's supervisor (exec/supervise.rs) is this binary started again: no flags to parse
    exec::supervise::run_if_asked(&std::env::args_os().skip(1).collect::<Vec<_>>());
    let flags = match flags::Xtask::try_parse() {
        Ok(flags) => flags,
        Err(err) => {
            // clap prints help/version on stdout with exit 0 and usage errors with exit 2
            err.print().ok();
            return ExitCode::from(if err.use_stderr() { 2 } else { 0 });
        }
    };
    match run(flags) {
        Ok(Status::Ok) => ExitCode::SUCCESS,
        Ok(Status::Failed) => ExitCode::from(1),
        Ok(Status::Interrupted) => ExitCode::from(130),
        Err(err) => {
            eprintln!("error: {err:#}");
            if err.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// Diagnostics go to stderr through tracing: `RUST_LOG` when set, else by `-v` count.
fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "xtask=debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn run(flags: flags::Xtask) -> anyhow::Result<Status> {
    init_tracing(flags.verbose);
    let root = util::workspace_root()?;
    // only the commands that talk to an engine look for one
    let uses_engine = !matches!(
        flags.cmd,
        flags::Cmd::BakeFile(_)
            | flags::Cmd::RollbackLocked(_)
            | flags::Cmd::RestoreShared(_)
            | flags::Cmd::LintDocker(_)
    );
    if uses_engine {
        engine::use_private_engine_if_needed();
    }
    match flags.cmd {
        flags::Cmd::Engine(args) => cmd::engine::run(&root, args),
        flags::Cmd::DockerBuild(args) => cmd::docker_build::run(&root, args),
        flags::Cmd::Smoke(args) => cmd::smoke::run(&root, args),
        flags::Cmd::BakeFile(args) => cmd::bake::run(&root, args),
        flags::Cmd::Bench(args) => cmd::bench::run(&root, args),
        flags::Cmd::Ci(args) => cmd::ci::run(&root, args),
        flags::Cmd::RollbackLocked(args) => cmd::policy::rollback_locked(&root, args),
        flags::Cmd::RestoreShared(args) => cmd::policy::restore_shared(&root, args),
        flags::Cmd::LintDocker(args) => cmd::policy::lint_docker(&root, args),
        flags::Cmd::VerifyParallel(args) => cmd::verify::run(&root, args),
        flags::Cmd::Cache(args) => cmd::cache::run(&root, args),
        flags::Cmd::History(args) => cmd::history::run(&root, args),
        flags::Cmd::ComposeFile(args) => cmd::compose_file::run(&root, args),
    }
}
