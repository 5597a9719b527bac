//! `cargo xtask docker-build`: every image in parallel on BuildKit, with live progress, a log per
//! image and a summary.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::bail;
use serde::Serialize;

use crate::{
    engine,
    exec::{
        events::CargoStep,
        progress,
        runner::{self, Job, JobResult, Outcome},
    },
    flags, history,
    plan::{self, Plan},
    workspace::{self, Declaration},
    Status,
};

pub fn run(root: &Path, args: flags::DockerBuildArgs) -> anyhow::Result<Status> {
    // the engine check (a few docker processes) runs while cargo metadata reads the declaration:
    // a no-op rebuild is dominated by such fixed costs
    let check_bases = args.engine == flags::EngineMode::Auto && args.builder.is_none();
    // ... and so does the snapshot of the recorded inputs (hashing, one image inspect)
    let (plan, check, snapshot) = std::thread::scope(|s| {
        let check = (!args.dry_run).then(|| s.spawn(|| check_engine(root, check_bases)));
        let plan = workspace::load(root).and_then(|decl| plan_from_args(&decl, &args));
        let snapshot = match &plan {
            Ok(plan) if !args.dry_run => Some(history::Snapshot::take(root, plan)),
            _ => None,
        };
        (
            plan,
            check.map(|h| h.join().expect("engine check panicked")),
            snapshot,
        )
    });
    let plan = plan?;
    let (Some(check), Some(mut snapshot)) = (check, snapshot) else {
        print!("{}", plan::render_dry_run(&plan));
        return Ok(Status::Ok);
    };
    let check = check?;
    snapshot.set_engine(history::engine_identity(
        check.probe.server_version.as_deref(),
    ));
    preflight_with(root, &plan, args.engine, check)?;
    // up to date: the recorded inputs say so and the image is still there; no buildx process
    let current: Vec<String> = plan
        .builds
        .iter()
        .filter(|b| !args.force && snapshot.up_to_date(b))
        .map(|b| b.image.clone())
        .collect();
    let mut todo = plan.clone();
    todo.builds.retain(|b| !current.contains(&b.image));
    let mut report = execute(root, &todo, progress::detect_mode());
    add_up_to_date(&mut report, &plan, &current, &snapshot);
    let record = snapshot.finish(
        "docker-build",
        args.tag.as_deref().unwrap_or(&decl_tag(&plan)),
        report.totals.wall_seconds,
        history_images(&report),
    );
    if history::enabled() {
        if let Err(err) = history::append(&history::path(root), &record) {
            eprintln!("warning: build history not recorded: {err:#}");
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_summary(&report));
        for image in record.images.iter().filter(|i| i.why.is_some()) {
            println!(
                "why {}: {}",
                image.image,
                image.why.as_deref().unwrap_or("")
            );
        }
    }
    Ok(report.status())
}

/// The tag of the plan's first tagged image (`attune-api:dev` -> `dev`).
fn decl_tag(plan: &Plan) -> String {
    plan.builds
        .iter()
        .find_map(|b| {
            b.tag
                .as_deref()?
                .rsplit_once(':')
                .map(|(_, t)| t.to_string())
        })
        .unwrap_or_default()
}

/// Puts the images found up to date (not built) into the report, in the plan's order.
fn add_up_to_date(
    report: &mut Report,
    plan: &Plan,
    current: &[String],
    snapshot: &history::Snapshot,
) {
    let mut built = std::mem::take(&mut report.images).into_iter();
    for build in &plan.builds {
        if !current.contains(&build.image) {
            report.images.extend(built.next());
            continue;
        }
        let image_id = build.tag.as_ref().and_then(|t| snapshot.image_ids.get(t));
        let size = snapshot
            .last
            .get(&build.image)
            .and_then(|(r, _)| r.size_bytes);
        report.images.push(ImageReport {
            image: build.image.clone(),
            result: Outcome::Succeeded,
            exit_code: None,
            wall_seconds: 0.0,
            cargo_step: CargoStep::None,
            cargo_seconds: None,
            cargo_name: None,
            cargo_started: None,
            fully_cached: true,
            up_to_date: true,
            tag: build.tag.clone(),
            image_id: image_id.cloned(),
            size_bytes: size,
            output_dir: build.output_dir.clone(),
            log: build.log.clone(),
            job: JobResult {
                name: build.image.clone(),
                outcome: Outcome::Succeeded,
                exit_code: None,
                started_at: snapshot.time,
                wall_seconds: 0.0,
                cargo_step: CargoStep::None,
                steps: Vec::new(),
                tail: Vec::new(),
                log: build.log.clone(),
            },
        });
        report.totals.images += 1;
        report.totals.succeeded += 1;
    }
    report.images.extend(built);
}

