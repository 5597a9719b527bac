//! A build session: the plan the flags ask for, the preflight (engine, buildx, base images; the
//! private engine started when none answers), running the plan, and its report. What
//! docker-build, verify-parallel and bench share.
//!
//! The report's types are in `report.rs`, below every module that fills or reads a report.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::bail;

pub use crate::report::{CacheReport, CacheStep, ImageReport, Report, Totals};
use crate::{
    docker, engine,
    exec::{
        events::CargoStep,
        progress,
        runner::{self, Job, JobResult, Outcome},
    },
    flags,
    plan::{self, Plan},
    workspace::Declaration,
};

/// The plan the flags ask for; unknown images, groups or strategies are usage errors.
pub fn plan_from_args(
    decl: &Declaration,
    args: &flags::BuildOptions,
    log_dir: &Path,
    jobs: usize,
) -> anyhow::Result<Plan> {
    let images = decl.select(&args.images)?;
    let strategy = args
        .strategy
        .clone()
        .unwrap_or_else(|| decl.default_strategy.clone());
    decl.strategy(&strategy)?;
    let usage = |message: String| anyhow::Error::from(crate::util::UsageError(message));
    plan::check_build_args(&args.build_arg).map_err(usage)?;
    for secret in &args.secret {
        plan::check_secret(secret).map_err(usage)?;
    }
    for ssh in &args.ssh {
        plan::check_ssh(ssh).map_err(usage)?;
    }
    if args.tag.as_deref().is_some_and(|t| !valid_tag(t)) {
        return Err(usage(format!(
            "--tag `{}`: a tag is 1 to 128 letters, digits, `_`, `.` and `-`, not starting with `.` or `-`",
            args.tag.as_deref().unwrap_or_default()
        )));
    }
    if let Some(registry) = &args.registry {
        let bare = registry.trim_end_matches('/');
        if bare.is_empty() || bare.chars().any(|c| c.is_whitespace()) {
            return Err(usage(format!(
                "--registry `{registry}`: expected a registry and namespace, e.g. registry.example/attune"
            )));
        }
    }
    crate::farm::check_builders(&args.builders).map_err(usage)?;
    let atomic = args.push && !args.push_partial;
    let tag_len = args.tag.as_deref().unwrap_or(&decl.tag).len();
    if atomic && tag_len + plan::STAGING_PREFIX.len() > 128 {
        return Err(usage(format!(
            "--tag: at most {} characters with --push (the staging tag adds `{}`), or use --push-partial",
            128 - plan::STAGING_PREFIX.len(),
            plan::STAGING_PREFIX
        )));
    }
    if args.push && args.registry.is_none() {
        return Err(usage(
            "--push without --registry would push attune-*:TAG to Docker Hub's library namespace; name the registry (for Docker Hub: --registry docker.io/<account>)".into(),
        ));
    }
    let options = plan::Options {
        strategy,
        tag: args.tag.clone().unwrap_or_else(|| decl.tag.clone()),
        registry: args.registry.clone(),
        builder: args.builder.clone(),
        platforms: args.platform.clone(),
        push: args.push,
        push_partial: args.push_partial,
        builders: args.builders.clone(),
        contexts: if args.builders.is_empty() {
            Vec::new()
        } else {
            crate::docker::context_names()
        },
        no_retry: args.no_retry,
        cache_from: specs("--cache-from", &args.cache_from)?,
        cache_to: specs("--cache-to", &args.cache_to)?,
        build_args: args.build_arg.clone(),
        secrets: specs("--secret", &args.secret)?,
        ssh: args.ssh.clone(),
        no_cache: args.no_cache,
        pull: args.pull,
        compression: args.compression,
        log_dir: log_dir.to_path_buf(),
        jobs,
    };
    Ok(plan::plan(decl, &images, &options)?)
}

/// The typed specs of a flag's values; one that is not `key=value,...` is a usage error naming
/// the flag and the value.
fn specs(flag: &str, values: &[String]) -> anyhow::Result<Vec<crate::target::Spec>> {
    (values.iter())
        .map(|v| {
            crate::target::Spec::parse(v)
                .map_err(|e| crate::util::UsageError(format!("{flag} `{v}`: {e}")).into())
        })
        .collect()
}

