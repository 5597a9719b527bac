//! Command-line definitions only: no logic lives here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Build, verify and maintain the attune workspace's Docker images.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", version, about, long_about = None)]
pub struct Xtask {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Start, stop or inspect the Docker engine (a private dockerd with buildx where none runs)
    Engine(EngineArgs),
    /// Set `sharing=locked` on every cache mount in the Dockerfiles (the conservative fallback)
    RollbackLocked(RewriteArgs),
    /// Bring the Dockerfiles back to the optimized cache policy (undoes `rollback-locked`)
    RestoreShared(RewriteArgs),
    /// Check the Dockerfiles' cache-mount policy statically
    LintDocker(LintArgs),
}

#[derive(Debug, Args)]
pub struct RewriteArgs {
    /// Dockerfiles to rewrite (default: every Dockerfile under docker/)
    pub paths: Vec<PathBuf>,
    /// Print a unified diff of what would change and write nothing
    #[arg(long, conflicts_with = "check")]
    pub dry_run: bool,
    /// Write nothing; exit 1 when any file is not already in this mode (for CI)
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Args)]
pub struct LintArgs {
    /// Dockerfiles to check (default: every Dockerfile under docker/)
    pub paths: Vec<PathBuf>,
    /// Print the findings as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EngineArgs {
    #[command(subcommand)]
    pub cmd: EngineCmd,
}

#[derive(Debug, Subcommand)]
pub enum EngineCmd {
    /// Make an engine reachable: install Debian's docker.io and buildx if needed, start a private
    /// dockerd on its own socket, and create the base images locally when no registry answers
    Up,
    /// Stop the private dockerd that `up` started (found by its pid file), and nothing else
    Down,
    /// Say which engine is reachable, its versions, and whether the base images are present
    Status,
}