/// The report's images as history records (inputs are added by the snapshot).
fn history_images(report: &Report) -> Vec<history::ImageRecord> {
    report
        .images
        .iter()
        .map(|i| {
            let result = if i.up_to_date {
                "up-to-date".to_string()
            } else {
                serde_json::to_value(i.result)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default()
            };
            history::ImageRecord {
                image: i.image.clone(),
                result,
                wall_seconds: i.wall_seconds,
                cargo_step: serde_json::to_value(i.cargo_step)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                cargo_seconds: i.cargo_seconds,
                steps_run: i.job.steps.iter().filter(|s| !s.cached).count(),
                steps_cached: i.job.steps.iter().filter(|s| s.cached).count(),
                image_id: i.image_id.clone(),
                size_bytes: i.size_bytes,
                inputs: None,
                digest: None,
                why: None,
                output_digest: None,
            }
        })
        .collect()
}

/// The plan the flags ask for; unknown images, groups or strategies are usage errors.
pub fn plan_from_args(decl: &Declaration, args: &flags::DockerBuildArgs) -> anyhow::Result<Plan> {
    let images = decl.select(&args.images)?;
    let strategy = args
        .strategy
        .clone()
        .unwrap_or_else(|| decl.default_strategy.clone());
    decl.strategy(&strategy)?;
    for arg in &args.build_arg {
        if !arg.contains('=') {
            return Err(crate::UsageError(format!("--build-arg `{arg}` is not KEY=VALUE")).into());
        }
    }
    let options = plan::Options {
        strategy,
        tag: args.tag.clone().unwrap_or_else(|| decl.tag.clone()),
        registry: args.registry.clone(),
        builder: args.builder.clone(),
        platforms: args.platform.clone(),
        push: args.push,
        cache_from: args.cache_from.clone(),
        cache_to: args.cache_to.clone(),
        build_args: args.build_arg.clone(),
        no_cache: args.no_cache,
        pull: args.pull,
        log_dir: args.log_dir.clone(),
        jobs: args.jobs,
    };
    Ok(plan::plan(decl, &images, &options))
}

/// What the engine looks like: the probe, and the base images it lacks.
#[derive(Debug)]
pub struct EngineCheck {
    probe: engine::Probe,
    missing_bases: Vec<String>,
}

/// Probes the engine and, with `check_bases`, looks up the base images, all at once.
pub fn check_engine(root: &Path, check_bases: bool) -> anyhow::Result<EngineCheck> {
    let bases = if check_bases {
        engine::base_images(root)?
    } else {
        Vec::new()
    };
    let (probe, missing_bases) = std::thread::scope(|s| {
        let missing = s.spawn(|| engine::missing_images(&bases));
        (engine::probe(), missing.join().unwrap_or_default())
    });
    Ok(EngineCheck {
        probe,
        missing_bases,
    })
}

/// Checks what the builds need, with a hint for each failure; starts the private engine when no
/// engine is reachable and `--engine auto` (the default) allows it.
pub fn preflight(
    root: &Path,
    plan: &Plan,
    mode: flags::EngineMode,
    remote_builder: bool,
) -> anyhow::Result<()> {
    let check = check_engine(root, mode == flags::EngineMode::Auto && !remote_builder)?;
    preflight_with(root, plan, mode, check)
}

/// [`preflight`] with the engine already checked.
pub fn preflight_with(
    root: &Path,
    plan: &Plan,
    mode: flags::EngineMode,
    check: EngineCheck,
) -> anyhow::Result<()> {
    for build in &plan.builds {
        let path = root.join(&build.dockerfile);
        if !path.is_file() {
            bail!(
                "image `{}`: its Dockerfile {} is missing\n  hint: restore it (git checkout -- {}) or fix `dockerfile` in [workspace.metadata.attune]",
                build.image,
                build.dockerfile.display(),
                build.dockerfile.display()
            );
        }
    }
    if which::which("docker").is_err() {
        if mode == flags::EngineMode::Auto {
            eprintln!("engine: no `docker` client on PATH; installing the private engine (cargo xtask engine up)");
            return engine::up(root, &engine::EngineDir::from_env());
        }
        bail!("no `docker` client on PATH\n  hint: install Docker's CLI, or run `cargo xtask engine up` (as root), which installs one with a private engine");
    }
    let EngineCheck {
        probe,
        missing_bases: missing,
    } = check;
    if !probe.reachable() {
        let why = probe.error.unwrap_or_default();
        if mode == flags::EngineMode::Auto {
            eprintln!("engine: no Docker engine reachable ({why}); starting the private engine (cargo xtask engine up)");
            return engine::up(root, &engine::EngineDir::from_env());
        }
        bail!("the Docker daemon is unreachable: {why}\n  hint: start Docker or set DOCKER_HOST; on a machine without one, `cargo xtask engine up` (as root) starts a private engine");
    }
    if probe.buildx_version.is_none() {
        bail!("the docker buildx plugin is missing (`docker buildx version` fails)\n  hint: install docker-buildx (Debian: apt-get install docker-buildx), or run `cargo xtask engine up`");
    }
    if !missing.is_empty() {
        eprintln!(
            "engine: base images missing ({}); making them (cargo xtask engine up)",
            missing.join(", ")
        );
        return engine::up(root, &engine::EngineDir::from_env());
    }
    Ok(())
}

