//! `bench --scenarios scale`: how the builds grow with the images and the dependencies. For each
//! size (`--sizes`, images) it generates a workspace shaped like the platform under
//! target/xtask/scale/ ([`crate::scale`]: N service crates on `common`, the platform's dependency
//! set or this workspace's, `--deps`), then runs in it, side by side in one run:
//!
//! - the steps `cold`, `common`, `service` (a file of the first service changed), `noop`: this
//!   project's `docker-build` (workspace strategy) and native cargo, each in its own sandbox and
//!   cache namespace as `bench` runs them; after docker-build's no-op, `docker buildx bake` of the
//!   same N targets in the same sandbox (everything cached: xtask's own cost per image against
//!   buildx's);
//! - the step `ephemeral`: the [`super::ephemeral`] bench on the generated workspace (engine wiped
//!   and a fresh clone before every run), after a change in one service: `--cache`, cold, native
//!   cargo with its target directory restored, and sccache (`--contenders`), with the carried
//!   sizes and sccache's hit rate.
//!
//! The report has the medians per size, the goals, and with `--plot` one SVG of time and
//! carried size against images and crates (the plot code of `history --plot`).

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context};
use serde::Serialize;

use super::{ephemeral, Contender, ContenderRun, Row, Sample};
use crate::{
    flags,
    history::plot::{self, Series, Unit},
    proc::{Command, Stdio},
    scale::{self, Deps, Shape},
    session::human_size,
    util::{Status, UsageError},
    workspace::{self, Declaration},
};

pub const SCENARIO: &str = "scale";

/// The steps, in the order they run.
pub const STEPS: [&str; 5] = ["cold", "common", "service", "noop", "ephemeral"];

/// The ephemeral contenders' change: a file of the first service.
const EPHEMERAL_CHANGES: [&str; 1] = ["api"];

/// One size: the generated workspace and what ran in it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct SizeReport {
    pub images: usize,
    pub deps: Deps,
    /// Packages in the generated Cargo.lock, the workspace's own excluded.
    pub lock_crates: usize,
    pub samples: Vec<Sample>,
    pub rows: Vec<Row>,
    pub ephemeral: Option<ephemeral::Report>,
    /// When this size's runs ended (a merged report keeps each size's).
    #[serde(default)]
    pub measured: String,
    /// Its repetitions.
    #[serde(default)]
    pub reps: usize,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Report {
    pub date: String,
    pub command: String,
    pub cores: usize,
    pub engine: String,
    pub buildx: String,
    pub reps: usize,
    pub sizes: Vec<SizeReport>,
    pub goals: Vec<ephemeral::Goal>,
}

/// What `--scenarios scale` was asked to do, checked before anything runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub sizes: Vec<usize>,
    pub deps: Deps,
    pub steps: Vec<String>,
    pub contenders: Vec<ephemeral::Contender>,
    pub reps: usize,
    pub sccache: Option<PathBuf>,
}

/// The options from the flags: `--smoke` is 8 images, the small dependency set, one
/// repetition, no ephemeral step.
pub fn options(args: &flags::BenchArgs) -> anyhow::Result<Options> {
    let deps = match &args.deps {
        None if args.smoke => Deps::Small,
        None => Deps::Real,
        Some(text) => Deps::parse(text).ok_or_else(|| {
            UsageError(format!(
                "--deps {text}: the dependency sets are `real` and `small`"
            ))
        })?,
    };
    let sizes = match (&args.sizes[..], args.smoke) {
        ([], true) => vec![8],
        ([], false) => vec![8, 32, 64],
        (sizes, _) => {
            let mut sizes = sizes.to_vec();
            sizes.sort_unstable();
            sizes.dedup();
            sizes
        }
    };
    if let Some(zero) = sizes.iter().find(|n| **n == 0) {
        return Err(UsageError(format!(
            "--sizes {zero}: a size is a number of images, at least 1"
        ))
        .into());
    }
    if let Some(bad) = args.steps.iter().find(|s| !STEPS.contains(&s.as_str())) {
        return Err(UsageError(format!(
            "--steps {bad}: the steps of --scenarios scale are {}",
            STEPS.join(", ")
        ))
        .into());
    }
    // in the order they run, each once
    let steps: Vec<String> = (STEPS.iter())
        .filter(|s| match (&args.steps[..], args.smoke) {
            ([], true) => **s != "ephemeral",
            ([], false) => true,
            (named, _) => named.iter().any(|n| n == *s),
        })
        .map(|s| s.to_string())
        .collect();
    if args.reps == 0 && !args.smoke {
        return Err(UsageError("--reps 0: at least one repetition (--reps 1)".into()).into());
    }
    let contenders =
        if steps.iter().any(|s| s == "ephemeral") {
            ephemeral::select_from(&args.contenders, &ephemeral::SCALE, "--scenarios scale")?
        } else {
            if !args.contenders.is_empty() {
                return Err(UsageError(format!(
                "--contenders with --scenarios scale names the ephemeral step's contenders; {} \
                 has no `ephemeral`",
                if args.steps.is_empty() { "--smoke" } else { "--steps" }
            ))
                .into());
            }
            Vec::new()
        };
    let sccache = if contenders.contains(&ephemeral::Contender::Sccache) {
        let path = match &args.sccache {
            Some(p) => p.clone(),
            None => which::which("sccache").map_err(|_| {
                UsageError(
                    "the sccache contender needs an sccache binary: none on PATH; install one \
                     (`cargo install sccache --locked --no-default-features`) or pass --sccache PATH, \
                     or leave it out (--contenders cache,cold,native)"
                        .into(),
                )
            })?,
        };
        if !path.is_file() {
            return Err(UsageError(format!("--sccache {}: no such file", path.display())).into());
        }
        Some(path)
    } else {
        if let Some(path) = &args.sccache {
            return Err(UsageError(format!(
                "--sccache {}: the sccache contender does not run (--contenders {}, --steps {})",
                path.display(),
                contenders
                    .iter()
                    .map(|c| c.key())
                    .collect::<Vec<_>>()
                    .join(","),
                steps.join(",")
            ))
            .into());
        }
        None
    };
    Ok(Options {
        sizes,
        deps,
        steps,
        contenders,
        reps: if args.smoke { 1 } else { args.reps },
        sccache,
    })
}

