//! `cargo xtask bench`: this project's build strategies side by side with what its users would
//! otherwise pick, on the same Dockerfiles, engine and machine, in one run.
//!
//! Every contender builds the same images (default: the declaration's `measure`) in its
//! own temporary copy of the build context (a [`Sandbox`]) whose cache-mount ids carry a fresh
//! namespace, so `cold` starts from empty cache mounts; `cold` also appends a unique comment to
//! the root Cargo.toml, because BuildKit's layer cache key ignores cache-mount ids and would
//! otherwise hand one contender another's identical cargo layer. Scenarios run in order on the same sandbox: `cold`, `common` (a file of crates/common
//! changed), `api` (a file of crates/api changed), `noop` (nothing changed). Repetitions rotate the
//! contenders' order. The reference row is native cargo on the host (`cargo build --release
//! --workspace --bins`, fresh target directory and cargo home for `cold`).
//!
//! `--scenarios ephemeral` ([`ephemeral`]) is another kind of run: CI runners that start empty.
//!
//! Longer than 500 lines: the contenders, the scenarios that run them and the report's table and
//! Markdown are one command's; the running goes through the sandbox and the session.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    time::Instant,
};

use crate::proc::{Command, ExitStatus, Stdio};

use anyhow::Context;
use serde::Serialize;

pub mod ephemeral;
pub mod scale;

use crate::{
    compose, flags, history, plan,
    sandbox::{nonce, Sandbox},
    target::bake_file,
    util::Status,
    util::UsageError,
    workspace::{self, Declaration},
};

/// A way to build the images.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Contender {
    /// `cargo xtask docker-build --strategy <name>` for each strategy of the declaration.
    Xtask(String),
    /// `docker buildx bake` with the file `bake-file` generates (the default strategy).
    Bake,
    /// `docker compose build` with the docker-compose.yaml `compose-file` generates (the default
    /// strategy, as committed).
    Compose,
    /// Native cargo on the host: the physical limit.
    Native,
    /// The default strategy spread over several builders (`--builders`), the builder stage
    /// shared through the registry's layer cache.
    Farm { builders: String, registry: String },
    /// The default strategy with an atomic publish to the registry (`--push --registry`).
    Publish { registry: String },
}

pub const SCENARIOS: &[&str] = &["cold", "common", "api", "noop"];

impl Contender {
    pub fn name(&self) -> String {
        match self {
            Contender::Xtask(s) if s == "chef" => "cargo-chef (xtask --strategy chef)".into(),
            Contender::Xtask(strategy) => format!("xtask {strategy}"),
            Contender::Bake => "buildx bake".into(),
            Contender::Compose => "compose build".into(),
            Contender::Native => "native cargo".into(),
            Contender::Farm { builders, .. } => format!("xtask on {builders}"),
            Contender::Publish { .. } => "xtask --push (atomic publish)".into(),
        }
    }

    /// Whether it is `docker-build`, whose `--json` report says which cargo step ran where.
    fn reports(&self) -> bool {
        matches!(
            self,
            Contender::Xtask(_) | Contender::Farm { .. } | Contender::Publish { .. }
        )
    }

    /// The docker-build strategy whose Dockerfiles this contender builds (bake and compose build
    /// the `default` one, as their generated files do); none for native cargo.
    fn strategy<'a>(&'a self, default: &'a str) -> Option<&'a str> {
        match self {
            Contender::Xtask(s) => Some(s),
            Contender::Bake
            | Contender::Compose
            | Contender::Farm { .. }
            | Contender::Publish { .. } => Some(default),
            Contender::Native => None,
        }
    }

    /// The command line, run from the sandbox root.
    pub fn argv(&self, xtask: &Path, images: &[String], tag: &str) -> Vec<String> {
        let mut argv: Vec<String> = match self {
            Contender::Xtask(strategy) => vec![
                xtask.display().to_string(),
                "docker-build".into(),
                "--strategy".into(),
                strategy.clone(),
                "--tag".into(),
                tag.into(),
                "--engine".into(),
                "external".into(),
                "--log-dir".into(),
                "bench-logs".into(),
                "--json".into(),
            ],
            Contender::Farm { builders, registry } => vec![
                xtask.display().to_string(),
                "docker-build".into(),
                "--tag".into(),
                tag.into(),
                "--engine".into(),
                "external".into(),
                "--log-dir".into(),
                "bench-logs".into(),
                "--json".into(),
                "--builders".into(),
                builders.clone(),
                "--registry".into(),
                registry.clone(),
            ],
            Contender::Publish { registry } => vec![
                xtask.display().to_string(),
                "docker-build".into(),
                "--tag".into(),
                tag.into(),
                "--engine".into(),
                "external".into(),
                "--log-dir".into(),
                "bench-logs".into(),
                "--json".into(),
                "--push".into(),
                "--registry".into(),
                registry.clone(),
            ],
            Contender::Bake => [
                "docker",
                "buildx",
                "bake",
                "--file",
                "docker-bake.json",
                "--progress=plain",
            ]
            .map(String::from)
            .into(),
            Contender::Compose => ["docker", "compose", "build"].map(String::from).into(),
            Contender::Native => {
                return [
                    "cargo",
                    "build",
                    "--release",
                    "--workspace",
                    "--exclude",
                    "xtask",
                    "--bins",
                ]
                .map(String::from)
                .into()
            }
        };
        argv.extend(images.iter().cloned());
        argv
    }
}