/// The outcome of one image's build, as the summary and `--json` show it.
#[derive(Debug, Clone, Serialize)]
pub struct ImageReport {
    pub image: String,
    pub result: Outcome,
    pub exit_code: Option<i32>,
    pub wall_seconds: f64,
    /// Whether the cargo step executed or came from the layer cache.
    pub cargo_step: CargoStep,
    pub cargo_seconds: Option<f64>,
    /// The cargo step's Dockerfile text, as BuildKit names it, and when it started by BuildKit's
    /// clock (seconds since the Unix epoch).
    pub cargo_name: Option<String>,
    pub cargo_started: Option<f64>,
    pub fully_cached: bool,
    /// The recorded inputs showed the image current: no build ran.
    pub up_to_date: bool,
    pub tag: Option<String>,
    pub image_id: Option<String>,
    pub size_bytes: Option<u64>,
    pub output_dir: Option<PathBuf>,
    pub log: PathBuf,
    #[serde(skip)]
    pub job: JobResult,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub strategy: String,
    pub images: Vec<ImageReport>,
    pub totals: Totals,
}

#[derive(Debug, Clone, Serialize)]
pub struct Totals {
    pub images: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub interrupted: usize,
    pub not_started: usize,
    pub wall_seconds: f64,
}

impl Report {
    pub fn status(&self) -> Status {
        if self.totals.interrupted + self.totals.not_started > 0 {
            Status::Interrupted
        } else {
            Status::from_ok(self.totals.failed == 0)
        }
    }
}