/// The generated workspace of one size.
fn dir_of(root: &Path, shape: Shape) -> PathBuf {
    root.join("target/xtask/scale")
        .join(format!("{}-{}", shape.deps.key(), shape.images))
}

/// What a dry run prints: the workspaces and the commands.
pub fn describe(root: &Path, opts: &Options) -> String {
    let mut out = String::new();
    for n in &opts.sizes {
        let shape = Shape {
            images: *n,
            deps: opts.deps,
        };
        let images = scale::image_names(*n);
        let _ = writeln!(
            out,
            "size {n}: {} ({n} service images on common, {} dependencies: {})",
            dir_of(root, shape).display(),
            opts.deps.key(),
            scale::dep_names(match opts.deps {
                Deps::Real => scale::REAL_DEPS,
                Deps::Small => scale::SMALL_DEPS,
            })
            .len()
        );
        let steady: Vec<&String> = opts.steps.iter().filter(|s| *s != "ephemeral").collect();
        if !steady.is_empty() {
            let ours = Contender::Xtask("workspace".into());
            let _ = writeln!(
                out,
                "  {}: {}",
                ours.name(),
                ours.argv(Path::new("xtask"), &[format!("<{n} images>")], "bench")
                    .join(" ")
            );
            let _ = writeln!(
                out,
                "  {}: {}",
                Contender::Native.name(),
                Contender::Native.argv(Path::new(""), &[], "").join(" ")
            );
            if steady.iter().any(|s| *s == "noop") {
                let _ = writeln!(
                    out,
                    "  {} (noop, after docker-build's, same sandbox): {}",
                    Contender::Bake.name(),
                    Contender::Bake
                        .argv(Path::new(""), &[format!("<{n} targets>")], "")
                        .join(" ")
                );
            }
            let _ = writeln!(
                out,
                "  steps: {} x {} repetition(s)",
                steady
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                opts.reps
            );
        }
        if opts.steps.iter().any(|s| s == "ephemeral") {
            for line in
                ephemeral::describe(&opts.contenders, &images, opts.reps, &EPHEMERAL_CHANGES)
                    .lines()
            {
                let _ = writeln!(out, "  {line}");
            }
        }
    }
    out
}

/// The sizes of earlier reports (`--merge`, their `--json`), each file named in its error.
fn merged(files: &[PathBuf]) -> anyhow::Result<(Vec<SizeReport>, usize)> {
    let mut out = Vec::new();
    let mut reps = 0;
    for file in files {
        let text = fs::read_to_string(file)
            .map_err(|e| UsageError(format!("--merge {}: cannot read it: {e}", file.display())))?;
        let report: Report = serde_json::from_str(&text).map_err(|e| {
            UsageError(format!(
                "--merge {}: not the --json of `bench --scenarios scale` (line {}: {e})",
                file.display(),
                e.line()
            ))
        })?;
        out.extend(report.sizes);
        reps = reps.max(report.reps);
    }
    Ok((out, reps))
}