/// Every image of `plan` has its stage in the Dockerfile of every declared strategy, whichever
/// one this run builds: a declared image without one is reported before anything runs (buildx
/// would only fail mid-build), every missing line at once, with the line to add. Adding a service
/// so names each `FROM ... AS <name>` line it needs, in every strategy's Dockerfile, in one run.
pub fn check_stages(root: &Path, decl: &Declaration, plan: &Plan) -> anyhow::Result<()> {
    let names: Vec<String> = plan.builds.iter().map(|b| b.image.clone()).collect();
    let missing = missing_stages(root, decl, &names);
    match missing.is_empty() {
        true => Ok(()),
        // the declaration and the Dockerfiles disagree: the user's input to fix (exit 2)
        false => Err(crate::util::UsageError(missing.join("\n")).into()),
    }
}

/// What [`check_stages`] reports for `images`: one message per missing stage, naming the image,
/// the strategy, the file and the line to add. A Dockerfile that is missing or does not parse is
/// left to the preflight and buildx.
pub fn missing_stages(root: &Path, decl: &Declaration, images: &[String]) -> Vec<String> {
    let mut texts: BTreeMap<PathBuf, Option<String>> = BTreeMap::new();
    let mut out: Vec<String> = Vec::new();
    for strategy in decl.strategies.keys() {
        // (an image a strategy cannot build at all, like pack-binaries under seed, is a usage
        // error of its own when that strategy is asked for)
        let selected: Vec<_> = (decl.images.iter())
            .filter(|i| images.contains(&i.name))
            .filter(|i| decl.dockerfile_for(strategy, i).is_ok())
            .collect();
        let options = plan::Options {
            strategy: strategy.clone(),
            tag: decl.tag.clone(),
            ..Default::default()
        };
        let Ok(plan) = plan::plan(decl, &selected, &options) else {
            continue;
        };
        for build in &plan.builds {
            let text = (texts.entry(build.dockerfile().to_path_buf()))
                .or_insert_with(|| std::fs::read_to_string(root.join(build.dockerfile())).ok());
            let Some(text) = text else { continue };
            if let Err(e) = plan::check_stage(build, text) {
                // once per line to add, however many strategies read that file
                let hint = |m: &str| m.split_once('\n').map(|(_, h)| h.to_string());
                if !out.iter().any(|o| hint(o) == hint(&e)) {
                    out.push(e.replacen('\n', &format!(" (strategy {strategy})\n"), 1));
                }
            }
        }
    }
    out
}

/// Holds `<log-dir>/.docker-build.lock` (an exclusive `flock`, released when the file closes, also
/// when the process dies): a second run on the same log directory says so and waits. Checks up
/// front that the directory is writable, so that this is one error instead of a failure per image.
pub fn lock_log_dir(dir: &Path, shown: &Path) -> anyhow::Result<std::fs::File> {
    use std::io::Write;
    let cannot = |err: std::io::Error| {
        anyhow::anyhow!("--log-dir {}: cannot write there: {err}", shown.display())
    };
    std::fs::create_dir_all(dir).map_err(cannot)?;
    let path = dir.join(".docker-build.lock");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(cannot)?;
    // flock(2) (std's lock on Linux): released when the file closes, also when the process dies
    if file.try_lock().is_err() {
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        eprintln!(
            "docker-build: another run (pid {}) is writing the logs in {}; waiting for it to finish",
            holder.trim(),
            shown.display()
        );
        file.lock().map_err(cannot)?;
    }
    file.set_len(0).map_err(cannot)?;
    write!(file, "{}", std::process::id()).map_err(cannot)?;
    Ok(file)
}

/// A docker tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && tag.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// What the engine looks like: the probe, the base images it lacks, and the ids of those it has.
#[derive(Debug)]
pub struct EngineCheck {
    pub probe: docker::Probe,
    missing_bases: Vec<String>,
    pub image_ids: std::collections::BTreeMap<String, String>,
}