/// Runs the plan (the engine must be reachable) and collects the report.
pub fn execute(root: &Path, plan: &Plan, mode: progress::Mode) -> Report {
    let jobs: Vec<Job> = plan
        .builds
        .iter()
        .map(|b| Job {
            name: b.image.clone(),
            argv: b.argv.clone(),
            cwd: root.to_path_buf(),
            log: root.join(&b.log),
            env: Vec::new(),
        })
        .collect();
    let names: Vec<String> = jobs.iter().map(|j| j.name.clone()).collect();
    let reporter = progress::reporter(mode, &names);
    let clock = Instant::now();
    let results = runner::run_all(&jobs, plan.jobs, reporter.as_ref());
    let wall = clock.elapsed().as_secs_f64();
    drop(reporter);
    let loaded: Vec<String> = plan
        .builds
        .iter()
        .zip(&results)
        .filter(|(b, j)| b.loaded && j.outcome == Outcome::Succeeded)
        .filter_map(|(b, _)| b.tag.clone())
        .collect();
    let inspected = engine::inspect_images(&loaded);
    let images: Vec<ImageReport> = plan
        .builds
        .iter()
        .zip(results)
        .map(|(build, job)| {
            let ok = job.outcome == Outcome::Succeeded;
            let (image_id, size) = match build.tag.as_ref().and_then(|t| inspected.get(t)) {
                Some((id, size)) => (Some(id.clone()), Some(*size)),
                None => (None, None),
            };
            let size = size.or_else(|| {
                build
                    .output_dir
                    .as_ref()
                    .filter(|_| ok)
                    .map(|d| dir_size(&root.join(d)))
            });
            let cargo = crate::exec::events::main_cargo_step(&job.steps);
            ImageReport {
                image: build.image.clone(),
                result: job.outcome,
                exit_code: job.exit_code,
                wall_seconds: job.wall_seconds,
                cargo_step: job.cargo_step,
                cargo_seconds: cargo.filter(|s| !s.cached).and_then(|s| s.seconds()),
                cargo_name: cargo.map(|s| s.name.clone()),
                cargo_started: cargo.and_then(|s| s.started),
                fully_cached: ok && job.fully_cached(),
                up_to_date: false,
                tag: build.tag.clone(),
                image_id,
                size_bytes: size,
                output_dir: build.output_dir.clone(),
                log: build.log.clone(),
                job,
            }
        })
        .collect();
    let count = |o: Outcome| images.iter().filter(|i| i.result == o).count();
    let totals = Totals {
        images: images.len(),
        succeeded: count(Outcome::Succeeded),
        failed: count(Outcome::Failed),
        interrupted: count(Outcome::Interrupted),
        not_started: count(Outcome::NotStarted),
        wall_seconds: wall,
    };
    Report {
        strategy: plan.strategy.clone(),
        images,
        totals,
    }
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The summary table, then the tails of failed builds' logs.
pub fn render_summary(report: &Report) -> String {
    let mut out = String::new();
    let width = report
        .images
        .iter()
        .map(|i| i.image.len())
        .max()
        .unwrap_or(5)
        .max(5);
    // cargo steps shared between builds: one BuildKit step serving several images reports the
    // same start instant (to the microsecond) in each of their event streams
    let shared = shared_cargo_runs(&report.images);
    let mark_of = |image: &str| shared.iter().position(|g| g.iter().any(|i| i == image));
    let _ = writeln!(
        out,
        "\n{:<width$}  {:<11}  {:>7}  {:<16}  {:>9}",
        "image", "result", "wall", "cargo step", "size"
    );
    for image in &report.images {
        let result = match image.result {
            Outcome::Succeeded if image.up_to_date => "up to date",
            Outcome::Succeeded if image.fully_cached => "ok (cached)",
            Outcome::Succeeded => "ok",
            Outcome::Failed => "FAILED",
            Outcome::Interrupted => "interrupted",
            Outcome::NotStarted => "not started",
        };
        let mut cargo = match (image.cargo_step, image.cargo_seconds) {
            (CargoStep::Ran, Some(s)) => format!("ran {s:.1}s"),
            (CargoStep::Ran, None) => "ran".to_string(),
            (CargoStep::Shared, _) => "shared".to_string(),
            (CargoStep::Cached, _) => "cached".to_string(),
            (CargoStep::None, _) => "-".to_string(),
        };
        if let Some(mark) = mark_of(&image.image) {
            cargo.push_str(&format!(" [{}]", mark + 1));
        }
        let size = image
            .size_bytes
            .map(human_size)
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "{:<width$}  {:<11}  {:>6.1}s  {:<16}  {:>9}",
            image.image, result, image.wall_seconds, cargo, size
        );
    }
    for (mark, images) in shared.iter().enumerate() {
        let _ = writeln!(
            out,
            "[{}] one cargo run (the same BuildKit step) served {}",
            mark + 1,
            images.join(", ")
        );
    }
    let t = &report.totals;
    let _ = writeln!(
        out,
        "{} image{}: {} ok, {} failed{}{} in {:.1}s (strategy {})",
        t.images,
        if t.images == 1 { "" } else { "s" },
        t.succeeded,
        t.failed,
        if t.interrupted > 0 {
            format!(", {} interrupted", t.interrupted)
        } else {
            String::new()
        },
        if t.not_started > 0 {
            format!(", {} not started", t.not_started)
        } else {
            String::new()
        },
        t.wall_seconds,
        report.strategy
    );
    for image in report.images.iter().filter(|i| i.result == Outcome::Failed) {
        let _ = writeln!(
            out,
            "\n{} failed; the last lines of {}:",
            image.image,
            image.log.display()
        );
        for line in &image.job.tail {
            let _ = writeln!(out, "  {line}");
        }
    }
    if let Some(first) = report.images.first() {
        if let Some(dir) = first.log.parent() {
            let _ = writeln!(out, "logs: {}/", dir.display());
        }
    }
    out
}

/// Groups of images served by one cargo run. BuildKit runs an identical step of concurrent
/// builds once: either every build's stream reports that one execution (the same step text and
/// the same duration, to the microsecond), or the later builds wait for it and take its result
/// from the cache (`Shared`).
pub fn shared_cargo_runs(images: &[ImageReport]) -> Vec<Vec<String>> {
    let mut groups: BTreeMap<(String, i64), Vec<String>> = BTreeMap::new();
    for image in images.iter().filter(|i| i.cargo_step == CargoStep::Ran) {
        if let (Some(name), Some(seconds)) = (&image.cargo_name, image.cargo_seconds) {
            let key = (name.clone(), (seconds * 1e5).round() as i64);
            groups.entry(key).or_default().push(image.image.clone());
        }
    }
    for image in images.iter().filter(|i| i.cargo_step == CargoStep::Shared) {
        if let Some(group) = groups
            .iter_mut()
            .find(|((name, _), _)| Some(name) == image.cargo_name.as_ref())
        {
            group.1.push(image.image.clone());
        }
    }
    groups.into_values().filter(|g| g.len() > 1).collect()
}

pub fn human_size(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{bytes} B")
    }
}