/// This run's sizes and the merged ones, by dependency set and images: of one size and
/// dependency set, this run's steps and ephemeral step win, a merged one fills what it lacks.
fn combine(mut sizes: Vec<SizeReport>, earlier: Vec<SizeReport>) -> Vec<SizeReport> {
    for old in earlier {
        match (sizes.iter_mut()).find(|s| s.images == old.images && s.deps == old.deps) {
            // one run's steps, another's ephemeral step: both kept
            Some(s) => {
                if s.rows.is_empty() {
                    s.rows = old.rows;
                    s.samples = old.samples;
                }
                if s.ephemeral.is_none() {
                    s.ephemeral = old.ephemeral;
                }
            }
            None => sizes.push(old),
        }
    }
    sizes.sort_by_key(|s| (s.deps.key(), s.images));
    sizes
}

/// The flags of `--scenarios scale` given without it: exit 2 naming the flag.
pub fn refuse_scale_flags(args: &flags::BenchArgs) -> anyhow::Result<()> {
    for (set, flag) in [
        (!args.sizes.is_empty(), "--sizes"),
        (args.deps.is_some(), "--deps"),
        (!args.steps.is_empty(), "--steps"),
        (args.sccache.is_some(), "--sccache"),
        (args.plot.is_some(), "--plot"),
        (!args.merge.is_empty(), "--merge"),
    ] {
        if set {
            return Err(UsageError(format!(
                "{flag} belongs to --scenarios scale; --scenarios is {}",
                if args.scenarios.is_empty() {
                    "the default".to_string()
                } else {
                    args.scenarios.join(",")
                }
            ))
            .into());
        }
    }
    Ok(())
}

pub fn run(root: &Path, args: &flags::BenchArgs) -> anyhow::Result<Status> {
    if args.scenarios.len() > 1 {
        return Err(UsageError(format!(
            "--scenarios {}: `scale` runs alone (it has its own steps: --steps)",
            args.scenarios.join(",")
        ))
        .into());
    }
    if !args.images.is_empty() {
        return Err(UsageError(format!(
            "--scenarios scale builds the images of the workspaces it generates (--sizes); \
             it takes no images ({})",
            args.images.join(" ")
        ))
        .into());
    }
    let (earlier, earlier_reps) = merged(&args.merge)?;
    if !args.merge.is_empty() && args.sizes.is_empty() && !args.smoke {
        // only the merged reports, rendered together: a flag of a run would do nothing
        for (set, flag) in [
            (args.deps.is_some(), "--deps"),
            (!args.steps.is_empty(), "--steps"),
            (!args.contenders.is_empty(), "--contenders"),
            (args.sccache.is_some(), "--sccache"),
            (args.dry_run, "--dry-run"),
        ] {
            if set {
                return Err(UsageError(format!(
                    "{flag} with --merge and no --sizes: nothing runs (the merged reports are \
                     only rendered); give --sizes to run sizes beside them"
                ))
                .into());
            }
        }
        return finish(args, combine(Vec::new(), earlier), earlier_reps);
    }
    let opts = options(args)?;
    if args.dry_run {
        print!("{}", describe(root, &opts));
        return Ok(Status::Ok);
    }
    let source = workspace::load(root)?;
    let committed = committed_dockerfile(root, &source)?;
    let rust_version = source.rust_version.clone().unwrap_or_else(|| "1.95".into());
    let xtask = std::env::current_exe().context("cannot find the xtask binary")?;
    let out_dir = root.join(&args.out_dir);
    if let Some(binary) = &opts.sccache {
        sccache_image(root, binary)?;
    }
    let mut sizes = Vec::new();
    for n in &opts.sizes {
        let shape = Shape {
            images: *n,
            deps: opts.deps,
        };
        let dir = dir_of(root, shape);
        let lock = root
            .join("target/xtask/scale")
            .join(format!("{}.lock", shape.deps.key()));
        generate(&dir, shape, &committed, &rust_version, &lock)?;
        let decl = workspace::load(&dir)
            .with_context(|| format!("the generated workspace {}", dir.display()))?;
        let size_out = out_dir.join(format!("scale-{}-{n}", shape.deps.key()));
        fs::create_dir_all(&size_out)
            .with_context(|| format!("cannot create {}", size_out.display()))?;
        sizes.push(run_size(&dir, &decl, shape, &opts, &xtask, &size_out)?);
    }
    finish(args, combine(sizes, earlier), opts.reps)
}

