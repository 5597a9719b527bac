//! The attune workspace's task runner: `cargo xtask <command>`.
//!
//! `main` parses the flags, finds the workspace root and dispatches with one `match`.
//! Every command module exposes `run(..) -> anyhow::Result<Status>`; see ARCHITECTURE.md.

mod bake;
mod bench;
mod build;
mod ci;
mod compose;
mod compose_file;
mod dockerfile;
mod engine;
mod exec;
mod flags;
mod plan;
mod policy;
mod smoke;
mod util;
mod verify;
mod workspace;

use std::process::ExitCode;

use clap::Parser;

pub use util::{Status, UsageError};

fn main() -> ExitCode {
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

fn run(flags: flags::Xtask) -> anyhow::Result<Status> {
    let root = util::workspace_root()?;
    engine::use_private_engine_if_needed();
    match flags.cmd {
        flags::Cmd::Engine(args) => engine::run(&root, args),
        flags::Cmd::DockerBuild(args) => build::run(&root, args),
        flags::Cmd::Smoke(args) => smoke::run(&root, args),
        flags::Cmd::BakeFile(args) => bake::run(&root, args),
        flags::Cmd::ComposeFile(args) => compose_file::run(&root, args),
        flags::Cmd::Bench(args) => bench::run(&root, args),
        flags::Cmd::Ci(args) => ci::run(&root, args),
        flags::Cmd::RollbackLocked(args) => policy::rollback_locked(&root, args),
        flags::Cmd::RestoreShared(args) => policy::restore_shared(&root, args),
        flags::Cmd::LintDocker(args) => policy::lint_docker(&root, args),
        flags::Cmd::VerifyParallel(args) => verify::run(&root, args),
    }
}
