//! Command-line definitions only: no logic lives here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Build, verify and maintain the attune workspace's Docker images.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, about, long_about = None)]
pub struct Xtask {
    /// Log diagnostics on stderr: every process started (argv, duration, exit status) and each
    /// image's build; `-vv` for everything. `RUST_LOG` (e.g. `xtask=debug`) takes precedence
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once
pub enum Cmd {
    /// Build the images in parallel on BuildKit, with live progress, a log per image and a summary
    ///
    /// One pipeline: the up-to-date check, the cache import (--cache), the builds, the atomic
    /// publish (--push), the history record, cargo's timing report (--timings) and the cache
    /// export, so the options combine. The pairs that cannot are refused before anything runs,
    /// naming both: --cache-layers with --builders, and --cache or --timings with several
    /// --platform values (ARCHITECTURE.md has the table of every pair).
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
    /// Takes docker-build's selection and build options: `cargo xtask bake-file services --tag 1.0
    /// > docker-bake.json && docker buildx bake -f docker-bake.json`. `--builder` cannot be
    /// written into a bake file (exit 2): give it to `docker buildx bake` itself.
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
    /// This workspace's build caches: `du` and `prune` on the engine; `export` and `import` carry
    /// them (layer cache and the contents of the cache mounts: cargo home, target directories) to
    /// a directory and back, for CI runners that start empty
    ///
    /// An entry is keyed by Cargo.lock, the toolchain (RUST_VERSION and the base image's id), the
    /// strategy, profile, platform and RUSTFLAGS: LOCATION/<key>/ holds manifest.json (sha256 of
    /// each file), mounts/<id>.tar.zst (and <id>.<n>.tar.zst: each cache travels as its stable
    /// part, the cargo home and the dependencies' artifacts, and the rest) and layers/ (an OCI
    /// layout). Entries are published with one atomic rename; an export whose cache still holds
    /// the stable part an import of the entry left links it instead of sending it again.
    /// `docker-build --cache LOCATION` imports and exports beside the builds: when every cargo
    /// RUN locks its target cache (`flock` on target/attune.lock, as the project's Dockerfiles
    /// do), the builds start while the import copies and their cargo step waits for it, and the
    /// export copies the caches the moment the cargo step ends.
    Cache(CacheArgs),
    /// Run the three verification tests on the engine: parallel build performance (locked against
    /// the committed policy), no race conditions (cold parallel builds), cache reuse
    ///
    /// Exit status: 0 when every selected test passed, 1 when any failed (each failure printed in
    /// one line with its log), 2 for usage errors, 130 when interrupted.
    VerifyParallel(VerifyParallelArgs),
    /// The recorded docker-build runs (target/xtask/history.jsonl): a table, per-image medians
    /// and trends, `--plot FILE.svg`, and `--explain IMAGE` (why its last build re-ran)
    History(HistoryArgs),
}

#[derive(Debug, Args)]
pub struct CacheDuArgs {
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CachePruneArgs {
    /// Only this cache id, as the Dockerfiles write it (e.g. cargo-home, target-workspace-${TARGETPLATFORM})
    #[arg(long)]
    pub id: Option<String>,
    /// Only caches unused for at least this long (90m, 12h, 7d, 2w)
    #[arg(long, value_name = "DURATION")]
    pub older_than: Option<String>,
    /// Remove the least recently used until this much of this workspace's cache stays (10GB)
    #[arg(long, value_name = "SIZE")]
    pub keep_storage: Option<String>,
    /// Print what would be removed; remove nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// How many of the newest runs to show
    #[arg(long, default_value_t = 20)]
    pub last: usize,
    /// Print the runs and per-image statistics as JSON
    #[arg(long)]
    pub json: bool,
    /// Write an SVG of each image's build time over the runs to FILE (relative to the root)
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Show every input of IMAGE's last run that differs from its previous successful run
    #[arg(long, value_name = "IMAGE")]
    pub explain: Option<String>,
    /// Whose runs: `docker-build` (this workspace's own, the default), `bench` or
    /// `verify-parallel` (their builds from sandboxes), or `all` (with a source column)
    #[arg(long, default_value = "docker-build", value_parser = ["docker-build", "bench", "verify-parallel", "all"])]
    pub source: String,
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
    Up {
        /// Start a second private dockerd beside the first (its own data root, socket and bridge,
        /// docker context `attune-second`), a second builder for `docker-build --builders`
        #[arg(long)]
        second: bool,
        /// Where the engine keeps images. `containerd` (a new engine's default): the default
        /// docker driver exports BuildKit's layer cache (--cache-layers, --cache-to, --builders)
        /// and builds several platforms. `classic` (dockerd's overlay2): loading new layers costs
        /// about a third (64 images' new layers: 3.1-3.5 s against 9.3-11.2 s, docs/SCALING.md
        /// run 12), without those. A running engine on the other store is restarted; each store
        /// keeps its own images. Left out: the store the engine uses
        #[arg(long, value_enum, value_name = "STORE")]
        image_store: Option<crate::engine_config::ImageStore>,
    },
    /// Stop the private dockerd and the local registry that `up` started (found by their pid
    /// files), and nothing else
    Down {
        /// Stop only the second dockerd and remove its bridge, NAT rules and context
        #[arg(long)]
        second: bool,
    },
    /// Say which engine is reachable, its versions, whether the base images are present, and
    /// the local registry's address (exit 1 when no engine with buildx answers)
    Status {
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Args)]
pub struct DockerBuildArgs {
    #[command(flatten)]
    pub build: BuildOptions,
    /// Build even the images whose recorded inputs show them up to date
    #[arg(long)]
    pub force: bool,
    /// How many builds run at once (0: up to 16 at once; more failed on one engine, docs/SCALING.md)
    ///
    /// The images built after the builder's binaries were exported first run as one `docker
    /// buildx bake` (one buildx client for all); with N, as bakes of N targets, one after another.
    #[arg(long, short = 'j', default_value_t = 0)]
    pub jobs: usize,
    /// Print the exact commands, in the order and grouping in which they would run; run nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print the summary as JSON on stdout (progress stays on stderr); with --dry-run, the plan
    #[arg(long)]
    pub json: bool,
    /// Where each image's log goes, relative to the workspace root
    #[arg(long, default_value = "target/xtask/logs", env = "ATTUNE_LOG_DIR")]
    pub log_dir: PathBuf,
    /// What to do when no engine is reachable: `auto` starts the private one (cargo xtask engine
    /// up), `external` only reports it
    #[arg(long, value_enum, default_value_t = EngineMode::Auto, env = "ATTUNE_ENGINE")]
    pub engine: EngineMode,
    /// Import the build caches from this directory (or registry://HOST:PORT/REPO) for the
    /// builds, and export them to it when a cargo step compiled something (both beside the
    /// builds where the Dockerfiles lock their target caches; see `cargo xtask cache --help`)
    #[arg(long, value_name = "LOCATION")]
    pub cache: Option<String>,
    /// With --cache: a cache that cannot be imported or exported is an error (exit 1), not a
    /// warning
    #[arg(long, requires = "cache")]
    pub cache_strict: bool,
    #[command(flatten)]
    pub layers: LayersArg,
    /// After the builds, export cargo's own timing report of the cargo step (`cargo build
    /// --timings`) to target/xtask/timings/ and name the slowest crates; the strategy's Dockerfile
    /// needs a `timings` stage (the workspace strategy has one; others: exit 2)
    #[arg(long)]
    pub timings: bool,
}

/// `--cache-layers`, the one switch of what a cache entry carries, for `docker-build --cache` and
/// `cache export` alike.
#[derive(Debug, Clone, Args)]
pub struct LayersArg {
    /// Carry BuildKit's layer cache too (`mode=max`), not only the cache mounts' contents (the
    /// cargo home, the target directories). Off by default: measured by `bench --scenarios
    /// ephemeral`, the layers cost more to export and import than they save once a source file
    /// changed (docs/BENCHMARKS.md). With docker-build it needs --cache
    #[arg(long)]
    pub cache_layers: bool,
}

/// What to build and how: the options `docker-build` and `bake-file` share.
#[derive(Debug, Clone, Args)]
pub struct BuildOptions {
    /// Images or groups to build (default: all). Both are declared in [workspace.metadata.attune]
    /// of Cargo.toml (`all` is every image); an unknown name exits 2 listing the known ones
    pub images: Vec<String>,
    /// Build strategy: `workspace` (one builder compiles every binary once for all images; the
    /// default), `per-service` (a builder and target cache per service), or another one declared
    /// in [workspace.metadata.attune.strategies]
    #[arg(long)]
    pub strategy: Option<String>,
    /// Image tag (default: the declaration's tag, `dev`)
    #[arg(long)]
    pub tag: Option<String>,
    /// Registry and namespace to prefix image names with, e.g. registry.example/attune (required
    /// with --push)
    #[arg(long)]
    pub registry: Option<String>,
    /// The buildx builder to use (a remote or Kubernetes BuildKit, for instance)
    #[arg(long, conflicts_with = "builders")]
    pub builder: Option<String>,
    /// Spread the images over these builders (buildx builder names or docker contexts,
    /// comma-separated). With the workspace strategy the builder stage runs once, on the first
    /// builder, and reaches the others as a layer cache in --registry
    #[arg(long, value_delimiter = ',')]
    pub builders: Vec<String>,
    /// With --builders: do not run a failed build again on another builder
    #[arg(long)]
    pub no_retry: bool,
    /// Target platforms, repeatable or comma-separated (e.g. linux/amd64,linux/arm64)
    #[arg(long, value_delimiter = ',')]
    pub platform: Vec<String>,
    /// Push images instead of loading them into the engine, as one set: each build pushes only a
    /// staging tag (xtask-staging-TAG), and only when every build succeeded do all tags move to
    /// the pushed digests at once; a failed set moves no tag (exit 1)
    #[arg(long)]
    pub push: bool,
    /// With --push: push each image's tag as soon as its build finishes (a failed set is then
    /// partly published)
    #[arg(long, requires = "push")]
    pub push_partial: bool,
    /// External cache sources, as for buildx; `{image}` is replaced by the image name
    #[arg(long)]
    pub cache_from: Vec<String>,
    /// External cache destinations, as for buildx; `{image}` is replaced by the image name
    #[arg(long)]
    pub cache_to: Vec<String>,
    /// Extra build arguments (KEY=VALUE) for every image. SERVICE is the declaration's and cannot
    /// be set. Values whose name contains TOKEN, SECRET, PASSWORD, PASSWD, KEY, CREDENTIAL or AUTH
    /// (any case) are shown as `***` in logs, --dry-run and --json; they still end up in the
    /// image's build history, so pass secrets with --secret instead
    #[arg(long)]
    pub build_arg: Vec<String>,
    /// A secret for `RUN --mount=type=secret,id=NAME`, as for buildx: id=NAME,src=FILE or
    /// id=NAME,env=VAR (repeatable); never stored in the image or its history
    #[arg(long)]
    pub secret: Vec<String>,
    /// An SSH agent socket or keys for `RUN --mount=type=ssh` (cargo's git fetches of private
    /// dependencies), as for buildx: `default` or ID=SOCKET|KEY[,KEY] (repeatable)
    #[arg(long)]
    pub ssh: Vec<String>,
    /// Do not use the layer cache (note: BuildKit then also drops the cache mounts the build uses)
    #[arg(long)]
    pub no_cache: bool,
    /// Always try to pull newer base images
    #[arg(long)]
    pub pull: bool,
    /// The compression of the images' new layers. Default: uncompressed for images loaded into
    /// the engine (it unpacks them at once: gzip only costs CPU, 0.5 s instead of 0.1 s for a
    /// 15 MB binary, docs/SCALING.md), BuildKit's (gzip) for --push
    #[arg(long, value_enum)]
    pub compression: Option<crate::target::Compression>,
}

#[derive(Debug, Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub cmd: CacheCmd,
}

#[derive(Debug, Subcommand)]
pub enum CacheCmd {
    /// Size and last use of every cache mount id in docker/Dockerfile*, and the layer cache total
    Du(CacheDuArgs),
    /// Remove this workspace's cache mounts (never another project's), least recently used first
    Prune(CachePruneArgs),
    /// Run the builds (normally all layer-cached), copy the cache mounts out with a helper build,
    /// and publish them as one entry at LOCATION (with --cache-layers, the builds' layer cache
    /// too, as docker-build --cache does); prints sizes and times
    Export {
        /// The directory (created when missing) or registry://HOST:PORT/REPO to export to
        #[arg(long, value_name = "LOCATION")]
        to: String,
        #[command(flatten)]
        layers: LayersArg,
        #[command(flatten)]
        build: CacheBuildArgs,
    },
    /// Unpack the entry for these builds (or the closest one of the same toolchain and platform)
    /// into the engine's cache mounts, and stage its layer cache in target/xtask/cache/layers-in
    ///
    /// A missing location, no usable entry or a damaged archive is a one-line warning (exit 0);
    /// with --cache-strict, exit 1.
    Import {
        /// The directory or registry://HOST:PORT/REPO to import from
        #[arg(long, value_name = "LOCATION")]
        from: String,
        #[command(flatten)]
        build: CacheBuildArgs,
    },
}

/// The builds whose caches travel: as for docker-build.
#[derive(Debug, Args)]
pub struct CacheBuildArgs {
    /// Images or groups (default: all)
    pub images: Vec<String>,
    /// Build strategy (default: the declaration's)
    #[arg(long)]
    pub strategy: Option<String>,
    /// Build arguments (KEY=VALUE), as given to docker-build (RUST_VERSION and RUSTFLAGS are part
    /// of the key)
    #[arg(long)]
    pub build_arg: Vec<String>,
    /// The one target platform (default: the engine's)
    #[arg(long)]
    pub platform: Option<String>,
    /// The buildx builder to use
    #[arg(long)]
    pub builder: Option<String>,
    /// A cache that cannot be carried is an error (exit 1), not a warning
    #[arg(long)]
    pub cache_strict: bool,
    /// Print the commands; run nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Where the logs go, relative to the workspace root
    #[arg(long, default_value = "target/xtask/logs", env = "ATTUNE_LOG_DIR")]
    pub log_dir: PathBuf,
    /// What to do when no engine is reachable (as for docker-build)
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
    /// bake-print, docker-build, timings, history-plot, history-explain, cache-du,
    /// cache-prune-dry-run, smoke, smoke-compose, engine-guards, engine-second, farm-publish,
    /// cache-flow, verify-parallel); repeatable. For local use: CI skips nothing
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
    /// Images to build in parallel, comma-separated (default: the declaration's `measure`, the
    /// services); the reuse test builds the first
    #[arg(long, value_delimiter = ',')]
    pub images: Vec<String>,
    /// Race test: how many cold parallel builds (default 5; 2 with --quick)
    #[arg(long)]
    pub runs: Option<usize>,
    /// Which Dockerfiles to build: a strategy of [workspace.metadata.attune.strategies]
    /// (default: the declared default). `per-service` (docker/Dockerfile.*optimized),
    /// `workspace` (docker/Dockerfile.workspace: one shared builder, so the perf test, which
    /// compares per-image cargo steps, does not apply: race and reuse do) or `seed` (the seed
    /// design's recipe, docker/reference/)
    #[arg(long)]
    pub strategy: Option<String>,
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
    pub build: BuildOptions,
    /// Instead of printing the file, run `docker buildx bake --print` on it and check that bake
    /// reads back every planned setting (exit 1 naming each difference)
    #[arg(long)]
    pub check_print: bool,
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
    /// Images or groups to build (default: the declaration's `measure`)
    pub images: Vec<String>,
    /// Contenders, by key: the declaration's strategies (per-service, workspace, chef), bake,
    /// compose, native (default: all of these); `farm` (the default strategy on --builders) and
    /// `publish` (an atomic publish to --registry) only when named. For `--scenarios ephemeral`:
    /// cache, cache-layers, cache-nofix, cold, chef, native, native-nofix
    #[arg(long, value_delimiter = ',')]
    pub contenders: Vec<String>,
    /// Scenarios: cold, common, api, noop (default: all, in that order); or `ephemeral` alone
    /// (CI runners that start empty), or `scale` alone (generated workspaces of --sizes images
    /// and the --deps dependency set: cold, common, service, noop, ephemeral with sccache)
    #[arg(long, value_delimiter = ',')]
    pub scenarios: Vec<String>,
    /// Repetitions of everything, contenders rotating
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// The builders of the `farm` contender (named only with --contenders farm): buildx builder
    /// names or docker contexts; `attune-second` is the second engine (`engine up --second`)
    #[arg(long, value_delimiter = ',', default_value = "default,attune-second")]
    pub builders: Vec<String>,
    /// Where the `farm` contender shares its builder stage and the `publish` contender publishes
    #[arg(long, default_value = "127.0.0.1:5000/attune-bench")]
    pub registry: String,
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
    /// `--scenarios scale`: the sizes, in service images, of the generated workspaces
    /// (default 8,32,64; --smoke: 8)
    #[arg(long, value_delimiter = ',')]
    pub sizes: Vec<usize>,
    /// `--scenarios scale`: the dependency set, `real` (the platform's, ~650 crates in Cargo.lock)
    /// or `small` (this workspace's) (default real; --smoke: small)
    #[arg(long)]
    pub deps: Option<String>,
    /// `--scenarios scale`: which steps run, of cold, common, service, noop, ephemeral (default
    /// all; --smoke: all but ephemeral)
    #[arg(long, value_delimiter = ',')]
    pub steps: Vec<String>,
    /// `--scenarios scale`: the sccache binary the sccache contender puts in its builder (default:
    /// `sccache` on PATH)
    #[arg(long)]
    pub sccache: Option<PathBuf>,
    /// `--scenarios scale`: write the growth picture (time and carried size against images and
    /// crates) as SVG
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// `--scenarios scale`: add the sizes of earlier runs' `--json` reports to this run's report
    /// (goals and picture over all of them); without --sizes or --smoke, run nothing and render
    /// them
    #[arg(long, value_delimiter = ',')]
    pub merge: Vec<PathBuf>,
}