/// The report of `sizes`: printed, and written as --json, --markdown, --plot.
fn finish(args: &flags::BenchArgs, sizes: Vec<SizeReport>, reps: usize) -> anyhow::Result<Status> {
    let run = crate::docker::run_environment();
    let goals = goals(&sizes);
    let report = Report {
        date: run.date,
        command: run.command,
        cores: run.cores,
        engine: run.engine,
        buildx: run.buildx,
        reps,
        sizes,
        goals,
    };
    print!("{}", render(&report, false));
    if let Some(path) = &args.json {
        fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.markdown {
        fs::write(path, render(&report, true))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        fs::write(path, svg(&report))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let failed = (report.sizes.iter())
        .flat_map(|s| {
            (s.samples.iter().map(|x| x.ok)).chain(
                s.ephemeral
                    .iter()
                    .flat_map(|e| e.samples.iter().map(|x| x.ok)),
            )
        })
        .filter(|ok| !ok)
        .count();
    Ok(Status::from_ok(failed == 0))
}

/// The source workspace's workspace-strategy Dockerfile, as committed.
fn committed_dockerfile(root: &Path, decl: &Declaration) -> anyhow::Result<String> {
    let strategy = (decl.strategies.get(&decl.default_strategy))
        .filter(|s| s.one_builder() && s.dockerfile.is_some())
        .with_context(|| format!("the default strategy `{}` is not one builder stage with a Dockerfile (as `workspace` is): nothing to generate the workspace's Dockerfile from", decl.default_strategy))?;
    let file = strategy.dockerfile.as_ref().expect("filtered above");
    fs::read_to_string(root.join(file)).with_context(|| format!("cannot read {}", file.display()))
}

/// Writes the generated workspace; its Cargo.lock comes from the dependency set's lock (resolved
/// once, `cargo generate-lockfile`, then kept so every size builds the same versions).
fn generate(
    dir: &Path,
    shape: Shape,
    committed: &str,
    rust_version: &str,
    lock: &Path,
) -> anyhow::Result<()> {
    let files = scale::files(shape, committed, rust_version)?;
    scale::write(dir, &files, lock.is_file().then_some(lock))?;
    if !dir.join("Cargo.lock").is_file() {
        let status = crate::proc::status(
            Command::new("cargo")
                .args(["generate-lockfile", "--quiet"])
                .current_dir(dir)
                .env_remove("CARGO_MANIFEST_DIR")
                .stdin(Stdio::null()),
        )?;
        if !status.success() {
            bail!("cargo generate-lockfile failed in {}", dir.display());
        }
    }
    if !lock.is_file() {
        fs::copy(dir.join("Cargo.lock"), lock)
            .with_context(|| format!("cannot keep {}", lock.display()))?;
    }
    Ok(())
}

/// Packages in the generated Cargo.lock that are not the workspace's own.
fn lock_crates(dir: &Path) -> usize {
    let text = fs::read_to_string(dir.join("Cargo.lock")).unwrap_or_default();
    // a package from a registry or git has a `source`; the workspace's own have none
    text.lines().filter(|l| l.starts_with("source = ")).count()
}

/// The sccache binary as an image on this engine ([`scale::SCCACHE_IMAGE`]), which the sccache
/// strategy's builder copies it from; it survives the ephemeral wipes as a runner's image would.
fn sccache_image(root: &Path, binary: &Path) -> anyhow::Result<()> {
    let dir = root.join("target/xtask/scale/sccache-image");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    fs::copy(binary, dir.join("sccache"))
        .with_context(|| format!("cannot copy {}", binary.display()))?;
    fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY sccache /usr/local/bin/sccache\n",
    )
    .with_context(|| format!("cannot write {}", dir.join("Dockerfile").display()))?;
    let out = crate::proc::output(
        Command::new("docker")
            .args(["build", "--quiet", "--tag", scale::SCCACHE_IMAGE])
            .arg(&dir)
            .stdin(Stdio::null()),
    )?;
    if !out.status.success() {
        bail!(
            "cannot build {} from {}: {}",
            scale::SCCACHE_IMAGE,
            binary.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn run_size(
    dir: &Path,
    decl: &Declaration,
    shape: Shape,
    opts: &Options,
    xtask: &Path,
    out_dir: &Path,
) -> anyhow::Result<SizeReport> {
    let crates = lock_crates(dir);
    eprintln!(
        "bench: scale: {} images, {} dependencies ({crates} crates in Cargo.lock) in {}",
        shape.images,
        shape.deps.key(),
        dir.display()
    );
    let images: Vec<String> = decl.images.iter().map(|i| i.name.clone()).collect();
    let preflight = crate::plan::plan(
        decl,
        &decl.select(&images)?,
        &crate::plan::Options {
            strategy: decl.default_strategy.clone(),
            tag: "bench".into(),
            ..Default::default()
        },
    )?;
    crate::session::preflight(dir, &preflight, flags::EngineMode::Auto, false)?;
    let steady: Vec<String> = (opts.steps.iter())
        .filter(|s| *s != "ephemeral")
        .cloned()
        .collect();
    let ours = Contender::Xtask(decl.default_strategy.clone());
    let mut samples = Vec::new();
    if !steady.is_empty() {
        for rep in 0..opts.reps {
            let mut order = vec![ours.clone(), Contender::Native];
            order.rotate_left(rep % 2);
            for contender in &order {
                let run = ContenderRun::new(dir, decl, contender, &images, xtask, out_dir)?;
                for step in &steady {
                    samples.push(run.scenario(contender, step, rep)?);
                }
                if *contender == ours && steady.iter().any(|s| s == "noop") {
                    run.admit(&Contender::Bake)?;
                    samples.push(run.scenario(&Contender::Bake, "noop", rep)?);
                }
            }
        }
    }
    let rows = super::rows(
        &samples,
        &steady,
        &[ours.clone(), Contender::Native, Contender::Bake],
        &ours.name(),
    )
    .into_iter()
    .filter(|r| r.runs > 0)
    .collect();
    let ephemeral = if opts.steps.iter().any(|s| s == "ephemeral") {
        Some(ephemeral::run(
            dir,
            decl,
            &images,
            &opts.contenders,
            opts.reps,
            xtask,
            out_dir,
            &EPHEMERAL_CHANGES,
        )?)
    } else {
        None
    };
    Ok(SizeReport {
        images: shape.images,
        deps: shape.deps,
        lock_crates: crates,
        samples,
        rows,
        ephemeral,
        measured: crate::util::utc_date(crate::exec::runner::unix_now()),
        reps: opts.reps,
    })
}

/// This project's contender in a size's rows: the one whose ratio to ours is 1.
fn ours(size: &SizeReport) -> Option<String> {
    (size.rows.iter())
        .find(|r| r.vs_default == Some(1.0))
        .map(|r| r.contender.clone())
}

fn row<'a>(size: &'a SizeReport, step: &str, contender: &str) -> Option<&'a Row> {
    (size.rows.iter()).find(|r| r.scenario == step && r.contender == contender)
}

fn eph_row(size: &SizeReport, c: ephemeral::Contender) -> Option<&ephemeral::Row> {
    (size.ephemeral.as_ref()?.rows.iter())
        .find(|r| r.change == EPHEMERAL_CHANGES[0] && r.contender == c.name())
}

/// The goals; pure. Per size of the real dependency set: cold and common against native;
/// the ephemeral service change against native with its target restored and against sccache,
/// and the entry against native's target + cargo home. Between the smallest and the largest size
/// (same dependency set): the no-op's growth per image, and a change in common's growth against
/// native's (which is the extra binaries' link time).
pub fn goals(sizes: &[SizeReport]) -> Vec<ephemeral::Goal> {
    let goal = ephemeral::Goal::new;
    let mut out = Vec::new();
    for size in sizes.iter().filter(|s| s.deps == Deps::Real) {
        let n = size.images;
        if let Some(name) = ours(size) {
            for (step, limit) in [("cold", 1.05), ("common", 1.10)] {
                if let Some(r) = row(size, step, &name) {
                    out.push(goal(
                        format!("{n} images, {step}: xtask / native"),
                        r.vs_native,
                        limit,
                    ));
                }
            }
        }
        if let Some(cache) =
            eph_row(size, ephemeral::Contender::Cache).filter(|r| r.median.is_some())
        {
            out.push(goal(
                format!("{n} images, ephemeral service: --cache / native restored"),
                cache.vs_native,
                1.20,
            ));
            out.push(goal(
                format!("{n} images, ephemeral service: --cache / sccache"),
                cache.vs_sccache,
                0.70,
            ));
            let dirs =
                eph_row(size, ephemeral::Contender::Native).and_then(|r| r.native_dirs_bytes);
            out.push(goal(
                format!("{n} images, entry / native target + cargo home"),
                dirs.filter(|d| *d > 0 && cache.carried_bytes > 0)
                    .map(|d| cache.carried_bytes as f64 / d as f64),
                0.35,
            ));
        }
    }
    for deps in [Deps::Real, Deps::Small] {
        let of: Vec<&SizeReport> = (sizes.iter())
            .filter(|s| s.deps == deps && ours(s).is_some())
            .collect();
        if let (Some(small), Some(large)) = (
            of.iter().min_by_key(|s| s.images),
            of.iter().max_by_key(|s| s.images),
        ) {
            growth(small, large, &mut out);
        }
    }
    out
}

/// The growth goals between two sizes of one dependency set.
fn growth(small: &SizeReport, large: &SizeReport, out: &mut Vec<ephemeral::Goal>) {
    let goal = ephemeral::Goal::new;
    if large.images > small.images {
        let (a, b) = (small.images, large.images);
        let median = |s: &SizeReport, step: &str, c: &str| row(s, step, c).and_then(|r| r.median);
        let name = ours(large).unwrap_or_default();
        if let (Some(x), Some(y)) = (median(small, "noop", &name), median(large, "noop", &name)) {
            out.push(goal(
                format!(
                    "{a} -> {b} images ({}): no-op growth per image (seconds)",
                    small.deps.key()
                ),
                Some((y - x) / (b - a) as f64),
                0.015,
            ));
        }
        let native = Contender::Native.name();
        if let (Some(x), Some(y), Some(nx), Some(ny)) = (
            median(small, "common", &name),
            median(large, "common", &name),
            median(small, "common", &native),
            median(large, "common", &native),
        ) {
            // growth beyond native's own (the extra binaries' link time), with 10% slack
            out.push(goal(
                format!(
                    "{a} -> {b} images ({}): common's growth / native's growth",
                    small.deps.key()
                ),
                ((ny - nx) > 0.0).then(|| (y - x) / (ny - nx)),
                1.10,
            ));
        }
    }
}

fn fmt_s(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.2}s")).unwrap_or_else(|| "-".into())
}

fn fmt_x(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.2}x")).unwrap_or_else(|| "-".into())
}

