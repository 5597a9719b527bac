//! `cargo xtask verify-parallel`: the seed design's three verification tests, run for real on
//! the engine, each able to fail.
//!
//! - `perf`: the images built in parallel twice, every cache mount `sharing=locked` and then the
//!   committed policy, each after the same warm-up and the same kind of source change in the
//!   library crate every image depends on (or from empty caches with `--cold`); from BuildKit's
//!   events: wall times, per-image cargo times, the largest number of cargo steps executing at
//!   once, lock waits.
//! - `race`: N parallel builds from cold caches (a fresh cache-id namespace per run), each cargo
//!   step executing, no build failing, no log showing an unpack collision.
//! - `reuse`: one image built twice unchanged (the second fully cached), then after a change in
//!   its own crate (only its COPY and cargo step run again).
//!
//! Every build runs from a temporary copy of the build context ([`Sandbox`]) whose
//! Dockerfiles are rewritten (sharing, cache namespace, exec marker); the working tree is never
//! touched. Pure logic lives in [`analysis`] and [`report`].
//!
//! Longer than 500 lines: the three tests share one context and their report types; the pure
//! parts are already apart ([`analysis`], [`report`]). A next split would give each test its file.

pub mod analysis;
pub mod report;

use std::{
    fs,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::{
    docker,
    dockerfile::Sharing,
    exec::{
        events::Step,
        progress,
        runner::{self, Outcome},
    },
    flags::VerifyParallelArgs,
    history,
    plan::{self, Plan},
    util::Status,
    util::UsageError,
    workspace::{self, Declaration, ImageDecl},
};

use crate::{
    sandbox::{nonce, Sandbox},
    session,
};
use analysis::{CargoSpan, Lane, Metrics};

pub const TESTS: &[&str] = &["perf", "race", "reuse"];
/// Cache-id suffix of the incremental perf and reuse tests: stable, so their caches stay warm
/// between invocations, and apart from the `docker-build` caches.
pub const WARM_NAMESPACE: &str = "verify";

/// One image's build in one phase.
#[derive(Debug, Clone, Serialize)]
pub struct ImageRun {
    pub image: String,
    pub result: Outcome,
    pub wall_seconds: f64,
    pub started_at: f64,
    pub ended_at: f64,
    pub cargo: Option<CargoSpan>,
    pub cargo_pending_seconds: Option<f64>,
    pub cargo_exec_seconds: Option<f64>,
    pub fully_cached: bool,
    /// cargo's own `Blocking waiting for file lock` lines (package-cache lock, not BuildKit's).
    pub cargo_blocking_waits: usize,
    /// Log lines matching the race patterns.
    pub race_lines: Vec<String>,
    pub steps: Vec<StepRecord>,
    pub log: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    pub name: String,
    pub cached: bool,
    pub started: Option<f64>,
    pub first_output: Option<f64>,
    pub completed: Option<f64>,
    pub error: Option<String>,
}

/// A set of builds run in parallel.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub test: String,
    pub run: String,
    /// `locked` or `committed`.
    pub sharing: String,
    pub namespace: String,
    pub change: Option<String>,
    pub wall_seconds: f64,
    pub started_at: f64,
    pub images: Vec<ImageRun>,
    pub metrics: Metrics,
    pub log_dir: PathBuf,
}