/// Probes the engine and, with `check_bases`, looks up the base images, all at once.
pub fn check_engine(root: &Path, check_bases: bool) -> anyhow::Result<EngineCheck> {
    let bases = if check_bases {
        engine::base_images(root)?
    } else {
        Vec::new()
    };
    let (probe, found) = std::thread::scope(|s| {
        let found = s.spawn(|| docker::inspect_images(&bases));
        (docker::probe(), found.join().unwrap_or_default())
    });
    let missing_bases = (bases.iter())
        .filter(|b| !found.contains_key(b.as_str()))
        .cloned()
        .collect();
    Ok(EngineCheck {
        probe,
        missing_bases,
        image_ids: found.into_iter().map(|(r, (id, _))| (r, id)).collect(),
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
        let path = root.join(build.dockerfile());
        if !path.is_file() {
            bail!(
                "image `{}`: its Dockerfile {} is missing\n  hint: restore it (git checkout -- {}) or fix `dockerfile` in [workspace.metadata.attune]",
                build.image,
                build.dockerfile().display(),
                build.dockerfile().display()
            );
        }
    }
    if which::which("docker").is_err() {
        if mode == flags::EngineMode::Auto {
            eprintln!("engine: no `docker` client on PATH; installing the private engine (cargo xtask engine up)");
            return engine::up(root, &engine::EngineDir::from_env(), None);
        }
        bail!("no `docker` client on PATH\n  hint: install Docker's CLI, or run `cargo xtask engine up` (as root), which installs one with a private engine");
    }
    let EngineCheck {
        probe,
        missing_bases: missing,
        ..
    } = check;
    if !probe.reachable() {
        let why = probe.error.unwrap_or_default();
        if let Some(engine) = engine::user_configured_engine() {
            // the user named this engine: building elsewhere would be a surprise
            bail!("the Docker daemon is unreachable: the engine you configured ({engine}) does not answer: {why}\n  hint: start that engine, or unset it to use the default (or the private engine, `cargo xtask engine up`)");
        }
        if mode == flags::EngineMode::Auto {
            eprintln!("engine: no Docker engine reachable ({why}); starting the private engine (cargo xtask engine up)");
            return engine::up(root, &engine::EngineDir::from_env(), None);
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
        return engine::up(root, &engine::EngineDir::from_env(), None);
    }
    Ok(())
}

/// Runs the plan (the engine must be reachable) and collects the report: wave by wave (the seed
/// of a farm first, alone), each failed build of a wave retried once on another builder when the
/// plan says so.
pub fn execute(root: &Path, plan: &Plan, mode: progress::Mode) -> Report {
    let names: Vec<String> = plan.builds.iter().map(|b| b.image.clone()).collect();
    let reporter = progress::reporter(mode, &names);
    let clock = Instant::now();
    let ran = run_waves(root, plan, reporter.as_ref());
    let wall = clock.elapsed().as_secs_f64();
    drop(reporter);
    let loaded: Vec<String> = (plan.builds.iter().zip(&ran))
        .filter(|(b, r)| b.loaded() && r.job.outcome == Outcome::Succeeded)
        .filter_map(|(b, _)| b.tag().cloned())
        .collect();
    let inspected = docker::inspect_images(&loaded);
    let images: Vec<ImageReport> = (plan.builds.iter().zip(ran))
        .map(|(build, ran)| image_report(root, build, ran, &inspected))
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
        publish: None,
        timings: None,
        cache: None,
        recording_seconds: None,
        binaries: None,
    }
}

/// What became of one build of the plan: its result, the build that ran last (a retry's, on
/// another builder), and the builder it failed on first.
struct Ran {
    job: JobResult,
    build: plan::Build,
    retried_from: Option<String>,
}

/// Runs the plan's waves (the seed of a farm first, alone); a failed build of a wave runs once
/// more on another builder when the plan says so. One [`Ran`] per build, in the plan's order.
fn run_waves(root: &Path, plan: &Plan, reporter: &dyn runner::Reporter) -> Vec<Ran> {
    let job_of = |b: &plan::Build| Job {
        name: b.image.clone(),
        argv: b.argv(),
        cwd: root.to_path_buf(),
        log: root.join(&b.log),
    };
    let mut slots: Vec<Option<JobResult>> = vec![None; plan.builds.len()];
    let mut ran: Vec<plan::Build> = plan.builds.clone();
    let mut retried_from: Vec<Option<String>> = vec![None; plan.builds.len()];
    let mut builders: Vec<String> = Vec::new();
    for b in plan.builds.iter().filter_map(|b| b.runs_on()) {
        if !builders.iter().any(|x| x == b) {
            builders.push(b.to_string());
        }
    }
    for wave in plan.waves() {
        let results = match plan.bakes(&wave) {
            Some(bakes) => run_bakes(root, &bakes, plan, &job_of, reporter),
            None => {
                let jobs: Vec<Job> = wave.iter().map(|&i| job_of(&plan.builds[i])).collect();
                runner::run_all(&jobs, plan.jobs, reporter)
            }
        };
        let mut again = Vec::new();
        for (&i, result) in wave.iter().zip(results) {
            let failed_on = (plan.retry && result.outcome == Outcome::Failed)
                .then(|| plan.builds[i].runs_on())
                .flatten();
            if let Some(to) = failed_on.and_then(|from| crate::farm::retry_builder(from, &builders))
            {
                let log = plan.builds[i].log.with_extension("retry.log");
                let retry = crate::plan::retarget(&plan.builds[i], &to, log, &plan.contexts);
                again.push((i, retry));
            }
            slots[i] = Some(result);
        }
        if again.is_empty() || runner::interrupted() {
            continue;
        }
        for (i, build) in &again {
            eprintln!(
                "docker-build: {} failed on builder {}; retrying on {} (log {})",
                build.image,
                plan.builds[*i].runs_on().unwrap_or("-"),
                build.runs_on().unwrap_or("-"),
                build.log.display()
            );
        }
        let jobs: Vec<Job> = again.iter().map(|(_, b)| job_of(b)).collect();
        let results = runner::run_all(&jobs, plan.jobs, reporter);
        for ((i, build), result) in again.into_iter().zip(results) {
            retried_from[i] = plan.builds[i].runs_on().map(String::from);
            ran[i] = build;
            slots[i] = Some(result);
        }
    }
    (slots.into_iter().zip(ran).zip(retried_from))
        .map(|((job, build), retried_from)| Ran {
            job: job.expect("every wave ran"),
            build,
            retried_from,
        })
        .collect()
}

/// Runs the bakes one after another (their builds' results in their order), each from its file
/// written beside the logs; a file that cannot be written fails its builds. bake stops every
/// target at the first failure: the builds it stopped (failed with no error of their own) run
/// again, each on its own, as they would have without bake.
fn run_bakes(
    root: &Path,
    bakes: &[plan::BakeRun],
    plan: &Plan,
    job_of: &dyn Fn(&plan::Build) -> Job,
    reporter: &dyn runner::Reporter,
) -> Vec<JobResult> {
    let mut results = baked(root, bakes, plan, reporter);
    let builds = bakes.iter().flat_map(|b| b.builds.iter().copied());
    let stopped: Vec<(usize, usize)> = (builds.enumerate())
        .filter(|(at, _)| {
            let r = &results[*at];
            r.outcome == Outcome::Failed && !runner::failed_itself(&r.steps)
        })
        .collect();
    if stopped.is_empty() || runner::interrupted() {
        return results;
    }
    eprintln!(
        "docker-build: bake stopped {} image{} at another's failure; building {} on {} own",
        stopped.len(),
        if stopped.len() == 1 { "" } else { "s" },
        if stopped.len() == 1 { "it" } else { "each" },
        if stopped.len() == 1 { "its" } else { "their" },
    );
    let jobs: Vec<Job> = stopped
        .iter()
        .map(|&(_, i)| job_of(&plan.builds[i]))
        .collect();
    for ((at, _), result) in stopped
        .iter()
        .zip(runner::run_all(&jobs, plan.jobs, reporter))
    {
        results[*at] = result;
    }
    results
}

fn baked(
    root: &Path,
    bakes: &[plan::BakeRun],
    plan: &Plan,
    reporter: &dyn runner::Reporter,
) -> Vec<JobResult> {
    let mut results = Vec::new();
    for bake in bakes {
        let job = runner::Bake {
            argv: bake.argv.clone(),
            cwd: root.to_path_buf(),
            targets: (bake.builds.iter())
                .map(|&i| (plan.builds[i].image.clone(), root.join(&plan.builds[i].log)))
                .collect(),
        };
        let path = root.join(&bake.file);
        let written = (path.parent().map(std::fs::create_dir_all).unwrap_or(Ok(())))
            .and_then(|_| std::fs::write(&path, format!("{:#}\n", bake.definition)));
        match written {
            Ok(()) => results.extend(runner::run_bake(&job, reporter)),
            Err(err) => results.extend(job.targets.iter().map(|(name, log)| {
                let why = format!("cannot write the bake file {}: {err}", path.display());
                let result = runner::failed_to_start(name, log, why);
                reporter.finished(&result);
                result
            })),
        }
    }
    results
}

/// One image's line of the report: its result, cargo step, image id and size (`inspected`:
/// tag -> id and size of the images loaded into the engine), the pushed digest.
fn image_report(
    root: &Path,
    build: &plan::Build,
    ran: Ran,
    inspected: &BTreeMap<String, (String, u64)>,
) -> ImageReport {
    let Ran {
        job,
        build: last,
        retried_from,
    } = ran;
    let _span = tracing::info_span!("image", image = %build.image).entered();
    tracing::debug!(
        argv = %crate::proc::shell_line(&build.argv()),
        seconds = job.wall_seconds,
        exit = ?job.exit_code,
        outcome = ?job.outcome,
        log = %build.log.display(),
        "build finished"
    );
    let ok = job.outcome == Outcome::Succeeded;
    let digest = (build.target.metadata_file.as_ref())
        .filter(|_| ok)
        .and_then(|file| std::fs::read_to_string(root.join(file)).ok())
        .and_then(|text| crate::publish::digest_from_metadata(&text));
    let (image_id, size) = match build.tag().and_then(|t| inspected.get(t)) {
        Some((id, size)) => (Some(id.clone()), Some(*size)),
        None => (None, None),
    };
    let size = size.or_else(|| {
        (build.output_dir())
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
        tag: build.tag().cloned(),
        image_id,
        size_bytes: size,
        output_dir: build.output_dir().map(Path::to_path_buf),
        log: last.log.clone(),
        builder: last.runs_on().map(String::from),
        retried_from,
        digest,
        published: None,
        why: None,
        job,
    }
}

pub fn dir_size(dir: &Path) -> u64 {
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
/// The tag of the plan's first tagged image (`attune-api:dev` -> `dev`).
pub fn decl_tag(plan: &Plan) -> String {
    plan.builds
        .iter()
        .find_map(|b| b.tag()?.rsplit_once(':').map(|(_, t)| t.to_string()))
        .unwrap_or_default()
}

/// The summary table, then the tails of failed builds' logs.
pub fn render_summary(report: &Report) -> String {
    let mut out = String::new();
    // cargo steps shared between builds: one BuildKit step serving several images reports the
    // same start instant (to the microsecond) in each of their event streams
    let shared = shared_cargo_runs(&report.images);
    out.push_str(&render_table(&report.images, &shared));
    for (mark, images) in shared.iter().enumerate() {
        let _ = writeln!(
            out,
            "[{}] one cargo run (the same BuildKit step) served {}",
            mark + 1,
            images.join(", ")
        );
    }
    let t = &report.totals;
    let more = |n: usize, what: &str| match n {
        0 => String::new(),
        n => format!(", {n} {what}"),
    };
    let _ = writeln!(
        out,
        "{} image{}: {} ok, {} failed{}{} in {:.1}s (strategy {})",
        t.images,
        if t.images == 1 { "" } else { "s" },
        t.succeeded,
        t.failed,
        more(t.interrupted, "interrupted"),
        more(t.not_started, "not started"),
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
    if let Some(b) = report
        .binaries
        .as_ref()
        .filter(|b| b.mode == "first" && b.succeeded)
    {
        let _ = writeln!(
            out,
            "binaries: the builder's digests first ({:.1}s): {} image{} unchanged, not built; {} superseded layer record{} removed ({})",
            b.wall_seconds,
            b.left_out.len(),
            if b.left_out.len() == 1 { "" } else { "s" },
            b.superseded_records,
            if b.superseded_records == 1 { "" } else { "s" },
            human_size(b.superseded_bytes),
        );
        if !b.bakes.is_empty() {
            let files: Vec<String> = b.bakes.iter().map(|f| f.display().to_string()).collect();
            let _ = writeln!(
                out,
                "binaries: the images after them ran as {} buildx bake{} ({})",
                files.len(),
                if files.len() == 1 { "" } else { "s" },
                files.join(", ")
            );
        }
    }
    if let Some(publish) = &report.publish {
        out.push('\n');
        out.push_str(&crate::publish::render(publish));
    }
    if let Some(timings) = &report.timings {
        out.push_str(&crate::timings::render(timings));
    }
    for step in report.cache.iter().flat_map(CacheReport::steps) {
        if step.result == "done" {
            let _ = writeln!(out, "cache: {}", step.line);
        }
    }
    if let Some(dir) = report.images.first().and_then(|i| i.log.parent()) {
        let _ = writeln!(out, "logs: {}/", dir.display());
    }
    out
}

/// The summary's table: a line per image, its cargo step marked with the shared run it belongs
/// to (`shared`), and with several builders where it ran (and where it failed first).
fn render_table(images: &[ImageReport], shared: &[Vec<String>]) -> String {
    let mut out = String::new();
    let width = images
        .iter()
        .map(|i| i.image.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let mark_of = |image: &str| shared.iter().position(|g| g.iter().any(|i| i == image));
    let farm = images.iter().any(|i| i.builder.is_some());
    let placed = |image: &ImageReport| match (&image.builder, &image.retried_from) {
        (Some(b), Some(first)) => format!("  {b} (retry; failed on {first})"),
        (Some(b), None) => format!("  {b}"),
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "\n{:<width$}  {:<11}  {:>7}  {:<16}  {:>9}{}",
        "image",
        "result",
        "wall",
        "cargo step",
        "size",
        if farm { "  builder" } else { "" }
    );
    for image in images {
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
        let size = (image.size_bytes.map(human_size)).unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "{:<width$}  {:<11}  {:>6.1}s  {:<16}  {:>9}{}",
            image.image,
            result,
            image.wall_seconds,
            cargo,
            size,
            placed(image)
        );
    }
    out
}