fn runs(runs: usize, failed: usize) -> String {
    format!(
        "{runs}{}",
        if failed > 0 {
            format!(" ({failed} FAILED)")
        } else {
            String::new()
        }
    )
}

/// The steps' rows, a header first; pure.
fn steady_table(report: &Report) -> Vec<Vec<String>> {
    let mut steady = vec![[
        "images",
        "deps",
        "crates",
        "step",
        "contender",
        "runs",
        "median",
        "min-max",
        "vs native",
        "compiled",
    ]
    .map(String::from)
    .to_vec()];
    for s in &report.sizes {
        for r in &s.rows {
            let range = match (r.min, r.max) {
                (Some(a), Some(b)) => format!("{a:.1}-{b:.1}s"),
                _ => "-".into(),
            };
            steady.push(vec![
                s.images.to_string(),
                s.deps.key().into(),
                s.lock_crates.to_string(),
                r.scenario.clone(),
                r.contender.clone(),
                runs(r.runs, r.failed),
                fmt_s(r.median),
                range,
                fmt_x(r.vs_native),
                r.compiled.to_string(),
            ]);
        }
    }
    steady
}

/// The ephemeral runs' rows, a header first; pure.
fn ephemeral_table(report: &Report) -> Vec<Vec<String>> {
    let mut eph = vec![[
        "images",
        "deps",
        "ephemeral run",
        "contender",
        "runs",
        "median",
        "restore",
        "build",
        "save",
        "compiled",
        "carried",
        "vs cold",
        "vs native",
        "vs sccache",
        "sccache hits",
    ]
    .map(String::from)
    .to_vec()];
    for s in &report.sizes {
        let Some(e) = &s.ephemeral else { continue };
        for r in &e.rows {
            let carried = match r.native_dirs_bytes {
                Some(d) => format!("{} (dirs {})", human_size(r.carried_bytes), human_size(d)),
                None => human_size(r.carried_bytes),
            };
            eph.push(vec![
                s.images.to_string(),
                s.deps.key().into(),
                if r.change == EPHEMERAL_CHANGES[0] {
                    "service".into()
                } else {
                    r.change.clone()
                },
                r.contender.clone(),
                runs(r.runs, r.failed),
                fmt_s(r.median),
                fmt_s(r.restore),
                fmt_s(r.build),
                fmt_s(r.save),
                format!("{}+{}", r.compiled_own, r.compiled_deps),
                carried,
                fmt_x(r.vs_cold),
                fmt_x(r.vs_native),
                fmt_x(r.vs_sccache),
                r.hit_rate
                    .map(|h| format!("{h:.1}%"))
                    .unwrap_or_else(|| "-".into()),
            ]);
        }
    }
    eph
}