/// One timed run.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Sample {
    pub contender: String,
    pub scenario: String,
    pub rep: usize,
    pub seconds: f64,
    pub ok: bool,
    pub log: PathBuf,
    /// Crates cargo compiled (distinct), from the logs of the images whose cargo step ran
    /// (docker-build's `--json` report) or from the run's log.
    pub compiled: usize,
    /// Crates compiled by more than one cargo step (on different builders); none when the
    /// contender has no per-image report.
    pub compiled_twice: Option<usize>,
    /// docker-build's `recording_seconds`: what writing its history record took.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording_seconds: Option<f64>,
    /// Of `seconds`: how long the private engine's dockerd stayed busy after the command
    /// returned ([`crate::engine_idle`]); none when the engine is not the private one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_seconds: Option<f64>,
    /// The private engine's disk was under its GC floor when the run ended
    /// ([`crate::engine::EngineDir::under_gc_floor`]): BuildKit may have pruned cache this run or a
    /// later one used, so their times may include downloads and compiles that are not theirs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub under_gc_floor: bool,
}

/// Runs a contender's command: its exit status and seconds, with the work it left the private
/// engine added (a bake's build records: [`crate::engine_idle`]), and that work's seconds.
fn timed(cmd: &mut Command, argv: &[String]) -> anyhow::Result<(ExitStatus, f64, Option<f64>)> {
    let dockerd = crate::engine_idle::private_dockerd();
    let clock = Instant::now();
    let status =
        crate::proc::status(cmd).with_context(|| format!("cannot run {}", argv.join(" ")))?;
    let command = clock.elapsed().as_secs_f64();
    let limit = std::time::Duration::from_secs(60);
    let engine = dockerd.map(|pid| crate::engine_idle::busy_after(pid, limit));
    Ok((status, command + engine.unwrap_or(0.0), engine))
}

/// Medians per scenario and contender, with ratios.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Row {
    pub scenario: String,
    pub contender: String,
    pub runs: usize,
    pub failed: usize,
    pub median: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// median / median of this project's default strategy
    pub vs_default: Option<f64>,
    /// median / median of native cargo
    pub vs_native: Option<f64>,
    /// The most crates a run compiled, and compiled twice.
    pub compiled: usize,
    pub compiled_twice: Option<usize>,
    /// Median of the runs' history recording, and its share of the median wall time.
    pub recording: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub date: String,
    pub command: String,
    pub cores: usize,
    pub engine: String,
    pub buildx: String,
    pub images: Vec<String>,
    pub reps: usize,
    pub default_strategy: String,
    pub samples: Vec<Sample>,
    pub rows: Vec<Row>,
}

