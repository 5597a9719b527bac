//! `cargo xtask docker-build`: every image in parallel on BuildKit, with live progress, a log per
//! image and a summary.

use std::{fmt::Write as _, path::Path};

use crate::{
    exec::{events::CargoStep, progress, runner::Outcome},
    flags, plan,
    session::{
        check_engine, check_stages, execute, human_size, lock_log_dir, plan_from_args,
        preflight_with, shared_cargo_runs, Report,
    },
    workspace, Status,
};

pub fn run(root: &Path, args: flags::DockerBuildArgs) -> anyhow::Result<Status> {
    // the engine check (a few docker processes) runs while cargo metadata reads the declaration:
    // a no-op rebuild is dominated by such fixed costs
    let check_bases = args.engine == flags::EngineMode::Auto
        && args.build.builder.is_none()
        && args.build.builders.is_empty();
    let (decl, check) = std::thread::scope(|s| {
        let check = (!args.dry_run).then(|| s.spawn(|| check_engine(root, check_bases)));
        let decl = workspace::load(root);
        (
            decl,
            check.map(|h| h.join().expect("engine check panicked")),
        )
    });
    let plan = plan_from_args(&decl?, &args.build, &args.log_dir, args.jobs)?;
    check_stages(root, &plan)?;
    let Some(check) = check else {
        if args.json {
            println!("{}", serde_json::to_string_pretty(&plan.redacted())?);
        } else {
            print!("{}", plan::render_dry_run(&plan));
        }
        return Ok(Status::Ok);
    };
    // one run at a time writes a log directory: concurrent runs would tear each other's logs
    let _lock = lock_log_dir(&root.join(&args.log_dir), &args.log_dir)?;
    preflight_with(root, &plan, args.engine, check?)?;
    let mut report = execute(root, &plan, progress::detect_mode());
    crate::publish::finish(root, &plan, &mut report);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_summary(&report));
    }
    Ok(report.status())
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
    // with several builders, a column says where each image ran (and where it failed first)
    let farm = report.images.iter().any(|i| i.builder.is_some());
    let placed = |image: &crate::session::ImageReport| match (&image.builder, &image.retried_from) {
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
    for image in &report.images {
        let result = match image.result {
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
            "{:<width$}  {:<11}  {:>6.1}s  {:<16}  {:>9}{}",
            image.image,
            result,
            image.wall_seconds,
            cargo,
            size,
            placed(image)
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
    if let Some(publish) = &report.publish {
        out.push('\n');
        out.push_str(&crate::publish::render(publish));
    }
    if let Some(first) = report.images.first() {
        if let Some(dir) = first.log.parent() {
            let _ = writeln!(out, "logs: {}/", dir.display());
        }
    }
    out
}
