//! Command-line definitions only: no logic lives here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Build, verify and maintain the attune workspace's Docker images.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, about, long_about = None)]
pub struct Xtask {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once
pub enum Cmd {
    /// Build the images in parallel on BuildKit, with live progress, a log per image and a summary
    ///
    /// Exit status: 0 when every build succeeded, 1 when any failed (the others still run to the
    /// end and are reported), 2 for usage errors, 130 when interrupted.
    DockerBuild(DockerBuildArgs),
    /// Run each built image's binary in its container (--version, self-check) and probe /health
    /// of a running api container; pack binaries run on the host
    ///
    /// With --compose: the services as `docker compose up -d --wait` starts them; exit 1 naming
    /// every service that is not healthy. `docker compose down` runs whatever happened.
    Smoke(SmokeArgs),
    /// Print a `docker buildx bake` file (JSON) for the same builds as `docker-build`
    ///
    /// Takes docker-build's selection and options: `cargo xtask bake-file services --tag 1.0 >
    /// docker-bake.json && docker buildx bake -f docker-bake.json`.
    BakeFile(BakeFileArgs),
    /// Write docker-compose.yaml from the image declaration (the default strategy's Dockerfile,
    /// the services' ports, environment, health checks and order)
    ///
    /// Exit status with --check: 0 when the committed file is current, 1 when it is stale.
    ComposeFile(ComposeFileArgs),
    /// Time this project's strategies against buildx bake, compose, a cargo-chef Dockerfile and
    /// native cargo, in one run: cold, a change in crates/common, a change in crates/api, no-op
    ///
    /// Long (tens of minutes): not part of CI; `--smoke` runs one repetition of ours and native.
    Bench(BenchArgs),
    /// Run everything CI checks: fmt, clippy, tests, the Dockerfile policy, docker-compose.yaml
    /// current, then on the real engine every image built and smoke-tested (also with `docker
    /// compose up`) and `verify-parallel --quick`
    ///
    /// A missing engine is a failure, never a skip. Ends with `ci: N passed, N failed`.
    Ci(CiArgs),
    /// Start, stop or inspect the Docker engine (a private dockerd with buildx where none runs)
    Engine(EngineArgs),
    /// Set `sharing=locked` on every cache mount in the Dockerfiles (the conservative fallback)
    RollbackLocked(RewriteArgs),
    /// Bring the Dockerfiles back to the optimized cache policy (undoes `rollback-locked`)
    RestoreShared(RewriteArgs),
    /// Check the Dockerfiles' cache-mount policy statically
    LintDocker(LintArgs),
    /// Run the three verification tests on the engine: parallel build performance (locked against
    /// the committed policy), no race conditions (cold parallel builds), cache reuse
    ///
    /// Exit status: 0 when every selected test passed, 1 when any failed (each failure printed in
    /// one line with its log), 2 for usage errors, 130 when interrupted.
    VerifyParallel(VerifyParallelArgs),
}

#[derive(Debug, Args)]
pub struct RewriteArgs {
    /// Dockerfiles, or directories of `Dockerfile*` files, to rewrite (default: every
    /// `Dockerfile*` under docker/); a path that does not exist is a usage error (exit 2)
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
    /// Dockerfiles, or directories of `Dockerfile*` files, to check (default: every
    /// `Dockerfile*` under docker/)
    pub paths: Vec<PathBuf>,
    /// Print the findings as JSON (`findings`: id, file, line, message and fix of each)
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

#[derive(Debug, Args)]
pub struct DockerBuildArgs {
    /// Images or groups to build (default: all). Images: api, executor, sensor, worker-shell,
    /// worker-python, worker-node, worker-full, pack-binaries; groups: services (api executor
    /// worker-shell sensor), workers, all. Declared in [workspace.metadata.attune] of Cargo.toml
    pub images: Vec<String>,
    /// Build strategy: `workspace` (one builder compiles every binary once for all images; the
    /// default), `per-service` (a builder and target cache per service), or another one declared
    /// in [workspace.metadata.attune.strategies]
    #[arg(long)]
    pub strategy: Option<String>,
    /// How many builds run at once (0: all at once)
    #[arg(long, short = 'j', default_value_t = 0)]
    pub jobs: usize,
    /// Image tag (default: the declaration's tag, `dev`)
    #[arg(long)]
    pub tag: Option<String>,
    /// Registry and namespace to prefix image names with, e.g. registry.example/attune
    #[arg(long)]
    pub registry: Option<String>,
    /// The buildx builder to use (a remote or Kubernetes BuildKit, for instance)
    #[arg(long)]
    pub builder: Option<String>,
    /// Target platforms, repeatable or comma-separated (e.g. linux/amd64,linux/arm64)
    #[arg(long, value_delimiter = ',')]
    pub platform: Vec<String>,
    /// Push images instead of loading them into the engine
    #[arg(long)]
    pub push: bool,
    /// External cache sources, as for buildx; `{image}` is replaced by the image name
    #[arg(long)]
    pub cache_from: Vec<String>,
    /// External cache destinations, as for buildx; `{image}` is replaced by the image name
    #[arg(long)]
    pub cache_to: Vec<String>,
    /// Extra build arguments (KEY=VALUE) for every image
    #[arg(long)]
    pub build_arg: Vec<String>,
    /// Do not use the layer cache (note: BuildKit then also drops the cache mounts the build uses)
    #[arg(long)]
    pub no_cache: bool,
    /// Always try to pull newer base images
    #[arg(long)]
    pub pull: bool,
    /// Print the exact commands, in the order and grouping in which they would run; run nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print the summary as JSON on stdout (progress stays on stderr)
    #[arg(long)]
    pub json: bool,
    /// Where each image's log goes, relative to the workspace root
    #[arg(long, default_value = "target/xtask/logs", env = "ATTUNE_LOG_DIR")]
    pub log_dir: PathBuf,
    /// What to do when no engine is reachable: `auto` starts the private one (cargo xtask engine
    /// up), `external` only reports it
    #[arg(long, value_enum, default_value_t = EngineMode::Auto, env = "ATTUNE_ENGINE")]
    pub engine: EngineMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EngineMode {
    Auto,
    External,
}

#[derive(Debug, Args)]
pub struct SmokeArgs {
    /// Images or groups to test (default: all)
    pub images: Vec<String>,
    /// Image tag (default: the declaration's tag)
    #[arg(long)]
    pub tag: Option<String>,
    /// Instead: `docker compose up -d --wait` the selected services (and what they depend on)
    /// from docker-compose.yaml, check that every one is healthy and the published ports answer,
    /// then `docker compose down`, also on failure
    #[arg(long)]
    pub compose: bool,
    /// With --compose: how long `up` may wait for the services to be healthy, in seconds
    #[arg(long, default_value_t = 120, requires = "compose")]
    pub wait_timeout: u64,
}

#[derive(Debug, Args)]
pub struct CiArgs {
    /// Run the full verify-parallel instead of `--quick`
    #[arg(long)]
    pub full: bool,
    /// Skip a step by name (fmt, clippy, test, lint-docker, cache-policy, compose-file, engine,
    /// docker-build, smoke, smoke-compose, verify-parallel); repeatable. For local use: CI skips
    /// nothing
    #[arg(long)]
    pub skip: Vec<String>,
    /// Stop at the first failed step
    #[arg(long)]
    pub fail_fast: bool,
}

#[derive(Debug, Args)]
pub struct VerifyParallelArgs {
    /// Tests to run, comma-separated: perf, race, reuse (default: all)
    #[arg(long, value_delimiter = ',')]
    pub tests: Vec<String>,
    /// Images to build in parallel, comma-separated (default: api,executor,worker-shell,sensor);
    /// the reuse test builds the first
    #[arg(long, value_delimiter = ',')]
    pub images: Vec<String>,
    /// Race test: how many cold parallel builds (default 5; 2 with --quick)
    #[arg(long)]
    pub runs: Option<usize>,
    /// Which Dockerfiles to build: `per-service` (docker/Dockerfile.*optimized, alias `ours`),
    /// `workspace` (docker/Dockerfile.workspace: one shared builder, so the perf test, which
    /// compares per-image cargo steps, does not apply: race and reuse do) or `seed` (the seed
    /// design's recipe, docker/reference/)
    #[arg(long, default_value = "per-service")]
    pub strategy: String,
    /// Perf test from empty caches (a fresh cache-id namespace) instead of incremental
    #[arg(long)]
    pub cold: bool,
    /// For CI: race with 2 runs, incremental perf; every test still runs for real
    #[arg(long)]
    pub quick: bool,
    /// Print what would run; build nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Write the whole report as JSON to this file
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write a Markdown report with SVG timelines (or HTML when FILE ends in .html)
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Image tag of the builds (kept apart from docker-build's `dev`)
    #[arg(long, default_value = "verify")]
    pub tag: String,
    /// Where the logs go (<dir>/<test>/<run>/<image>.log), relative to the workspace root
    #[arg(long, default_value = "target/xtask/verify")]
    pub log_dir: PathBuf,
    /// Keep the temporary copies of the build context (printed paths) for inspection
    #[arg(long)]
    pub keep_temp: bool,
    /// What to do when no engine is reachable (as for docker-build)
    #[arg(long, value_enum, default_value_t = EngineMode::Auto, env = "ATTUNE_ENGINE")]
    pub engine: EngineMode,
}

#[derive(Debug, Args)]
pub struct BakeFileArgs {
    #[command(flatten)]
    pub build: DockerBuildArgs,
}

#[derive(Debug, Args)]
pub struct ComposeFileArgs {
    /// Print the file for this strategy on stdout instead (e.g. `per-service`); the committed file
    /// is the default strategy's
    #[arg(long)]
    pub strategy: Option<String>,
    /// Write nothing; exit 1 when docker-compose.yaml does not match the declaration (for CI)
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Images or groups to build (default: services)
    #[arg(default_values_t = ["services".to_string()])]
    pub images: Vec<String>,
    /// Contenders, by key: the declaration's strategies (per-service, workspace, chef), bake,
    /// compose, native (default: all)
    #[arg(long, value_delimiter = ',')]
    pub contenders: Vec<String>,
    /// Scenarios: cold, common, api, noop (default: all, in that order)
    #[arg(long, value_delimiter = ',')]
    pub scenarios: Vec<String>,
    /// Repetitions of everything, contenders rotating
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// One repetition of this project's default strategy and native cargo
    #[arg(long)]
    pub smoke: bool,
    /// Write the whole report as JSON
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the table as Markdown (e.g. docs/BENCHMARKS.md)
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Where each run's output goes
    #[arg(long, default_value = "target/xtask/bench")]
    pub out_dir: PathBuf,
    /// Print the contenders' commands and run nothing
    #[arg(long)]
    pub dry_run: bool,
}
