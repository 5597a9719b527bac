//! `cargo xtask docker-build`: every image in parallel on BuildKit, with live progress, a log per
//! image and a summary.

use std::path::Path;

use crate::{
    exec::{events::CargoStep, progress},
    flags, history, plan,
    session::{
        add_up_to_date, check_engine, check_stages, decl_tag, execute, history_images,
        lock_log_dir, plan_from_args, preflight_with, render_summary,
    },
    timings, workspace, Status,
};

pub fn run(root: &Path, args: flags::DockerBuildArgs) -> anyhow::Result<Status> {
    // the engine check (a few docker processes) runs while cargo metadata reads the declaration:
    // a no-op rebuild is dominated by such fixed costs
    let check_bases = args.engine == flags::EngineMode::Auto
        && args.build.builder.is_none()
        && args.build.builders.is_empty();
    let (decl, check, platform) = std::thread::scope(|s| {
        let check = (!args.dry_run).then(|| s.spawn(|| check_engine(root, check_bases)));
        // --cache: the engine's platform names the target caches (asked here, not after)
        let platform = (!args.dry_run && args.cache.is_some() && args.build.platform.is_empty())
            .then(|| s.spawn(crate::cache::transfer::engine_platform));
        let decl = workspace::load(root);
        (
            decl,
            check.map(|h| h.join().expect("engine check panicked")),
            platform.and_then(|h| h.join().ok()?.ok()),
        )
    });
    let decl = decl?;
    if let Some(location) = &args.cache {
        return run_with_cache(root, &decl, &args, location, check, platform);
    }
    let plan = plan_from_args(&decl, &args.build, &args.log_dir, args.jobs)?;
    check_stages(root, &plan)?;
    let timings_build = match args.timings {
        true => Some(timings_build(root, &plan, &args.log_dir)?),
        false => None,
    };
    let Some(check) = check else {
        if args.json {
            println!("{}", serde_json::to_string_pretty(&plan.redacted())?);
        } else {
            print!("{}", plan::render_dry_run(&plan));
            if let Some(build) = &timings_build {
                print!("{}", timings::render_dry_run(build));
            }
        }
        return Ok(Status::Ok);
    };
    // the recorded inputs of every image (context hashes, one image inspect), for "up to date"
    // and "why did it re-run"
    let mut snapshot = history::Snapshot::take(root, &plan);
    let check = check?;
    snapshot.set_engine(history::engine_identity(
        check.probe.server_version.as_deref(),
    ));
    // one run at a time writes a log directory: concurrent runs would tear each other's logs
    let _lock = lock_log_dir(&root.join(&args.log_dir), &args.log_dir)?;
    preflight_with(root, &plan, args.engine, check)?;
    // up to date: the recorded inputs say so and the result is still there; no buildx process.
    // (An atomic publish: the registry's tags still name the digests it moved them to. A
    // per-image push or a farm always builds.)
    let may_skip =
        !args.force && args.build.builders.is_empty() && (!args.build.push || plan.publishes());
    if may_skip && plan.publishes() {
        snapshot.read_published(&plan);
    }
    let current: Vec<String> = (plan.builds.iter())
        .filter(|b| may_skip && snapshot.up_to_date(b))
        .map(|b| b.image.clone())
        .collect();
    let mut todo = plan.clone();
    todo.builds.retain(|b| !current.contains(&b.image));
    let mut report = execute(root, &todo, progress::detect_mode());
    add_up_to_date(&mut report, &plan, &current, &snapshot);
    crate::publish::finish(root, &plan, &mut report);
    let recording = std::time::Instant::now();
    let mut record = snapshot.finish(
        "docker-build",
        args.build.tag.as_deref().unwrap_or(&decl_tag(&plan)),
        report.totals.wall_seconds,
        history_images(&report),
    );
    // bench's docker-build, in a sandbox, records into the workspace's history, marked
    record.source = history::source_from_env();
    if let Some(build) = timings_build {
        report.timings = Some(export_timings(root, &plan, build, &report));
    }
    // the JSON report carries the summary's "why" lines
    for (image, recorded) in report.images.iter_mut().zip(&record.images) {
        image.why = recorded.why.clone();
    }
    if history::enabled() {
        let file = history::record_file(root);
        let appended = match file == history::path(root) {
            true => history::append(&file, &record),
            false => history::append_from_sandbox(&file, record.clone()),
        };
        if let Err(err) = appended {
            eprintln!("warning: build history not recorded: {err:#}");
        }
        if file != history::path(root) {
            // and the sandbox's own history, unmarked: its next run's up-to-date check reads it
            // (bench's no-op scenario measures exactly that)
            let mut own = record.clone();
            own.source = None;
            if let Err(err) = history::append(&history::path(root), &own) {
                eprintln!("warning: build history not recorded: {err:#}");
            }
        }
        report.recording_seconds = Some(recording.elapsed().as_secs_f64());
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

/// The build that exports the plan's `timings` stage; a strategy without one is a usage error.
fn timings_build(root: &Path, plan: &plan::Plan, log_dir: &Path) -> anyhow::Result<plan::Build> {
    // check_stages has read the first Dockerfile: a missing one fails in preflight
    let text = (plan.builds.first())
        .and_then(|b| std::fs::read_to_string(root.join(b.dockerfile())).ok())
        .unwrap_or_default();
    timings::build(plan, &text, log_dir).map_err(|e| crate::UsageError(e).into())
}

/// After the builds: exports the `timings` stage (when every build succeeded) and reads the
/// slowest crates of cargo's report.
fn export_timings(
    root: &Path,
    plan: &plan::Plan,
    build: plan::Build,
    report: &crate::session::Report,
) -> timings::TimingsReport {
    let ran = |step: CargoStep| matches!(step, CargoStep::Ran | CargoStep::Shared);
    let mut fresh = report.images.iter().any(|i| ran(i.cargo_step));
    if report.status() != Status::Ok {
        return timings::report(
            root,
            fresh,
            Err("a build did not succeed; not exported".into()),
        );
    }
    let one = plan::Plan {
        strategy: plan.strategy.clone(),
        jobs: 1,
        builds: vec![build],
        seed: None,
        cache_ref: None,
        retry: false,
        contexts: plan.contexts.clone(),
    };
    let exported = execute(root, &one, progress::detect_mode());
    let export = &exported.images[0];
    fresh |= ran(export.cargo_step);
    let outcome = match export.result {
        crate::exec::runner::Outcome::Succeeded => Ok(()),
        _ => Err(format!(
            "the export of the {} stage failed; see {}",
            timings::STAGE,
            export.log.display()
        )),
    };
    timings::report(root, fresh, outcome)
}

/// `docker-build --cache LOCATION`: import the cache entry, build with its layer cache, and export
/// a new entry when a cargo step ran (something changed). The cache's failures are warnings
/// unless `--cache-strict`.
fn run_with_cache(
    root: &Path,
    decl: &crate::workspace::Declaration,
    args: &flags::DockerBuildArgs,
    location: &str,
    check: Option<anyhow::Result<crate::session::EngineCheck>>,
    platform: Option<String>,
) -> anyhow::Result<Status> {
    use crate::cache::{
        location::Location,
        transfer::{self, Outcome},
    };
    let location = Location::parse(location)?;
    let plan = plan_from_args(decl, &args.build, &args.log_dir, args.jobs)?;
    check_stages(root, &plan)?;
    let build_args = plan
        .builds
        .first()
        .map(|b| {
            (b.target.args.iter())
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<String>>()
        })
        .unwrap_or_default();
    let mut setup = transfer::setup(
        root,
        &plan,
        args.build.builder.as_deref(),
        &args.build.platform,
        &build_args,
        &args.log_dir,
        check.is_some(),
        &transfer::Known {
            platform,
            image_ids: match &check {
                Some(Ok(check)) => check.image_ids.clone(),
                _ => Default::default(),
            },
            ..transfer::Known::of(decl)
        },
    )?;
    setup.layers = args.cache_layers;
    // the builds' plan: with --cache-layers, reading the imported layer cache and writing one
    let with_layers = |from: Option<String>| {
        let mut args = args.clone();
        if args.cache_layers {
            args.build.cache_from.extend(from);
            args.build.cache_to.push(setup.layer_cache_to(&location));
        }
        plan_from_args(decl, &args.build, &args.log_dir, args.jobs)
    };
    let Some(check) = check else {
        print!("{}", transfer::render_helper(&setup.import_build()));
        let from = match &location {
            Location::Dir(_) => setup.cache_from(),
            Location::Registry(r) => format!(
                "type=registry,ref={}",
                r.layers("<key of the entry imported>", "{image}")
            ),
        };
        print!("{}", plan::render_dry_run(&with_layers(Some(from))?));
        print!("{}", transfer::render_helper(&setup.export_build()));
        println!(
            "# the export runs only when a cargo step ran; the entry: {location}/{}/",
            setup.inputs.key()
        );
        return Ok(Status::Ok);
    };
    preflight_with(root, &plan, args.engine, check?)?;
    // one run at a time writes a log directory: concurrent runs would tear each other's logs
    let _lock = lock_log_dir(&root.join(&args.log_dir), &args.log_dir)?;
    // the import runs beside the builds when their cargo RUNs wait for it (target cache locks)
    let importing = transfer::import_alongside(root, &setup, &location);
    let beside = match importing {
        transfer::Importing::Ended(imported) => {
            let done = matches!(imported, Outcome::Done(_));
            match transfer::finish(imported, args.cache_strict, "; building cold") {
                Status::Ok => {}
                other => return Ok(other),
            }
            if !done {
                // nothing imported: no layer cache either
                let _ = std::fs::remove_dir_all(root.join(transfer::layers_in()));
                let _ = std::fs::remove_file(root.join(transfer::imported_layers()));
            }
            None
        }
        transfer::Importing::Running(beside) => {
            eprintln!(
                "cache: importing from {location} beside the builds (they start after {:.1}s; their cargo steps wait for the import)",
                beside.waited
            );
            Some(transfer::Importing::Running(beside))
        }
    };
    let staged = setup.layer_cache_from(root, &location);
    let plan = with_layers(staged)?;
    let _ = std::fs::remove_dir_all(root.join(transfer::layers_out()));
    // the export helper waits beside the builds for their cargo step (one target cache only)
    let ahead = transfer::export_ahead(
        root,
        &setup,
        &location,
        plan.builds.iter().map(|b| root.join(&b.log)).collect(),
        crate::exec::runner::unix_now() as u64,
    );
    let report = execute(root, &plan, progress::detect_mode());
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_summary(&report));
    }
    if let Some(importing) = beside {
        // under --cache-strict a failed import beside the builds fails the run after them
        match transfer::finish(importing.wait(), args.cache_strict, "; the builds ran cold") {
            Status::Ok => {}
            other => return Ok(other),
        }
    }
    if report.status() != Status::Ok {
        if let Some(ahead) = ahead {
            ahead.discard(root, &setup);
        }
        return Ok(report.status());
    }
    // something changed when a cargo step ran and compiled a crate: without the layer cache the
    // step always runs on a fresh engine, and finds everything fresh when nothing changed
    let ran: Vec<&crate::session::ImageReport> = (report.images.iter())
        .filter(|i| matches!(i.cargo_step, CargoStep::Ran))
        .collect();
    if ran.is_empty() {
        if let Some(ahead) = ahead {
            ahead.discard(root, &setup);
        }
        eprintln!("cache: no cargo step ran; {location} left as it is");
        return Ok(Status::Ok);
    }
    let compiled: usize = (ran.iter())
        .map(|i| {
            let log = std::fs::read_to_string(root.join(&i.log)).unwrap_or_default();
            crate::cargo_log::compiled(&log).len()
        })
        .sum();
    if compiled == 0 {
        if let Some(ahead) = ahead {
            ahead.discard(root, &setup);
        }
        eprintln!("cache: cargo compiled nothing (everything fresh); {location} left as it is");
        return Ok(Status::Ok);
    }
    let layers = args.cache_layers.then(transfer::layers_out);
    let exported = match transfer::export_after(root, &setup, &location, layers.as_deref(), ahead) {
        Ok(outcome) => outcome,
        Err(e) => Outcome::Cold(format!("export to {location} failed: {e:#}")),
    };
    Ok(transfer::finish(exported, args.cache_strict, ""))
}