/// The report as text or Markdown tables; pure.
pub fn render(report: &Report, markdown: bool) -> String {
    let mut out = String::new();
    if markdown {
        let _ = writeln!(
            out,
            "Measured by `{}` on {} ({} cores, Docker engine {}, {}); {} repetition(s), medians.\n",
            report.command, report.date, report.cores, report.engine, report.buildx, report.reps
        );
        let when: Vec<String> = (report.sizes.iter())
            .map(|s| {
                format!(
                    "{}-{} at {} ({} rep.)",
                    s.deps.key(),
                    s.images,
                    s.measured,
                    s.reps
                )
            })
            .collect();
        let _ = writeln!(out, "Sizes measured: {}.\n", when.join(", "));
    }
    let (steady, eph) = (steady_table(report), ephemeral_table(report));
    for table in [steady, eph] {
        if table.len() > 1 {
            out.push_str(&crate::util::table(&table, markdown));
            out.push('\n');
        }
    }
    for g in &report.goals {
        let _ = writeln!(
            out,
            "{}goal {}: {} <= {:.3}  {}",
            if markdown { "- " } else { "" },
            g.what,
            g.value
                .map(|v| format!("{v:.3}"))
                .unwrap_or_else(|| "-".into()),
            g.limit,
            match g.met {
                Some(true) => "met",
                Some(false) => "NOT MET",
                None => "not measured",
            }
        );
    }
    let floored = (report.sizes.iter())
        .flat_map(|s| &s.samples)
        .filter(|x| x.under_gc_floor)
        .count();
    if floored > 0 {
        let _ = writeln!(
            out,
            "{}{floored} run(s) ended with the engine's disk under its GC floor: BuildKit may have pruned cache mounts they or later runs used (their times may include downloads and compiles that are not theirs)",
            if markdown { "- " } else { "" },
        );
    }
    if !markdown {
        let _ = writeln!(
            out,
            "{} cores, engine {}, {}; {} repetition(s); crates = packages in the generated \
             Cargo.lock; compiled = workspace + dependency crates cargo compiled",
            report.cores, report.engine, report.buildx, report.reps
        );
    }
    out
}