pub fn run(root: &Path, args: flags::BenchArgs) -> anyhow::Result<Status> {
    if args.scenarios.iter().any(|s| s == scale::SCENARIO) {
        return scale::run(root, &args);
    }
    scale::refuse_scale_flags(&args)?;
    let decl = workspace::load(root)?;
    let names = if args.images.is_empty() {
        &decl.measure
    } else {
        &args.images
    };
    let images: Vec<String> = decl.select(names)?.iter().map(|i| i.name.clone()).collect();
    let scenarios: Vec<String> = if args.scenarios.is_empty() {
        SCENARIOS.iter().map(|s| s.to_string()).collect()
    } else {
        args.scenarios.clone()
    };
    if let Some(bad) = (scenarios.iter())
        .find(|s| !SCENARIOS.contains(&s.as_str()) && s.as_str() != ephemeral::SCENARIO)
    {
        return Err(UsageError(format!(
            "unknown scenario `{bad}`; scenarios: {}, {}, {}",
            SCENARIOS.join(", "),
            ephemeral::SCENARIO,
            scale::SCENARIO
        ))
        .into());
    }
    if args.reps == 0 && !args.smoke {
        return Err(UsageError("--reps 0: at least one repetition (--reps 1)".into()).into());
    }
    let reps = if args.smoke { 1 } else { args.reps };
    if scenarios.iter().any(|s| s == ephemeral::SCENARIO) {
        if scenarios.len() > 1 {
            return Err(UsageError(format!(
                "--scenarios {}: `ephemeral` runs alone (it wipes the engine's build cache before every build)",
                scenarios.join(",")
            ))
            .into());
        }
        return run_ephemeral(root, &decl, &images, &args, reps);
    }
    let contenders = contenders(&decl, &args)?;
    if args.dry_run {
        for c in &contenders {
            println!(
                "{}: {}",
                c.name(),
                c.argv(Path::new("xtask"), &images, "bench").join(" ")
            );
        }
        println!("scenarios: {} x {reps} repetition(s)", scenarios.join(", "));
        return Ok(Status::Ok);
    }
    let (xtask, out_dir) = prepare(root, &decl, &images, &args)?;
    let mut samples = Vec::new();
    for rep in 0..reps {
        let mut order = contenders.clone();
        order.rotate_left(rep % contenders.len().max(1));
        for contender in &order {
            let samples_of = run_contender(
                root, &decl, contender, &images, &scenarios, rep, &xtask, &out_dir,
            )?;
            samples.extend(samples_of);
        }
    }
    let default = Contender::Xtask(decl.default_strategy.clone()).name();
    let run = crate::docker::run_environment();
    let rows = rows(&samples, &scenarios, &contenders, &default);
    let report = BenchReport {
        date: run.date,
        command: run.command,
        cores: run.cores,
        engine: run.engine,
        buildx: run.buildx,
        images,
        reps,
        default_strategy: decl.default_strategy.clone(),
        samples,
        rows,
    };
    print!("{}", render_table(&report));
    if let Some(path) = &args.json {
        fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.markdown {
        fs::write(path, render_markdown(&report))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let failed = report.samples.iter().filter(|s| !s.ok).count();
    Ok(Status::from_ok(failed == 0))
}

/// Before any run: the engine and base images (the preflight of the default strategy's builds),
/// the xtask binary the contenders run, the output directory.
fn prepare(
    root: &Path,
    decl: &Declaration,
    images: &[String],
    args: &flags::BenchArgs,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let preflight_plan = plan::plan(
        decl,
        &decl.select(images)?,
        &plan::Options {
            strategy: decl.default_strategy.clone(),
            tag: "bench".into(),
            ..Default::default()
        },
    )?;
    crate::session::preflight(root, &preflight_plan, flags::EngineMode::Auto, false)?;
    let xtask = std::env::current_exe().context("cannot find the xtask binary")?;
    let out_dir = root.join(&args.out_dir);
    fs::create_dir_all(&out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    Ok((xtask, out_dir))
}

fn run_ephemeral(
    root: &Path,
    decl: &Declaration,
    images: &[String],
    args: &flags::BenchArgs,
    reps: usize,
) -> anyhow::Result<Status> {
    let contenders = ephemeral::select(&args.contenders)?;
    if args.dry_run {
        print!(
            "{}",
            ephemeral::describe(&contenders, images, reps, &ephemeral::CHANGES)
        );
        return Ok(Status::Ok);
    }
    let (xtask, out_dir) = prepare(root, decl, images, args)?;
    let report = ephemeral::run(
        root,
        decl,
        images,
        &contenders,
        reps,
        &xtask,
        &out_dir,
        &ephemeral::CHANGES,
    )?;
    let run = crate::docker::run_environment();
    print!("{}", ephemeral::render_table(&report));
    println!(
        "{} cores, engine {}, {}; images {}; {reps} repetition(s)",
        run.cores,
        run.engine,
        run.buildx,
        images.join(" ")
    );
    if let Some(path) = &args.json {
        fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.markdown {
        let text = format!(
            "Measured by `{}` on {} ({} cores, Docker engine {}, {}). Images: {}. {reps} repetition(s).\n\n{}",
            run.command,
            run.date,
            run.cores,
            run.engine,
            run.buildx,
            images.join(", "),
            ephemeral::render_markdown(&report)
        );
        fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let failed = report.samples.iter().filter(|s| !s.ok).count();
    Ok(Status::from_ok(failed == 0))
}

fn contenders(decl: &Declaration, args: &flags::BenchArgs) -> anyhow::Result<Vec<Contender>> {
    let mut all: Vec<Contender> = (decl.strategies.iter())
        .filter(|(_, s)| s.bench)
        .map(|(name, _)| Contender::Xtask(name.clone()))
        .collect();
    // this project's default first
    let default = Contender::Xtask(decl.default_strategy.clone());
    all.sort_by_key(|c| *c != default);
    all.extend([Contender::Bake, Contender::Compose, Contender::Native]);
    if args.smoke {
        return Ok(vec![all[0].clone(), Contender::Native]);
    }
    if args.contenders.is_empty() {
        return Ok(all);
    }
    // only when named: they need a second builder and the registry
    all.extend([
        Contender::Farm {
            builders: args.builders.join(","),
            registry: args.registry.clone(),
        },
        Contender::Publish {
            registry: args.registry.clone(),
        },
    ]);
    let key = |c: &Contender| match c {
        Contender::Xtask(s) => s.to_string(),
        Contender::Bake => "bake".into(),
        Contender::Compose => "compose".into(),
        Contender::Native => "native".into(),
        Contender::Farm { .. } => "farm".into(),
        Contender::Publish { .. } => "publish".into(),
    };
    let mut chosen = Vec::new();
    for wanted in &args.contenders {
        match all.iter().find(|c| key(c) == *wanted) {
            Some(c) => chosen.push(c.clone()),
            None => {
                return Err(UsageError(format!(
                    "unknown contender `{wanted}`; contenders: {}",
                    all.iter().map(key).collect::<Vec<_>>().join(", ")
                ))
                .into())
            }
        }
    }
    Ok(chosen)
}

#[allow(clippy::too_many_arguments)]
fn run_contender(
    root: &Path,
    decl: &Declaration,
    contender: &Contender,
    images: &[String],
    scenarios: &[String],
    rep: usize,
    xtask: &Path,
    out_dir: &Path,
) -> anyhow::Result<Vec<Sample>> {
    let run = ContenderRun::new(root, decl, contender, images, xtask, out_dir)?;
    let mut samples = Vec::new();
    for scenario in scenarios {
        samples.push(run.scenario(contender, scenario, rep)?);
    }
    Ok(samples)
}

/// One contender's sandbox (its own cache namespace) and what its runs need; scenarios run in
/// it one after the other, and another contender may run in it after them ([`scale`]: bake's
/// no-op after docker-build's).
pub struct ContenderRun<'a> {
    root: &'a Path,
    decl: &'a Declaration,
    images: &'a [String],
    xtask: &'a Path,
    out_dir: &'a Path,
    sandbox: Sandbox,
    namespace: String,
    /// The workspace's git state, asked once here for the records of the sandbox's builds.
    git: String,
}

fn slug(contender: &Contender) -> String {
    (contender.name().chars())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

impl<'a> ContenderRun<'a> {
    pub fn new(
        root: &'a Path,
        decl: &'a Declaration,
        contender: &Contender,
        images: &'a [String],
        xtask: &'a Path,
        out_dir: &'a Path,
    ) -> anyhow::Result<ContenderRun<'a>> {
        let sandbox = Sandbox::create(root, &format!("bench-{}", slug(contender)), false)?;
        let git = history::git_env_value(root);
        let namespace = format!("bench-{}", nonce());
        prepare_sandbox(decl, contender, images, &sandbox, &namespace)?;
        Ok(ContenderRun {
            root,
            decl,
            images,
            xtask,
            out_dir,
            sandbox,
            namespace,
            git,
        })
    }

    /// Lets `other` run in this sandbox too (its files written, the same cache namespace).
    pub fn admit(&self, other: &Contender) -> anyhow::Result<()> {
        prepare_sandbox(
            self.decl,
            other,
            self.images,
            &self.sandbox,
            &self.namespace,
        )
    }

    /// `scenario`'s change, then one timed run of `contender`.
    pub fn scenario(
        &self,
        contender: &Contender,
        scenario: &str,
        rep: usize,
    ) -> anyhow::Result<Sample> {
        let (root, decl, images, sandbox) = (self.root, self.decl, self.images, &self.sandbox);
        change_for(scenario, decl, images, sandbox, &self.namespace)?;
        let slug = slug(contender);
        let log = self
            .out_dir
            .join(format!("{slug}-{scenario}-{}.log", rep + 1));
        let argv = contender.argv(self.xtask, images, "bench");
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .current_dir(&sandbox.root)
            .env_remove("CARGO_MANIFEST_DIR")
            .stdin(Stdio::null());
        if contender.reports() {
            // its record goes to the workspace's history (the sandbox's goes away), marked
            cmd.env(history::FILE_ENV, history::path(root))
                .env(history::SOURCE_ENV, "bench")
                .env(history::GIT_ENV, &self.git);
        }
        if *contender == Contender::Compose {
            cmd.env(compose::TAG_VAR, "bench");
        }
        if *contender == Contender::Native {
            cmd.env("CARGO_TARGET_DIR", sandbox.root.join("target-native"))
                .env("CARGO_HOME", sandbox.root.join("cargo-home-native"));
        }
        let file =
            fs::File::create(&log).with_context(|| format!("cannot write {}", log.display()))?;
        // docker-build's --json report goes to its own file: which image's cargo step ran where
        let report = log.with_extension("json");
        // the last run's logs stay: docker-build reads them (the layer records its builds of the
        // same images left); this run's are the ones written from now on
        let started = std::time::SystemTime::now();
        if contender.reports() {
            let out = fs::File::create(&report)
                .with_context(|| format!("cannot write {}", report.display()))?;
            cmd.stdout(out).stderr(file);
        } else {
            cmd.stdout(file.try_clone()?).stderr(file);
        }
        eprintln!("bench: rep {} {} {scenario} ...", rep + 1, contender.name());
        let (status, seconds, engine_seconds) = timed(&mut cmd, &argv)?;
        eprintln!(
            "bench: rep {} {} {scenario}: {seconds:.1}s{}{}",
            rep + 1,
            contender.name(),
            match engine_seconds {
                Some(e) if e > 0.0 => format!(" (the engine {e:.1}s after it)"),
                _ => String::new(),
            },
            if status.success() {
                String::new()
            } else {
                format!(" FAILED ({status}); log {}", log.display())
            }
        );
        let under_gc_floor = warn_under_gc_floor();
        if !status.success() {
            // CI keeps only what is printed: the end of the log says which build failed and why
            let text = fs::read_to_string(&log).unwrap_or_default();
            for line in last_lines(&text, 25) {
                eprintln!("bench: | {line}");
            }
        }
        let mut recording_seconds = None;
        let (compiled, compiled_twice) = if contender.reports() {
            let text = fs::read_to_string(&report).unwrap_or_default();
            recording_seconds = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["recording_seconds"].as_f64());
            let (c, twice) = compiled_by_cargo_steps(&text, &sandbox.root);
            // the images' logs outlive the sandbox, beside the run's (where the seconds went);
            // copied: the next docker-build in the sandbox reads them (its superseded layers)
            let kept = log.with_extension("logs");
            let _ = fs::remove_dir_all(&kept);
            copy_logs(&sandbox.root.join("bench-logs"), &kept, started);
            (c, Some(twice))
        } else {
            let text = fs::read_to_string(&log).unwrap_or_default();
            (crate::cargo_log::compiled(&text).len(), None)
        };
        Ok(Sample {
            contender: contender.name(),
            scenario: scenario.into(),
            rep: rep + 1,
            seconds,
            ok: status.success(),
            log,
            compiled,
            compiled_twice,
            recording_seconds,
            engine_seconds,
            under_gc_floor,
        })
    }
}

/// Whether the private engine, when it is the one in use, has its disk under its GC floor now
/// (said on stderr when it has).
fn warn_under_gc_floor() -> bool {
    let dir = crate::engine::EngineDir::from_env();
    let Some((free, min)) = dir.in_use().then(|| dir.under_gc_floor()).flatten() else {
        return false;
    };
    eprintln!(
        "bench: the engine's disk has {free} GiB free, under its GC floor of {min} GiB: BuildKit prunes unused cache, the cache mounts of later steps included; free disk and run again"
    );
    true
}

/// The last `n` lines of `text`.
fn last_lines(text: &str, n: usize) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

/// The sandbox's Dockerfiles for `contender`: their cache ids in `namespace`; bake's file and
/// compose's, for those contenders.
fn prepare_sandbox(
    decl: &Declaration,
    contender: &Contender,
    images: &[String],
    sandbox: &Sandbox,
    namespace: &str,
) -> anyhow::Result<()> {
    if let Some(strategy) = contender.strategy(&decl.default_strategy) {
        // the plan says which Dockerfiles the builds use; their cache ids get the namespace
        let plan = plan::plan(
            decl,
            &decl.select(images)?,
            &plan::Options {
                strategy: strategy.into(),
                tag: "bench".into(),
                log_dir: "bench-logs".into(),
                ..Default::default()
            },
        )?;
        let mut dockerfiles: Vec<PathBuf> = plan
            .builds
            .iter()
            .map(|b| b.dockerfile().to_path_buf())
            .collect();
        dockerfiles.sort();
        dockerfiles.dedup();
        sandbox.prepare_dockerfiles(&dockerfiles, None, namespace)?;
        if *contender == Contender::Bake {
            fs::write(
                sandbox.root.join("docker-bake.json"),
                serde_json::to_string_pretty(&bake_file(plan.builds.iter().map(|b| &b.target))?)?,
            )?;
        }
        if *contender == Contender::Compose {
            // the committed file, rendered for every image (a service's depends-on may name an
            // image the bench does not build); `docker compose build <images>` picks the images.
            // They get the tag `bench` through ATTUNE_TAG, leaving docker-build's `dev` alone.
            let all = plan::plan(
                decl,
                &decl.select(&[])?,
                &plan::Options {
                    strategy: strategy.into(),
                    tag: "bench".into(),
                    ..Default::default()
                },
            )?;
            fs::write(
                sandbox.root.join(compose::FILE),
                compose::render(decl, &all),
            )?;
        }
    }
    Ok(())
}

/// What `scenario` changes in the sandbox before its build: a unique comment in the root
/// manifest (cold), a file of the common crate, or of the first image's crate (api).
fn change_for(
    scenario: &str,
    decl: &Declaration,
    images: &[String],
    sandbox: &Sandbox,
    namespace: &str,
) -> anyhow::Result<()> {
    match scenario {
        "cold" => {
            // BuildKit's layer cache key ignores cache-mount ids: a fresh namespace empties the
            // mounts but would still reuse another contender's (or repetition's) identical
            // cargo layer. A unique comment in the root manifest, which every Dockerfile
            // copies first, leaves no layer to reuse.
            let manifest = sandbox.root.join("Cargo.toml");
            let mut text = fs::read_to_string(&manifest)
                .with_context(|| format!("cannot read {}", manifest.display()))?;
            text.push_str(&format!("\n# bench cold build: {namespace}\n"));
            fs::write(&manifest, text)
                .with_context(|| format!("cannot write {}", manifest.display()))?;
        }
        "common" => {
            sandbox.change(decl.common_crate()?, namespace)?;
        }
        "api" | "service" => {
            // the crate of the first image (api, in the declared order)
            let first = decl.select(&images[..1])?;
            sandbox.change(decl.crate_dir(first[0])?, namespace)?;
        }
        _ => {}
    }
    Ok(())
}

/// The files of a log directory (not its subdirectories) written since `since`, copied to `to`;
/// best effort.
fn copy_logs(from: &Path, to: &Path, since: std::time::SystemTime) {
    let _ = fs::create_dir_all(to);
    for entry in fs::read_dir(from).into_iter().flatten().flatten() {
        let fresh = (entry.metadata().ok())
            .filter(|m| m.is_file())
            .and_then(|m| m.modified().ok())
            .is_some_and(|t| t >= since);
        if fresh {
            let _ = fs::copy(entry.path(), to.join(entry.file_name()));
        }
    }
}

/// From docker-build's `--json` report: the crates compiled by the cargo steps that ran, and how
/// many of them more than one builder compiled. One builder runs an identical step once for all
/// the builds that reach it (a `shared` step, or one several builds report as `ran`), so the logs
/// of the images whose step `ran` are merged per builder (`builder`, none: the default one);
/// a crate in the logs of two builders was compiled twice.
fn compiled_by_cargo_steps(report: &str, root: &Path) -> (usize, usize) {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(report) else {
        return (0, 0);
    };
    let mut per_builder: std::collections::BTreeMap<String, BTreeSet<crate::cargo_log::Unit>> =
        Default::default();
    let mut images = value["images"].as_array().cloned().unwrap_or_default();
    // the builder's binaries built first: the cargo step ran in that build, and the images
    // after it report it as theirs (their logs show the builder cached)
    if value["binaries"]["cargo_step"] == "ran" {
        images.push(value["binaries"].clone());
    }
    for image in images.iter().filter(|i| i["cargo_step"] == "ran") {
        let Some(log) = image["log"].as_str() else {
            continue;
        };
        let builder = image["builder"].as_str().unwrap_or("").to_string();
        let text = fs::read_to_string(root.join(log)).unwrap_or_default();
        per_builder
            .entry(builder)
            .or_default()
            .extend(crate::cargo_log::compiled(&text));
    }
    let mut seen = std::collections::BTreeMap::new();
    for units in per_builder.values() {
        for unit in units {
            *seen.entry(unit.clone()).or_insert(0usize) += 1;
        }
    }
    (seen.len(), seen.values().filter(|n| **n > 1).count())
}

/// Medians and ratios; pure.
pub fn rows(
    samples: &[Sample],
    scenarios: &[String],
    contenders: &[Contender],
    default: &str,
) -> Vec<Row> {
    use crate::history::median;
    let mut out = Vec::new();
    for scenario in scenarios {
        let runs = |contender: &str| -> Vec<&Sample> {
            (samples.iter())
                .filter(|s| s.scenario == *scenario && s.contender == contender)
                .collect()
        };
        let times = |contender: &str| -> Vec<f64> {
            (runs(contender).iter())
                .filter(|s| s.ok)
                .map(|s| s.seconds)
                .collect()
        };
        let default_median = median(&times(default));
        let native_median = median(&times(&Contender::Native.name()));
        for contender in contenders {
            let name = contender.name();
            let all = runs(&name);
            let ok: Vec<&Sample> = all.iter().copied().filter(|s| s.ok).collect();
            let t = times(&name);
            let m = median(&t);
            let ratio = |base: Option<f64>| match (m, base) {
                (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                _ => None,
            };
            let recording: Vec<f64> = ok.iter().filter_map(|s| s.recording_seconds).collect();
            out.push(Row {
                scenario: scenario.clone(),
                contender: name.clone(),
                runs: all.len(),
                failed: all.len() - ok.len(),
                median: m,
                min: t.iter().copied().reduce(f64::min),
                max: t.iter().copied().reduce(f64::max),
                vs_default: ratio(default_median),
                vs_native: ratio(native_median),
                compiled: ok.iter().map(|s| s.compiled).max().unwrap_or(0),
                compiled_twice: ok.iter().filter_map(|s| s.compiled_twice).max(),
                recording: median(&recording),
            });
        }
    }
    out
}

fn fmt_opt(v: Option<f64>, suffix: &str) -> String {
    v.map(|v| format!("{v:.2}{suffix}"))
        .unwrap_or_else(|| "-".into())
}

pub fn render_table(report: &BenchReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{:<8} {:<36} {:>4} {:>9} {:>17} {:>10} {:>9} {:>8} {:>5}",
        "scenario",
        "contender",
        "runs",
        "median",
        "min-max",
        "vs ours",
        "vs native",
        "compiled",
        "twice"
    );
    for row in &report.rows {
        let range = match (row.min, row.max) {
            (Some(a), Some(b)) => format!("{a:.1}-{b:.1}s"),
            _ => "-".into(),
        };
        let _ = writeln!(
            out,
            "{:<8} {:<36} {:>4} {:>9} {:>17} {:>10} {:>9} {:>8} {:>5}{}",
            row.scenario,
            row.contender,
            row.runs,
            fmt_opt(row.median, "s"),
            range,
            fmt_opt(row.vs_default, "x"),
            fmt_opt(row.vs_native, "x"),
            row.compiled,
            row.compiled_twice
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into()),
            if row.failed > 0 {
                format!("  ({} FAILED)", row.failed)
            } else {
                String::new()
            }
        );
    }
    for row in report.rows.iter().filter(|r| r.scenario == "noop") {
        if let (Some(rec), Some(m)) = (row.recording, row.median) {
            let _ = writeln!(
                out,
                "noop {}: writing the history record took {:.1} ms of the run's {:.0} ms ({:.1}%)",
                row.contender,
                rec * 1000.0,
                m * 1000.0,
                rec / m * 100.0
            );
        }
    }
    let _ = writeln!(
        out,
        "{} cores, engine {}, {}; images {}; {} repetition(s); `vs ours` is against xtask {}",
        report.cores,
        report.engine,
        report.buildx,
        report.images.join(" "),
        report.reps,
        report.default_strategy
    );
    out
}

pub fn render_markdown(report: &BenchReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(
        out,
        "Measured by `{}` on {} ({} cores, Docker engine {}, {}). Images: {}. {} repetition(s), \
         contenders alternating; median wall time of each scenario, with min-max. `vs ours` is the \
         ratio to `cargo xtask docker-build` with the default strategy (`{}`), `vs native` the ratio \
         to native cargo on the host (the physical limit).\n",
        report.command,
        report.date,
        report.cores,
        report.engine,
        report.buildx,
        report.images.join(", "),
        report.reps,
        report.default_strategy
    );
    let _ = writeln!(
        out,
        "Scenarios: `cold` = empty cache mounts (a fresh cache namespace) and no reusable cargo layer; \
         `common` = one file of crates/common changed; `api` = one file of crates/api changed; \
         `noop` = nothing changed.\n"
    );
    let _ = writeln!(
        out,
        "| scenario | contender | runs | median | min-max | vs ours | vs native | compiled | twice |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for row in &report.rows {
        let range = match (row.min, row.max) {
            (Some(a), Some(b)) => format!("{a:.1}-{b:.1} s"),
            _ => "-".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {}{} | {} | {} | {} | {} | {} | {} |",
            row.scenario,
            row.contender,
            row.runs,
            if row.failed > 0 {
                format!(" ({} failed)", row.failed)
            } else {
                String::new()
            },
            fmt_opt(row.median, " s"),
            range,
            fmt_opt(row.vs_default, "x"),
            fmt_opt(row.vs_native, "x"),
            row.compiled,
            row.compiled_twice
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into()),
        );
    }
    for row in report.rows.iter().filter(|r| r.scenario == "noop") {
        if let (Some(rec), Some(m)) = (row.recording, row.median) {
            let _ = writeln!(
                out,
                "\nnoop, {}: writing the history record took {:.1} ms of the run's {:.0} ms ({:.1}%).",
                row.contender,
                rec * 1000.0,
                m * 1000.0,
                rec / m * 100.0
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_samples_log_is_shown_by_its_last_lines() {
        assert_eq!(last_lines("a\nb\nc\n", 2), ["b", "c"]);
        assert_eq!(last_lines("a\n", 5), ["a"]);
        assert!(last_lines("", 5).is_empty());
    }

    pub(super) fn sample(contender: &str, scenario: &str, seconds: f64, ok: bool) -> Sample {
        Sample {
            contender: contender.into(),
            scenario: scenario.into(),
            rep: 1,
            seconds,
            ok,
            log: PathBuf::new(),
            compiled: 0,
            compiled_twice: None,
            recording_seconds: None,
            engine_seconds: None,
            under_gc_floor: false,
        }
    }

    #[test]
    fn medians_and_ratios_ignore_failed_runs() {
        let ours = Contender::Xtask("workspace".into());
        let samples = vec![
            sample(&ours.name(), "cold", 50.0, true),
            sample(&ours.name(), "cold", 60.0, true),
            sample(&ours.name(), "cold", 55.0, true),
            sample(&Contender::Native.name(), "cold", 40.0, true),
            sample(&Contender::Bake.name(), "cold", 100.0, true),
            sample(&Contender::Bake.name(), "cold", 1.0, false),
        ];
        let rows = rows(
            &samples,
            &["cold".into()],
            &[ours.clone(), Contender::Bake, Contender::Native],
            &ours.name(),
        );
        assert_eq!(rows[0].median, Some(55.0));
        assert_eq!(rows[0].vs_default, Some(1.0));
        assert_eq!(rows[0].vs_native, Some(55.0 / 40.0));
        assert_eq!(rows[1].median, Some(100.0));
        assert_eq!(rows[1].failed, 1);
        assert_eq!(rows[1].vs_default, Some(100.0 / 55.0));
        assert_eq!(rows[2].vs_native, Some(1.0));
    }

    #[test]
    fn the_recording_share_of_a_noop() {
        let ours = Contender::Xtask("workspace".into());
        let mut noop = sample(&ours.name(), "noop", 0.4, true);
        noop.recording_seconds = Some(0.004);
        let rows = rows(
            &[noop],
            &["noop".into()],
            std::slice::from_ref(&ours),
            &ours.name(),
        );
        assert_eq!(rows[0].recording, Some(0.004));
        let report = BenchReport {
            date: String::new(),
            command: String::new(),
            cores: 2,
            engine: String::new(),
            buildx: String::new(),
            images: vec![],
            reps: 1,
            default_strategy: "workspace".into(),
            samples: vec![],
            rows,
        };
        assert!(
            render_table(&report)
                .contains("writing the history record took 4.0 ms of the run's 400 ms (1.0%)"),
            "{}",
            render_table(&report)
        );
    }

    #[test]
    fn crates_compiled_by_more_than_one_cargo_step() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| fs::write(dir.path().join(name), text).unwrap();
        write(
            "a.log",
            "#9 1.0    Compiling serde v1.0.0\n#9 2.0    Compiling attune-api v0.1.0\n",
        );
        write("b.log", "#9 1.0    Compiling serde v1.0.0\n");
        write("c.log", "#9 1.0    Compiling tokio v1.0.0\n");
        // a shared step's log repeats the step that ran: not counted
        let report = r#"{"images": [
            {"image": "api", "cargo_step": "ran", "log": "a.log", "builder": "one"},
            {"image": "executor", "cargo_step": "shared", "log": "c.log", "builder": "one"},
            {"image": "sensor", "cargo_step": "ran", "log": "b.log", "builder": "two"}]}"#;
        assert_eq!(compiled_by_cargo_steps(report, dir.path()), (2, 1));
        // on one builder, two images that report the same step as `ran` compiled it once
        let one = r#"{"images": [
            {"image": "api", "cargo_step": "ran", "log": "a.log"},
            {"image": "sensor", "cargo_step": "ran", "log": "b.log"}]}"#;
        assert_eq!(compiled_by_cargo_steps(one, dir.path()), (2, 0));
        assert_eq!(compiled_by_cargo_steps("not json", dir.path()), (0, 0));
    }

    #[test]
    fn contender_commands() {
        let images = vec!["api".to_string(), "sensor".to_string()];
        assert_eq!(
            Contender::Xtask("workspace".into()).argv(Path::new("/x/xtask"), &images, "bench").join(" "),
            "/x/xtask docker-build --strategy workspace --tag bench --engine external --log-dir bench-logs --json api sensor"
        );
        let farm = Contender::Farm {
            builders: "default,attune-second".into(),
            registry: "127.0.0.1:5000/attune-bench".into(),
        };
        assert_eq!(
            farm.argv(Path::new("x"), &images, "t").join(" "),
            "x docker-build --tag t --engine external --log-dir bench-logs --json --builders default,attune-second --registry 127.0.0.1:5000/attune-bench api sensor"
        );
        let publish = Contender::Publish {
            registry: "127.0.0.1:5000/attune-bench".into(),
        };
        assert_eq!(
            publish.argv(Path::new("x"), &images, "t").join(" "),
            "x docker-build --tag t --engine external --log-dir bench-logs --json --push --registry 127.0.0.1:5000/attune-bench api sensor"
        );
        assert_eq!(
            Contender::Bake.argv(Path::new("x"), &images, "t").join(" "),
            "docker buildx bake --file docker-bake.json --progress=plain api sensor"
        );
        assert_eq!(
            Contender::Compose
                .argv(Path::new("x"), &images, "t")
                .join(" "),
            "docker compose build api sensor"
        );
        assert_eq!(
            Contender::Native
                .argv(Path::new("x"), &images, "t")
                .join(" "),
            "cargo build --release --workspace --exclude xtask --bins"
        );
    }
}