impl Phase {
    pub fn lanes(&self) -> Vec<Lane> {
        self.images
            .iter()
            .map(|i| Lane {
                image: i.image.clone(),
                succeeded: i.result == Outcome::Succeeded,
                build_start: i.started_at,
                build_end: i.ended_at,
                cargo: i.cargo.clone(),
            })
            .collect()
    }
    fn log_of(&self, image: &str) -> PathBuf {
        self.images
            .iter()
            .find(|i| i.image == image)
            .map(|i| i.log.clone())
            .unwrap_or_else(|| self.log_dir.clone())
    }
    /// Failed builds and cargo steps that did not run, as failures with their logs.
    fn problems(&self, test: &str, one_builder: bool) -> Vec<Failure> {
        analysis::build_problems(&self.lanes(), one_builder)
            .into_iter()
            .map(|(image, message)| Failure {
                test: test.into(),
                message: format!("{}: {image}: {message}", self.run),
                log: self.log_of(&image),
            })
            .collect()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub test: String,
    pub message: String,
    pub log: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct PerfResult {
    pub cold: bool,
    pub warmups: Vec<Phase>,
    pub locked: Phase,
    pub shared: Phase,
    /// shared wall / locked wall.
    pub ratio: Option<f64>,
    pub passed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RaceRun {
    pub phase: Phase,
    pub failures: Vec<Failure>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RaceResult {
    pub strategy: String,
    pub runs: Vec<RaceRun>,
    pub failed_runs: usize,
    pub passed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReuseResult {
    pub image: String,
    pub first: Phase,
    pub unchanged: Phase,
    pub changed: Phase,
    /// unchanged wall / first wall.
    pub ratio: Option<f64>,
    pub passed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Environment {
    pub date: String,
    pub command: String,
    pub cores: usize,
    pub engine: String,
    pub buildx: String,
    pub strategy: String,
    pub images: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub environment: Environment,
    pub perf: Option<PerfResult>,
    pub race: Option<RaceResult>,
    pub reuse: Option<ReuseResult>,
    pub failures: Vec<Failure>,
    pub passed: bool,
    pub total_seconds: f64,
}

/// Which tests to run and how, from the flags.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    pub perf: bool,
    pub race: bool,
    pub reuse: bool,
    pub runs: usize,
    pub cold: bool,
}

/// `one_builder`: the strategy builds every image in one builder (one cargo step for all
/// images: nothing per image to overlap, so no perf test).
pub fn selection(args: &VerifyParallelArgs, one_builder: bool) -> Result<Selection, UsageError> {
    if one_builder && args.tests.iter().any(|t| t == "perf") {
        return Err(UsageError(
            "the perf test compares per-image cargo steps, and this strategy has one cargo step for all images; run `cargo xtask bench` to compare the strategies, pick a strategy with a builder per image (--strategy), or --tests race,reuse".into(),
        ));
    }
    let mut sel = Selection {
        perf: args.tests.is_empty() && !one_builder,
        race: args.tests.is_empty(),
        reuse: args.tests.is_empty(),
        runs: args.runs.unwrap_or(if args.quick { 2 } else { 5 }),
        cold: args.cold,
    };
    for test in &args.tests {
        match test.as_str() {
            "perf" => sel.perf = true,
            "race" => sel.race = true,
            "reuse" => sel.reuse = true,
            other => {
                return Err(UsageError(format!(
                    "unknown test `{other}` (known: {})",
                    TESTS.join(", ")
                )))
            }
        }
    }
    if sel.runs == 0 {
        return Err(UsageError("--runs must be at least 1".into()));
    }
    if args.quick && args.cold {
        return Err(UsageError(
            "--quick runs the incremental perf test; drop --cold".into(),
        ));
    }
    Ok(sel)
}

struct Ctx<'a> {
    root: &'a Path,
    decl: Declaration,
    strategy: String,
    one_builder: bool,
    tag: String,
    log_root: PathBuf,
    nonce: String,
    keep_temp: bool,
    mode: progress::Mode,
    /// The engine's identity for the history records of the phases' builds.
    engine_id: Option<String>,
}

pub fn run(root: &Path, args: VerifyParallelArgs) -> anyhow::Result<Status> {
    let clock = Instant::now();
    let decl = workspace::load(root)?;
    let strategy = args
        .strategy
        .clone()
        .unwrap_or_else(|| decl.default_strategy.clone());
    let one_builder = decl.strategy(&strategy)?.one_builder();
    let sel = selection(&args, one_builder)?;
    let names: Vec<String> = if args.images.is_empty() {
        decl.measure.clone()
    } else {
        args.images.clone()
    };
    let images: Vec<ImageDecl> = decl.select(&names)?.into_iter().cloned().collect();
    if images.is_empty() {
        return Err(UsageError("no images selected".into()).into());
    }
    let log_root = root.join(&args.log_dir);
    let ctx = Ctx {
        root,
        decl,
        strategy,
        one_builder,
        tag: args.tag.clone(),
        log_root,
        nonce: nonce(),
        keep_temp: args.keep_temp,
        mode: progress::detect_mode(),
        engine_id: None,
    };
    let image_refs: Vec<&ImageDecl> = images.iter().collect();
    // an image the strategy cannot build is a usage error before anything runs
    let probe_plan = ctx.plan(&image_refs, &ctx.log_root)?;
    if args.dry_run {
        print!("{}", dry_run(&ctx, &sel, &image_refs)?);
        return Ok(Status::Ok);
    }
    session::preflight(root, &probe_plan, args.engine, false)?;
    let mut ctx = ctx;
    ctx.engine_id = history::engine_identity(docker::probe().server_version.as_deref());
    let environment = environment(&ctx, &images);
    eprintln!(
        "verify-parallel: {} core(s), engine {}, buildx {}; strategy {}; images {}",
        environment.cores,
        environment.engine,
        environment.buildx,
        ctx.strategy,
        environment.images.join(", ")
    );
    // this invocation's logs only: a previous run's logs of the selected tests go first
    for (test, on) in [("perf", sel.perf), ("race", sel.race), ("reuse", sel.reuse)] {
        let dir = ctx.log_root.join(test);
        if on && dir.is_dir() {
            fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
        }
    }
    let mut failures = Vec::new();
    let perf = if sel.perf {
        Some(perf(&ctx, &image_refs, sel.cold, &mut failures)?)
    } else {
        None
    };
    let race = if sel.race {
        Some(race(&ctx, &image_refs, sel.runs, &mut failures)?)
    } else {
        None
    };
    let reuse = if sel.reuse {
        Some(reuse(&ctx, image_refs[0], &mut failures)?)
    } else {
        None
    };
    let report = VerifyReport {
        environment,
        perf,
        race,
        reuse,
        passed: failures.is_empty(),
        failures,
        total_seconds: clock.elapsed().as_secs_f64(),
    };
    print!("{}", report::render_terminal(&report));
    if let Some(path) = &args.json {
        fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("verify-parallel: wrote {}", path.display());
    }
    if let Some(path) = &args.report {
        let html = path.extension().is_some_and(|e| e == "html");
        let text = if html {
            report::render_html(&report)
        } else {
            report::render_markdown(&report)
        };
        fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("verify-parallel: wrote {}", path.display());
    }
    Ok(Status::from_ok(report.passed))
}

impl Ctx<'_> {
    fn plan(&self, images: &[&ImageDecl], log_dir: &Path) -> Result<Plan, UsageError> {
        let options = plan::Options {
            strategy: self.strategy.clone(),
            tag: self.tag.clone(),
            log_dir: log_dir.to_path_buf(),
            ..plan::Options::default()
        };
        plan::plan(&self.decl, images, &options)
    }

    fn sandbox(&self, test: &str) -> anyhow::Result<Sandbox> {
        Sandbox::create(self.root, &format!("{}-{test}", self.nonce), self.keep_temp)
    }

    /// Prepares the sandbox's Dockerfiles and runs the images' builds in parallel.
    #[allow(clippy::too_many_arguments)]
    fn phase(
        &self,
        sandbox: &Sandbox,
        images: &[&ImageDecl],
        test: &str,
        run: &str,
        sharing: Option<Sharing>,
        namespace: &str,
        change: Option<String>,
    ) -> anyhow::Result<Phase> {
        let log_dir = self.log_root.join(test).join(run);
        let plan = self.plan(images, &log_dir)?;
        let dockerfiles: Vec<PathBuf> = plan
            .builds
            .iter()
            .map(|b| b.dockerfile().to_path_buf())
            .collect();
        sandbox.prepare_dockerfiles(&dockerfiles, sharing, namespace)?;
        let sharing_name = match sharing {
            Some(mode) => mode.to_string(),
            None => "committed".to_string(),
        };
        eprintln!(
            "verify-parallel: {test}/{run}: {} in parallel, cache mounts {sharing_name}, cache namespace -{namespace}{}",
            images.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", "),
            change.as_deref().map(|c| format!(", changed {c}")).unwrap_or_default()
        );
        // the phase's record in the workspace's history: its inputs as the sandbox has them
        let mut snapshot = history::Snapshot::take(&sandbox.root, &plan);
        snapshot.set_engine(self.engine_id.clone());
        let started_at = runner::unix_now();
        let report = session::execute(&sandbox.root, &plan, self.mode);
        if runner::interrupted() {
            bail!("interrupted");
        }
        self.record(snapshot, &report);
        let images: Vec<ImageRun> = report.images.iter().map(image_run).collect();
        let mut phase = Phase {
            test: test.into(),
            run: run.into(),
            sharing: sharing_name,
            namespace: namespace.into(),
            change,
            wall_seconds: report.totals.wall_seconds,
            started_at,
            images,
            metrics: analysis::metrics(&[], 0.0),
            log_dir,
        };
        phase.metrics = analysis::metrics(&phase.lanes(), phase.wall_seconds);
        eprintln!(
            "verify-parallel: {test}/{run}: {:.1}s, {} of {} ok",
            phase.wall_seconds, report.totals.succeeded, report.totals.images
        );
        Ok(phase)
    }
}

impl Ctx<'_> {
    /// Appends a phase's builds to the workspace's history, marked `verify-parallel` (their
    /// Dockerfiles are rewritten: the up-to-date check and `history --explain` leave them out).
    fn record(&self, snapshot: history::Snapshot, report: &session::Report) {
        if !history::enabled() {
            return;
        }
        let mut record = snapshot.finish(
            "verify-parallel",
            &self.tag,
            report.totals.wall_seconds,
            history::history_images(report),
        );
        record.source = Some("verify-parallel".into());
        let file = history::path(self.root);
        if let Err(err) = history::append_from_sandbox(&file, record) {
            eprintln!("warning: build history not recorded: {err:#}");
        }
    }
}

fn image_run(image: &session::ImageReport) -> ImageRun {
    let job = &image.job;
    let log_text = fs::read_to_string(&image.log).unwrap_or_default();
    let cargo_step: Option<&Step> = job
        .steps
        .iter()
        .find(|s| s.is_cargo() && !s.cached)
        .or_else(|| job.steps.iter().find(|s| s.is_cargo()));
    let cargo = cargo_step.and_then(|s| {
        let marker = format!("#{} {}", s.number, crate::sandbox::rewrite::EXEC_MARKER);
        Some(CargoSpan {
            started: s.started?,
            exec_start: s.first_output,
            completed: s.completed,
            cached: s.cached,
            marker: log_text.lines().any(|l| l.trim_end() == marker),
        })
    });
    ImageRun {
        image: image.image.clone(),
        result: image.result,
        wall_seconds: job.wall_seconds,
        started_at: job.started_at,
        ended_at: job.started_at + job.wall_seconds,
        cargo_pending_seconds: cargo.as_ref().and_then(CargoSpan::pending),
        cargo_exec_seconds: cargo.as_ref().and_then(CargoSpan::exec_seconds),
        cargo,
        fully_cached: image.fully_cached,
        cargo_blocking_waits: analysis::cargo_blocking_lines(&log_text),
        race_lines: analysis::race_lines(&log_text),
        steps: job
            .steps
            .iter()
            .filter(|s| crate::exec::events::is_instruction(&s.name))
            .map(|s| StepRecord {
                name: s.name.clone(),
                cached: s.cached,
                started: s.started,
                first_output: s.first_output,
                completed: s.completed,
                error: s.error.clone(),
            })
            .collect(),
        log: image.log.clone(),
    }
}

fn perf(
    ctx: &Ctx,
    images: &[&ImageDecl],
    cold: bool,
    failures: &mut Vec<Failure>,
) -> anyhow::Result<PerfResult> {
    let sandbox = ctx.sandbox("perf")?;
    let common = ctx.decl.common_crate()?;
    let mut warmups = Vec::new();
    let mut measured = Vec::new();
    for (sharing, label) in [(Some(Sharing::Locked), "locked"), (None, "shared")] {
        let namespace = if cold {
            format!("{}-perf-{label}", ctx.nonce)
        } else {
            WARM_NAMESPACE.to_string()
        };
        if !cold {
            let file = sandbox.change(common, &format!("{} {label} warm-up", ctx.nonce))?;
            let warm = ctx.phase(
                &sandbox,
                images,
                "perf",
                &format!("{label}-warmup"),
                sharing,
                &namespace,
                Some(file.display().to_string()),
            )?;
            failures.extend(
                warm.images
                    .iter()
                    .filter(|i| i.result != Outcome::Succeeded)
                    .map(|i| Failure {
                        test: "perf".into(),
                        message: format!("{}: {}: the warm-up build failed", warm.run, i.image),
                        log: i.log.clone(),
                    }),
            );
            warmups.push(warm);
        }
        let file = sandbox.change(common, &format!("{} {label} change", ctx.nonce))?;
        measured.push(ctx.phase(
            &sandbox,
            images,
            "perf",
            label,
            sharing,
            &namespace,
            Some(file.display().to_string()),
        )?);
    }
    let shared = measured.pop().expect("two phases");
    let locked = measured.pop().expect("two phases");
    let before = failures.len();
    failures.extend(locked.problems("perf", ctx.one_builder));
    failures.extend(shared.problems("perf", ctx.one_builder));
    for message in analysis::perf_failures(&locked.metrics, &shared.metrics, images.len()) {
        let log = if message.starts_with("locked") {
            locked.log_dir.clone()
        } else {
            shared.log_dir.clone()
        };
        failures.push(Failure {
            test: "perf".into(),
            message,
            log,
        });
    }
    Ok(PerfResult {
        cold,
        ratio: analysis::ratio(shared.wall_seconds, locked.wall_seconds),
        passed: failures.len() == before,
        warmups,
        locked,
        shared,
    })
}

fn race(
    ctx: &Ctx,
    images: &[&ImageDecl],
    runs: usize,
    failures: &mut Vec<Failure>,
) -> anyhow::Result<RaceResult> {
    let sandbox = ctx.sandbox("race")?;
    let mut out = Vec::new();
    for k in 1..=runs {
        let namespace = format!("{}-race{k}", ctx.nonce);
        let common = ctx.decl.common_crate()?;
        let file = sandbox.change(common, &format!("{} race run {k}", ctx.nonce))?;
        let phase = ctx.phase(
            &sandbox,
            images,
            "race",
            &format!("run-{k}"),
            None,
            &namespace,
            Some(file.display().to_string()),
        )?;
        let mut run_failures = phase.problems("race", ctx.one_builder);
        for image in &phase.images {
            if let Some(line) = image.race_lines.first() {
                run_failures.push(Failure {
                    test: "race".into(),
                    message: format!(
                        "{}: {}: the log shows the race ({} line(s)): {line}",
                        phase.run,
                        image.image,
                        image.race_lines.len()
                    ),
                    log: image.log.clone(),
                });
            }
        }
        eprintln!(
            "verify-parallel: race/run-{k}: {}",
            if run_failures.is_empty() {
                "clean".to_string()
            } else {
                format!("FAILED ({} problem(s))", run_failures.len())
            }
        );
        failures.extend(run_failures.iter().cloned());
        out.push(RaceRun {
            phase,
            failures: run_failures,
        });
    }
    let failed_runs = out.iter().filter(|r| !r.failures.is_empty()).count();
    Ok(RaceResult {
        strategy: ctx.strategy.clone(),
        runs: out,
        failed_runs,
        passed: failed_runs == 0,
    })
}

fn reuse(ctx: &Ctx, image: &ImageDecl, failures: &mut Vec<Failure>) -> anyhow::Result<ReuseResult> {
    let sandbox = ctx.sandbox("reuse")?;
    let crate_dir = ctx.decl.crate_dir(image)?.to_path_buf();
    let images = [image];
    let before = failures.len();
    let file = sandbox.change(&crate_dir, &format!("{} reuse first", ctx.nonce))?;
    let first = ctx.phase(
        &sandbox,
        &images,
        "reuse",
        "1-first",
        None,
        WARM_NAMESPACE,
        Some(file.display().to_string()),
    )?;
    failures.extend(first.problems("reuse", ctx.one_builder));
    let unchanged = ctx.phase(
        &sandbox,
        &images,
        "reuse",
        "2-unchanged",
        None,
        WARM_NAMESPACE,
        None,
    )?;
    for run in &unchanged.images {
        if run.result != Outcome::Succeeded {
            failures.push(Failure {
                test: "reuse".into(),
                message: format!("{}: {}: the build failed", unchanged.run, run.image),
                log: run.log.clone(),
            });
        } else if !run.fully_cached {
            let ran: Vec<&str> = run
                .steps
                .iter()
                .filter(|s| !s.cached && !analysis::is_base_load(&s.name))
                .map(|s| s.name.as_str())
                .collect();
            failures.push(Failure {
                test: "reuse".into(),
                message: format!(
                    "{}: {}: not fully cached with nothing changed; ran: {}",
                    unchanged.run,
                    run.image,
                    ran.join(" | ")
                ),
                log: run.log.clone(),
            });
        }
    }
    let file = sandbox.change(&crate_dir, &format!("{} reuse changed", ctx.nonce))?;
    let changed = ctx.phase(
        &sandbox,
        &images,
        "reuse",
        "3-changed",
        None,
        WARM_NAMESPACE,
        Some(file.display().to_string()),
    )?;
    failures.extend(changed.problems("reuse", ctx.one_builder));
    for run in &changed.images {
        let steps: Vec<analysis::StepRun> = run
            .steps
            .iter()
            .map(|s| analysis::StepRun {
                name: s.name.clone(),
                cached: s.cached,
            })
            .collect();
        for message in analysis::reuse_changed_failures(&steps, &crate_dir.to_string_lossy()) {
            failures.push(Failure {
                test: "reuse".into(),
                message: format!("{}: {}: {message}", changed.run, run.image),
                log: run.log.clone(),
            });
        }
    }
    Ok(ReuseResult {
        image: image.name.clone(),
        ratio: analysis::ratio(unchanged.wall_seconds, first.wall_seconds),
        passed: failures.len() == before,
        first,
        unchanged,
        changed,
    })
}

fn dry_run(ctx: &Ctx, sel: &Selection, images: &[&ImageDecl]) -> anyhow::Result<String> {
    let common = ctx.decl.common_crate()?;
    let mut out = String::new();
    let sandbox = std::env::temp_dir().join(format!("attune-verify-{}-<test>-<random>", ctx.nonce));
    let names: Vec<&str> = images.iter().map(|i| i.name.as_str()).collect();
    out.push_str(&format!(
        "# verify-parallel, strategy {}, images {}; every build runs from {} (a copy of the\n\
         # repository minus target/ and .git/ whose Dockerfiles are rewritten), tag :{}\n",
        ctx.strategy,
        names.join(", "),
        sandbox.display(),
        ctx.tag
    ));
    if sel.perf {
        let ns = if sel.cold {
            format!("-{}-perf-<sharing> (fresh: cold)", ctx.nonce)
        } else {
            format!("-{WARM_NAMESPACE}")
        };
        out.push_str(&format!("# perf: cache ids suffixed {ns}\n"));
        for label in ["locked", "shared"] {
            let what = if label == "locked" {
                "every cache mount sharing=locked (policy::copy_with_sharing)"
            } else {
                "the committed Dockerfiles"
            };
            if !sel.cold {
                out.push_str(&format!(
                    "#   {label}-warmup: {what}; append a comment to {}/src/lib.rs; build in parallel\n",
                    common.display()
                ));
            }
            out.push_str(&format!(
                "#   {label}: {what}; append another comment to {}/src/lib.rs; build in parallel (measured)\n",
                common.display()
            ));
        }
    }
    if sel.race {
        out.push_str(&format!(
            "# race: {} run(s), each with cache ids suffixed -{}-race<k> (empty caches) and a fresh comment in {}\n",
            sel.runs,
            ctx.nonce,
            common.display()
        ));
    }
    if sel.reuse {
        out.push_str(&format!(
            "# reuse: {} after a change in {}, again unchanged (must be fully cached), again after another change\n",
            images[0].name,
            ctx.decl.crate_dir(images[0])?.display()
        ));
    }
    out.push_str("# each parallel build runs these commands (logs under ");
    out.push_str(&format!("{}/<test>/<run>/):\n", ctx.log_root.display()));
    let plan = ctx.plan(images, &ctx.log_root.join("<test>/<run>"))?;
    out.push_str(&plan::render_dry_run(&plan));
    Ok(out)
}

fn environment(ctx: &Ctx, images: &[ImageDecl]) -> Environment {
    let run = docker::run_environment();
    Environment {
        date: run.date,
        command: run.command,
        cores: run.cores,
        engine: run.engine,
        buildx: run.buildx,
        strategy: ctx.strategy.clone(),
        images: images.iter().map(|i| i.name.clone()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags;
    use clap::Parser;

    fn args(line: &str) -> VerifyParallelArgs {
        let argv = std::iter::once("cargo xtask verify-parallel").chain(line.split_whitespace());
        match flags::Xtask::try_parse_from(
            std::iter::once("xtask")
                .chain(std::iter::once("verify-parallel"))
                .chain(argv.skip(1)),
        )
        .unwrap()
        .cmd
        {
            flags::Cmd::VerifyParallel(a) => a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn selections() {
        let all = selection(&args(""), false).unwrap();
        assert_eq!(
            all,
            Selection {
                perf: true,
                race: true,
                reuse: true,
                runs: 5,
                cold: false
            }
        );
        let quick = selection(&args("--quick --tests race,reuse"), false).unwrap();
        assert_eq!(
            (quick.perf, quick.race, quick.reuse, quick.runs),
            (false, true, true, 2)
        );
        assert_eq!(selection(&args("--quick --runs 3"), false).unwrap().runs, 3);
        assert!(selection(&args("--tests speed"), false).is_err());
        assert!(selection(&args("--quick --cold"), false).is_err());
        assert!(selection(&args("--runs 0"), false).is_err());
        let ws = selection(&args("--strategy workspace"), true).unwrap();
        assert_eq!((ws.perf, ws.race, ws.reuse), (false, true, true));
        assert!(selection(&args("--strategy workspace --tests perf"), true).is_err());
    }
}