/// A short name for a legend.
fn short(contender: &str) -> String {
    contender
        .replace("xtask workspace", "xtask")
        .replace("native cargo + restored target", "native restored")
        .replace("native cargo", "native")
        .replace("buildx bake", "bake")
        .replace("xtask, nothing carried", "cold")
        .replace(" (store carried)", "")
}

/// Adds a point to the series `name` (made when new).
fn add(series: &mut Vec<Series>, name: String, point: (f64, f64, String)) {
    match series.iter_mut().find(|s| s.name == name) {
        Some(s) => s.points.push(point),
        None => series.push(Series {
            name,
            points: vec![point],
        }),
    }
}

/// One build-time chart per dependency set (their seconds differ by an order of magnitude),
/// the series named without the set.
fn time_charts(time: &[Series]) -> Vec<String> {
    [Deps::Real, Deps::Small]
        .into_iter()
        .filter_map(|deps| {
            let prefix = format!("{}: ", deps.key());
            let of: Vec<Series> = (time.iter())
                .filter(|s| s.name.starts_with(&prefix))
                .map(|s| Series {
                    name: s.name[prefix.len()..].to_string(),
                    points: s.points.clone(),
                })
                .collect();
            (!of.is_empty()).then(|| {
                plot::xy_svg(
                    &format!(
                        "scale: build time against service images, {} dependencies",
                        deps.key()
                    ),
                    "service images",
                    "seconds",
                    Unit::Seconds,
                    &of,
                )
            })
        })
        .collect()
}

/// Charts stacked in one SVG: the builds' time against images (one per dependency set) (steps and the ephemeral
/// service change, per contender and dependency set), the no-op's (its growth per image is a
/// goal, and it is too small to read beside a cold build), and what the ephemeral contenders
/// carry against the crates in Cargo.lock; pure.
pub fn svg(report: &Report) -> String {
    let (mut time, mut noop, mut size) = (Vec::new(), Vec::new(), Vec::new());
    for s in &report.sizes {
        let deps = s.deps.key();
        for r in &s.rows {
            let Some(m) = r.median else { continue };
            let title = format!(
                "{} images, {deps}, {}: {} {m:.2}s",
                s.images, r.scenario, r.contender
            );
            let name = format!("{deps}: {} {}", r.scenario, short(&r.contender));
            let into = if r.scenario == "noop" {
                &mut noop
            } else {
                &mut time
            };
            add(into, name, (s.images as f64, m, title));
        }
        let changed = s
            .ephemeral
            .iter()
            .flat_map(|e| e.rows.iter())
            .filter(|r| r.change == EPHEMERAL_CHANGES[0]);
        for r in changed {
            if let Some(m) = r.median {
                let title = format!(
                    "{} images, {deps}, ephemeral service change: {} {m:.1}s",
                    s.images, r.contender
                );
                add(
                    &mut time,
                    format!("{deps}: eph. {}", short(&r.contender)),
                    (s.images as f64, m, title),
                );
            }
            let bytes = r.native_dirs_bytes.unwrap_or(r.carried_bytes);
            if bytes > 0 {
                let what = if r.native_dirs_bytes.is_some() {
                    "target+home"
                } else {
                    "carried"
                };
                let name = format!("{} {what}", short(&r.contender));
                let title = format!(
                    "{} crates, {} images: {name} {}",
                    s.lock_crates,
                    s.images,
                    human_size(bytes)
                );
                add(&mut size, name, (s.lock_crates as f64, bytes as f64, title));
            }
        }
    }
    for s in time
        .iter_mut()
        .chain(noop.iter_mut())
        .chain(size.iter_mut())
    {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let mut charts = time_charts(&time);
    charts.push(plot::xy_svg(
        "scale: no-op against service images",
        "service images",
        "seconds",
        Unit::Seconds,
        &noop,
    ));
    // without an ephemeral step there is nothing carried to draw: no empty chart
    if size.iter().any(|s| !s.points.is_empty()) {
        charts.push(plot::xy_svg(
            "scale: carried between ephemeral runs, against crates in Cargo.lock",
            "crates in Cargo.lock",
            "size",
            Unit::Bytes,
            &size,
        ));
    }
    plot::stack(&charts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(scenario: &str, contender: &str, median: f64, ours: bool, vs_native: f64) -> Row {
        Row {
            scenario: scenario.into(),
            contender: contender.into(),
            runs: 1,
            failed: 0,
            median: Some(median),
            min: Some(median),
            max: Some(median),
            vs_default: ours.then_some(1.0),
            vs_native: Some(vs_native),
            compiled: 0,
            compiled_twice: None,
            recording: None,
        }
    }

    fn size(images: usize, deps: Deps, noop: f64, common: f64, native_common: f64) -> SizeReport {
        SizeReport {
            images,
            deps,
            lock_crates: 600,
            samples: vec![],
            rows: vec![
                row("cold", "xtask workspace", 100.0, true, 1.02),
                row(
                    "common",
                    "xtask workspace",
                    common,
                    true,
                    common / native_common,
                ),
                row("common", "native cargo", native_common, false, 1.0),
                row("noop", "xtask workspace", noop, true, 1.0),
            ],
            ephemeral: None,
            measured: String::new(),
            reps: 1,
        }
    }

    fn report(sizes: Vec<SizeReport>, goals: Vec<ephemeral::Goal>) -> Report {
        Report {
            date: String::new(),
            command: String::new(),
            cores: 2,
            engine: String::new(),
            buildx: String::new(),
            reps: 1,
            sizes,
            goals,
        }
    }

    #[test]
    fn goals_per_size_and_growth_between_sizes() {
        let sizes = vec![
            size(8, Deps::Real, 0.20, 30.0, 28.0),
            size(64, Deps::Real, 0.90, 50.0, 40.0),
        ];
        let goals = goals(&sizes);
        let find = |w: &str| goals.iter().find(|g| g.what.contains(w)).unwrap().clone();
        assert_eq!(find("8 images, cold").met, Some(true));
        // 0.7 s over 56 images: 12.5 ms per image
        let noop = find("no-op growth");
        assert!((noop.value.unwrap() - 0.0125).abs() < 1e-9 && noop.met == Some(true));
        // common grew 20 s, native 12 s: 1.67 > 1.10
        let common = find("common's growth");
        assert_eq!(common.met, Some(false));
        // the small dependency set has no per-size goals, only growth
        let small = goals_for_small();
        assert!(small.iter().all(|g| !g.what.contains("cold")));
        assert_eq!(
            small.len(),
            2,
            "the small set's two growth goals: {small:?}"
        );
        assert!(render(&report(sizes.clone(), goals.clone()), true).contains("NOT MET"));
        let text = svg(&report(sizes, goals));
        assert!(text.contains("data-series=\"real: noop xtask\""), "{text}");
        assert!(text.contains("data-series=\"cold xtask\""), "{text}");
        // no ephemeral step in these sizes: no empty chart of what was carried
        assert!(!text.contains("carried between ephemeral runs"), "{text}");
    }

    #[test]
    fn runs_under_the_engines_gc_floor_are_named_in_the_report() {
        let floored = |floored: bool| {
            let mut one = size(8, Deps::Real, 0.2, 3.0, 2.0);
            let mut sample =
                crate::cmd::bench::tests::sample("xtask workspace", "common", 3.0, true);
            one.samples.push(sample.clone());
            sample.under_gc_floor = floored;
            one.samples.push(sample);
            report(vec![one], vec![])
        };
        let text = render(&floored(true), false);
        assert!(
            text.contains("1 run(s) ended with the engine's disk under its GC floor"),
            "{text}"
        );
        assert!(!render(&floored(false), false).contains("GC floor"));
    }

    #[test]
    fn merged_sizes_fill_what_a_run_lacks() {
        let steps = size(8, Deps::Small, 0.2, 3.0, 2.0);
        let mut eph = size(8, Deps::Small, 0.0, 0.0, 1.0);
        eph.rows.clear();
        eph.ephemeral = Some(ephemeral::Report {
            samples: vec![],
            rows: vec![],
            goals: vec![],
            cache_sizes: vec![7],
        });
        let other = size(8, Deps::Real, 0.2, 3.0, 2.0);
        let all = combine(vec![eph], vec![steps.clone(), other]);
        assert_eq!(all.len(), 2, "one size per dependency set and images");
        let small = all.iter().find(|s| s.deps == Deps::Small).unwrap();
        assert_eq!(small.rows.len(), steps.rows.len(), "the merged run's steps");
        assert!(small.ephemeral.is_some(), "this run's ephemeral step");
    }

    fn goals_for_small() -> Vec<ephemeral::Goal> {
        goals(&[
            size(8, Deps::Small, 0.2, 3.0, 2.0),
            size(32, Deps::Small, 0.3, 4.0, 3.0),
        ])
    }
}
