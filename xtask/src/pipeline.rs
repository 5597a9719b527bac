//! `docker-build` as one pipeline: one plan, and the phases that act on it in one order.
//!
//! Every capability is a [`Phase`] with a prepare step (before the builds: it may shrink or
//! extend the plan of what runs, or stop the run) and a finish step (after the builds: it reads
//! and adds to the report). The builds themselves run once, between the two passes, so the
//! capabilities combine: a `--cache` run is also checked for being up to date, recorded, timed
//! and published. A pair of flags that cannot work together is refused by [`refuse`] before
//! anything runs (exit 2, naming both).
//!
//! | phase | prepare | finish |
//! |---|---|---|
//! | up-to-date | leaves out the images whose recorded inputs show them current, then (the builder's binaries exported first, [`crate::binaries`]) those whose binaries and other inputs are unchanged | puts them back in the report, with what each image is made of for the record |
//! | cache import | imports the entry (beside the builds when their RUNs lock the target caches), adds the layer cache, starts the export watcher | waits for an import beside the builds |
//! | publish | - | moves every tag of an atomic publish, or none |
//! | history | - | appends the run's record |
//! | timings | - | exports cargo's timing report |
//! | cache export | - | exports a new entry when cargo compiled, or the location has none for this key |

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use crate::{
    binaries::{self, BinariesReport},
    cache::{
        location::Location,
        records,
        transfer::{self, Outcome},
    },
    engine_config::ImageStore,
    engine_use::{self, EngineUse},
    exec::{events::CargoStep, progress, runner::Outcome as Ran},
    flags::{self, DockerBuildArgs},
    history,
    plan::{self, Build, Plan},
    session::{self, CacheReport, CacheStep, EngineCheck, Report},
    target::Spec,
    timings,
    util::Status,
    util::UsageError,
    workspace,
};

/// The phases, in the order both passes take them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    UpToDate,
    CacheImport,
    Publish,
    History,
    Timings,
    CacheExport,
}

const PIPELINE: [Phase; 6] = [
    Phase::UpToDate,
    Phase::CacheImport,
    Phase::Publish,
    Phase::History,
    Phase::Timings,
    Phase::CacheExport,
];

/// Whether the run goes on after a prepare step.
enum Flow {
    Go,
    Stop(Status),
}

/// What the phases share: the whole selection (`plan`), what will run (`todo`), and each
/// phase's state.
struct Ctx<'a> {
    root: &'a Path,
    args: &'a DockerBuildArgs,
    plan: Plan,
    todo: Plan,
    /// The images found up to date (not built).
    current: Vec<String>,
    snapshot: Option<history::Snapshot>,
    /// With `--timings`: the build that exports the report.
    timings: Option<Build>,
    cache: Option<Carry>,
    /// The builder's binaries' digests: the probe's build and what it found.
    probe: Option<Probe>,
}

/// The export of the `binary-digests` stage ([`crate::binaries`]), before the images (`first`:
/// some image could be left out) or beside them (only to record what they are made of).
struct Probe {
    build: Build,
    text: String,
    cut: String,
    /// The digests file the probe exports.
    file: std::path::PathBuf,
    first: bool,
    report: Option<BinariesReport>,
    /// The probe's own line of its run (`first`).
    ran: Option<session::ImageReport>,
    /// Image -> what it is made of now.
    products: BTreeMap<String, String>,
}

/// [`records::list_superseded`] and [`records::remove`] on their thread (how many records and bytes
/// went), and the flag that tells it the probe has ended.
struct Tidy {
    handle: std::thread::JoinHandle<anyhow::Result<(usize, u64)>>,
    probe_ended: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// What the removal beside the probe did; a failure is a warning (the builds go on).
fn joined(tidy: Option<Tidy>) -> (usize, u64) {
    let joined = tidy.map(|t| {
        (t.probe_ended).store(true, std::sync::atomic::Ordering::SeqCst);
        let joined = t.handle.join();
        // the thread gives the engine back itself; this covers one that panicked
        engine_use::with(EngineUse::share);
        joined
    });
    match joined {
        Some(Ok(Ok(done))) => done,
        Some(Ok(Err(err))) => {
            eprintln!("warning: docker-build: superseded layer records not removed: {err:#}");
            (0, 0)
        }
        _ => (0, 0),
    }
}

/// `--cache`: where, for which builds, and what is running beside them.
struct Carry {
    location: Location,
    setup: transfer::Setup,
    beside: Option<transfer::Importing>,
    ahead: Option<transfer::ExportAhead>,
    report: CacheReport,
}

/// `cargo xtask docker-build`: the checks, then the phases around one execution of the plan.
pub fn run(root: &Path, args: &DockerBuildArgs) -> anyhow::Result<Status> {
    refuse(args)?;
    let (decl, check, platform) = declaration_and_engine(root, args);
    let decl = decl?;
    let plan = session::plan_from_args(&decl, &args.build, &args.log_dir, args.jobs)?;
    let layers = args.layers.cache_layers;
    refuse_on_store(private_store(&args.build), &plan, layers, &args.build)?;
    session::check_stages(root, &decl, &plan)?;
    let mut ctx = Ctx {
        root,
        args,
        todo: plan.clone(),
        plan,
        current: Vec::new(),
        snapshot: None,
        timings: None,
        cache: None,
        probe: None,
    };
    // every phase's own checks, before anything runs
    if args.timings {
        ctx.timings = Some(timings_build(root, &ctx.plan, &args.log_dir)?);
    }
    if let Some(location) = &args.cache {
        ctx.cache = Some(carry(&ctx, &decl, location, &check, platform)?);
    }
    let Some(check) = check else {
        return dry_run(&mut ctx);
    };
    // the recorded inputs of every image, for "up to date" and "why did it re-run"
    let mut snapshot = history::Snapshot::take(root, &ctx.plan);
    let check = check?;
    snapshot.set_engine(history::engine_identity(
        check.probe.server_version.as_deref(),
    ));
    ctx.snapshot = Some(snapshot);
    // one run at a time writes a log directory: concurrent runs would tear each other's logs
    let _lock = session::lock_log_dir(&root.join(&args.log_dir), &args.log_dir)?;
    session::preflight_with(root, &ctx.plan, args.engine, check)?;
    // a private engine the preflight started is in use only now
    refuse_on_store(private_store(&args.build), &ctx.plan, layers, &args.build)?;
    for phase in PIPELINE {
        tracing::debug!(?phase, "prepare");
        if let Flow::Stop(status) = prepare(phase, &mut ctx)? {
            return Ok(status);
        }
    }
    let mut report = session::execute(root, &ctx.todo, progress::detect_mode());
    for phase in PIPELINE {
        tracing::debug!(?phase, "finish");
        finish(phase, &mut ctx, &mut report)?;
    }
    settle_cache_mounts(&ctx, &report);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", session::render_summary(&report));
        for image in report.images.iter().filter(|i| i.why.is_some()) {
            println!(
                "why {}: {}",
                image.image,
                image.why.as_deref().unwrap_or("")
            );
        }
    }
    Ok(report.status())
}

/// The flags that change the pipeline and cannot work together: exit 2 naming both, before
/// anything runs. Every other pair works (`xtask/tests/pipeline_matrix.rs` runs them all).
pub fn refuse(args: &DockerBuildArgs) -> Result<(), UsageError> {
    let platforms = &args.build.platform;
    if args.layers.cache_layers && args.cache.is_none() {
        return Err(UsageError(
            "--cache-layers without --cache: it says what the cache entry at --cache LOCATION carries".into(),
        ));
    }
    if args.layers.cache_layers && !args.build.builders.is_empty() {
        return Err(UsageError(format!(
            "--cache-layers with --builders {}: the seed build already carries the builder stage's layers to the other builders through --registry; leave out --cache-layers (--cache still carries the cache mounts, on the first builder)",
            args.build.builders.join(",")
        )));
    }
    if args.cache.is_some() && platforms.len() > 1 {
        return Err(UsageError(format!(
            "--cache with --platform {}: a cache entry holds one platform; build each platform with its own --cache run",
            platforms.join(",")
        )));
    }
    if args.timings && platforms.len() > 1 {
        return Err(UsageError(format!(
            "--timings with --platform {}: cargo's timing report is one cargo run's, of one platform",
            platforms.join(",")
        )));
    }
    Ok(())
}

/// The image store of the private engine, when it is the engine in use (`None` for any other
/// engine: its own driver says what it cannot do): the store its `daemon.json` names, which a
/// daemon restarted on demand keeps too.
pub fn private_store(options: &flags::BuildOptions) -> Option<ImageStore> {
    let dir = crate::engine::EngineDir::from_env();
    (options.builder.is_none() && dir.in_use())
        .then(|| dir.config().map(|c| c.store))
        .flatten()
}

/// What the private engine's classic image store (`engine up --image-store classic`) cannot
/// serve, because its docker driver exports no layer cache and builds one platform: the layer
/// cache (`cache_layers`, a `--cache-to` other than inline, the farm's seed export when the
/// engine is one of the builders: the seed, or its retry) and several platforms. Exit 2 naming
/// the flag and the store, before anything runs. Nothing with `--builders` that leaves the
/// private engine (`default`) out.
pub fn refuse_on_store(
    store: Option<ImageStore>,
    plan: &Plan,
    cache_layers: bool,
    options: &flags::BuildOptions,
) -> Result<(), UsageError> {
    let builders = &options.builders;
    let builds_here = builders.is_empty() || builders.iter().any(|b| b == "default");
    if store != Some(ImageStore::Classic) || !builds_here {
        return Ok(());
    }
    let exports = |to: &&String| {
        Spec::parse(to).map_or(true, |s| !s.0.contains(&("type".into(), "inline".into())))
    };
    let (flag, instead) = if cache_layers {
        ("--cache-layers".to_string(), "leave out --cache-layers")
    } else if let Some(to) = options.cache_to.iter().find(exports) {
        (format!("--cache-to {to}"), "leave out --cache-to")
    } else if plan.cache_ref.is_some() {
        (
            format!("--builders {}", builders.join(",")),
            "name only builders on the containerd store",
        )
    } else if options.platform.len() > 1 {
        (
            format!("--platform {}", options.platform.join(",")),
            "build one platform",
        )
    } else {
        return Ok(());
    };
    Err(UsageError(format!(
        "{flag}: the private engine uses the classic image store, whose docker driver exports no layer cache and builds one platform\n  hint: `cargo xtask engine up --image-store containerd` (each store keeps its own images and build cache), or {instead}"
    )))
}

type Checked = Option<anyhow::Result<EngineCheck>>;

/// The declaration (cargo metadata) while the engine is checked (a few docker processes), and
/// with `--cache` the engine's platform: a no-op run is dominated by such fixed costs.
fn declaration_and_engine(
    root: &Path,
    args: &DockerBuildArgs,
) -> (
    anyhow::Result<workspace::Declaration>,
    Checked,
    Option<String>,
) {
    let check_bases = args.engine == flags::EngineMode::Auto
        && args.build.builder.is_none()
        && args.build.builders.is_empty();
    std::thread::scope(|s| {
        let check = (!args.dry_run).then(|| s.spawn(|| session::check_engine(root, check_bases)));
        let platform = (!args.dry_run && args.cache.is_some() && args.build.platform.is_empty())
            .then(|| s.spawn(transfer::engine_platform));
        let decl = workspace::load(root);
        (
            decl,
            check.map(|h| h.join().expect("engine check panicked")),
            platform.and_then(|h| h.join().ok()?.ok()),
        )
    })
}

/// The build that exports the plan's `timings` stage; a strategy without one is a usage error.
fn timings_build(root: &Path, plan: &Plan, log_dir: &Path) -> anyhow::Result<Build> {
    // check_stages has read the first Dockerfile: a missing one fails in preflight
    let text = (plan.builds.first())
        .and_then(|b| std::fs::read_to_string(root.join(b.dockerfile())).ok())
        .unwrap_or_default();
    timings::build(plan, &text, log_dir).map_err(|e| UsageError(e).into())
}

/// The cache phases' setup: the entry's key and the mounts of the plan's builds.
fn carry(
    ctx: &Ctx,
    decl: &workspace::Declaration,
    location: &str,
    check: &Checked,
    platform: Option<String>,
) -> anyhow::Result<Carry> {
    let location = Location::parse(location)?;
    let build_args: Vec<String> = (ctx.plan.builds.first().into_iter())
        .flat_map(|b| b.target.args.iter().map(|(k, v)| format!("{k}={v}")))
        .collect();
    let known = transfer::Known {
        platform,
        image_ids: match check {
            Some(Ok(check)) => check.image_ids.clone(),
            _ => Default::default(),
        },
        whole: transfer::whole_strategy(decl, &ctx.plan.strategy),
        ..transfer::Known::of(decl)
    };
    let mut setup = transfer::setup(
        ctx.root,
        &ctx.plan,
        &ctx.args.build.platform,
        &build_args,
        &ctx.args.log_dir,
        check.is_some(),
        &known,
    )?;
    setup.layers = ctx.args.layers.cache_layers;
    Ok(Carry {
        report: CacheReport {
            location: location.to_string(),
            key: setup.inputs.key(),
            import: None,
            export: None,
        },
        location,
        setup,
        beside: None,
        ahead: None,
    })
}

/// `--dry-run`: the commands each phase would run, around the builds' (with what the phases
/// add to them); `--json`: the builds' plan.
fn dry_run(ctx: &mut Ctx) -> anyhow::Result<Status> {
    let (mut before, mut after) = (String::new(), String::new());
    if let Some(carry) = &ctx.cache {
        before.push_str(&transfer::render_helper(&carry.setup.import_build()));
        let from = (carry.setup).layers_from(&carry.location, "<key of the entry imported>");
        add_layer_cache(
            &mut ctx.todo,
            carry,
            ctx.args.layers.cache_layers,
            Some(from),
        );
    }
    if let Some((build, _, _)) = probe_of(ctx.root, ctx.args, &ctx.todo) {
        before.push_str(&format!(
            "# first, when the images' last builds recorded what they are made of (else beside the builds): the builder's binary digests; images whose binaries and inputs are unchanged are left out\n{}   # {} -> {}\n",
            crate::proc::shell_line(&plan::redacted(&build.argv())),
            binaries::STAGE,
            build.log.display()
        ));
        if let Some(bakes) = bakes_after_probe(&mut ctx.todo.clone(), ctx.args.jobs) {
            before.push_str(&format!(
                "# then, when the probe ran first, the images it does not leave out, as {} buildx bake{}; an image a failed bake stopped builds again with its own line below:\n",
                bakes.len(),
                if bakes.len() == 1 { "" } else { "s, one after another" }
            ));
            for bake in bakes {
                let images: Vec<&str> = (bake.builds.iter())
                    .map(|&i| ctx.todo.builds[i].image.as_str())
                    .collect();
                before.push_str(&format!(
                    "{}   # {}\n",
                    crate::proc::shell_line(&bake.argv),
                    images.join(", ")
                ));
            }
        }
    }
    if let Some(build) = &ctx.timings {
        after.push_str(&timings::render_dry_run(build));
    }
    if let Some(carry) = &ctx.cache {
        after.push_str(&transfer::render_helper(&carry.setup.export_build()));
        after.push_str(&format!(
            "# the export runs when cargo compiled something, or when {} has no entry {}\n",
            carry.location, carry.report.key
        ));
    }
    if ctx.args.json {
        println!("{}", serde_json::to_string_pretty(&ctx.todo.redacted())?);
    } else {
        print!("{before}{}{after}", plan::render_dry_run(&ctx.todo));
    }
    Ok(Status::Ok)
}

/// With `--cache-layers`: every build reads the imported layer cache (`from`) and writes one.
fn add_layer_cache(todo: &mut Plan, carry: &Carry, layers: bool, from: Option<Spec>) {
    if !layers {
        return;
    }
    let to = carry.setup.layer_cache_to(&carry.location);
    for build in &mut todo.builds {
        let image = build.image.clone();
        let target = &mut build.target;
        target
            .cache_from
            .extend(from.iter().map(|f| f.for_image(&image)));
        target.cache_to.push(to.for_image(&image));
    }
}

fn prepare(phase: Phase, ctx: &mut Ctx) -> anyhow::Result<Flow> {
    match phase {
        Phase::UpToDate => {
            // (an atomic publish: the registry's tags still name the digests it moved them to;
            // a per-image push or a farm always builds)
            let args = &ctx.args;
            let may_skip = !args.force
                && args.build.builders.is_empty()
                && (!args.build.push || ctx.plan.publishes());
            let snapshot = ctx.snapshot.as_mut().expect("taken before the phases");
            if !may_skip {
                return Ok(Flow::Go);
            }
            if ctx.plan.publishes() {
                snapshot.read_published(&ctx.plan);
            }
            ctx.current = (ctx.plan.builds.iter())
                .filter(|b| snapshot.up_to_date(b))
                .map(|b| b.image.clone())
                .collect();
            let current = &ctx.current;
            ctx.todo.builds.retain(|b| !current.contains(&b.image));
            probe_binaries(ctx);
            Ok(Flow::Go)
        }
        Phase::CacheImport => match ctx.cache.as_mut() {
            Some(carry) => import(ctx.root, ctx.args, &mut ctx.todo, carry),
            None => Ok(Flow::Go),
        },
        Phase::CacheExport => {
            if let Some(carry) = ctx.cache.as_mut().filter(|_| !ctx.todo.builds.is_empty()) {
                // the export helper waits beside the builds for their cargo step
                carry.ahead = transfer::export_ahead(
                    ctx.root,
                    &carry.setup,
                    &carry.location,
                    (ctx.todo.builds.iter())
                        .map(|b| ctx.root.join(&b.log))
                        .collect(),
                    crate::exec::runner::unix_now() as u64,
                );
            }
            Ok(Flow::Go)
        }
        Phase::Publish | Phase::History | Phase::Timings => Ok(Flow::Go),
    }
}

/// The up-to-date phase's second look: with the builder's binaries' digests exported first, the
/// images whose product ([`crate::binaries::product`]) equals their last build's are left out
/// too. When no image has a recorded product the probe runs beside the builds instead, so that
/// this run records them. Only for two or more images loaded into the engine, on one platform,
/// without --cache (its export reads the builds' cargo steps) and when the inputs' check may skip.
fn probe_binaries(ctx: &mut Ctx) {
    let args = ctx.args;
    let Some((build, cut, text)) = probe_of(ctx.root, args, &ctx.todo) else {
        return;
    };
    let file = ctx
        .root
        .join(binaries::dir(&args.log_dir))
        .join(binaries::FILE);
    // an earlier run's digests must not stand for this run's
    let _ = std::fs::remove_file(&file);
    let snapshot = ctx.snapshot.as_ref().expect("taken before the phases");
    let first = (ctx.todo.builds.iter()).any(|b| snapshot.last_product(b).is_some());
    let mut probe = Probe {
        build,
        text,
        cut,
        file,
        first,
        report: None,
        ran: None,
        products: BTreeMap::new(),
    };
    if !first {
        ctx.todo.builds.push(probe.build.clone());
        ctx.probe = Some(probe);
        return;
    }
    let tidy = tidy_beside(ctx.root, &ctx.todo.builds, &probe.cut, &probe.build);
    let one = ctx.todo.single(probe.build.clone());
    let ran = session::execute(ctx.root, &one, progress::detect_mode());
    // ended before any image starts: removing a record costs BuildKit the cache of its parent
    // step (docs/SCALING.md, run 7), which a build resolving that step meanwhile would meet
    let tidied = joined(tidy);
    probe.read(snapshot, &ctx.todo.builds, &ran.images[0]);
    if let Some(r) = probe.report.as_mut() {
        (r.superseded_records, r.superseded_bytes) = tidied;
    }
    let left_out: Vec<String> = (ctx.todo.builds.iter())
        .filter(|b| {
            snapshot
                .last_product(b)
                .is_some_and(|l| probe.products.get(&b.image).is_some_and(|n| n == l))
        })
        .map(|b| b.image.clone())
        .collect();
    ctx.todo.builds.retain(|b| !left_out.contains(&b.image));
    ctx.current.extend(left_out.iter().cloned());
    let bakes = bakes_after_probe(&mut ctx.todo, args.jobs);
    if let Some(report) = probe.report.as_mut() {
        report.bakes = bakes.into_iter().flatten().map(|b| b.file).collect();
        report.left_out = left_out;
    }
    probe.ran = ran.images.into_iter().next();
    ctx.probe = Some(probe);
}

/// Makes `plan`'s builds, the images after a probe that ran first, run as bakes, and returns
/// them: they only copy from the built builder stage, so one bake (one buildx client and session
/// for all) instead of a process each (docs/SCALING.md, run 10); --jobs N: bakes of N, one after
/// another. The run and `--dry-run` both take them from here.
fn bakes_after_probe(plan: &mut Plan, jobs: usize) -> Option<Vec<plan::BakeRun>> {
    plan.bake = Some(if jobs == 0 { usize::MAX } else { jobs });
    let all: Vec<usize> = (0..plan.builds.len()).collect();
    plan.bakes(&all)
}

/// The probe's build, the builder stage and the Dockerfile's text, when the run may leave images
/// out by their binaries ([`probe_binaries`]).
fn probe_of(root: &Path, args: &DockerBuildArgs, todo: &Plan) -> Option<(Build, String, String)> {
    let loaded = todo.builds.iter().filter(|b| b.loaded()).count();
    let may = !args.force
        && args.build.builders.is_empty()
        && !args.build.push
        && args.cache.is_none()
        && args.build.platform.len() <= 1
        && loaded >= 2
        && !(todo.builds.iter()).any(|b| b.target.no_cache || b.target.pull);
    let first = todo.builds.first().filter(|_| may)?;
    let text = std::fs::read_to_string(root.join(first.dockerfile())).ok()?;
    let build = binaries::build(todo, &text, &args.log_dir)?;
    let cut = binaries::source_stage(&text)?;
    Some((build, cut, text))
}

/// Beside the probe: removes the layer records earlier builds of these images left (each one
/// kept slows every later build: BuildKit's build record walks them; docs/SCALING.md), read
/// from their last logs. Only while this run holds the engine alone (no other run builds on it:
/// [`crate::engine_use`]), and only once the probe's own cargo step runs (its cache lookups are
/// over) or the probe ended. Not on a named builder or docker context: the listing and the
/// prune would act on the default one.
fn tidy_beside(root: &Path, builds: &[Build], cut: &str, probe: &Build) -> Option<Tidy> {
    if builds.iter().any(|b| b.runs_on().is_some()) {
        return None;
    }
    let steps: BTreeSet<String> = (builds.iter())
        .filter_map(|b| std::fs::read_to_string(root.join(&b.log)).ok())
        .flat_map(|log| records::copy_steps(&log, cut))
        .collect();
    if steps.is_empty() || !engine_use::with(EngineUse::try_alone) {
        return None;
    }
    let log = root.join(&probe.log);
    // an earlier run's log must not start it
    let _ = std::fs::remove_file(&log);
    let probe_ended = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ended = probe_ended.clone();
    let handle = std::thread::spawn(move || {
        let removed = (|| {
            // the listing (of layer records only: no cache mount is held) at once; the prune waits
            let gone = records::list_superseded(&steps)?;
            while !gone.is_empty()
                && !ended.load(std::sync::atomic::Ordering::SeqCst)
                && !(std::fs::read_to_string(&log)).is_ok_and(|t| records::cargo_step_started(&t))
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            if crate::exec::runner::interrupted() {
                return Ok((0, 0));
            }
            records::remove(&gone)
        })();
        // other runs may build again at once, not only after this run's probe
        engine_use::with(EngineUse::share);
        removed
    });
    Some(Tidy {
        handle,
        probe_ended,
    })
}

impl Probe {
    /// The digests the probe exported (when it succeeded) and every build's product from them.
    fn read(&mut self, snapshot: &history::Snapshot, builds: &[Build], ran: &session::ImageReport) {
        let succeeded = ran.result == Ran::Succeeded;
        let file = &self.file;
        let digests = match std::fs::read_to_string(file) {
            Ok(text) if succeeded => binaries::parse(&text)
                .map_err(|e| eprintln!("warning: {}: {e}", file.display()))
                .ok(),
            _ => None,
        };
        match &digests {
            Some(digests) => {
                for b in builds {
                    if let Some(p) = snapshot.product(b, &self.text, &self.cut, digests) {
                        self.products.insert(b.image.clone(), p);
                    }
                }
            }
            None => eprintln!(
                "warning: docker-build: the builder's binary digests were not exported (see {}); every image builds",
                ran.log.display()
            ),
        }
        self.report = Some(BinariesReport {
            mode: if self.first { "first" } else { "beside" }.into(),
            succeeded: digests.is_some(),
            wall_seconds: ran.wall_seconds,
            left_out: Vec::new(),
            superseded_records: 0,
            superseded_bytes: 0,
            cargo_step: ran.cargo_step,
            log: ran.log.clone(),
            bakes: Vec::new(),
        });
    }
}

/// The up-to-date phase's finish, first: a probe that ran beside the builds leaves the report
/// (it is not an image) and gives this run's products; one that ran first lends its cargo step
/// to the images built after it (their builder stage was cached: the cargo run served them, as
/// one shared step does), so `why`, `--timings` and the history see it; the report says what the
/// probe did and what the tidy beside it removed.
fn binaries_found(ctx: &mut Ctx, report: &mut Report) {
    let Some(probe) = ctx.probe.as_mut() else {
        return;
    };
    if !probe.first {
        let Some(at) = (report.images.iter()).position(|i| i.image == probe.build.image) else {
            return;
        };
        let ran = report.images.remove(at);
        let t = &mut report.totals;
        t.images -= 1;
        match ran.result {
            Ran::Succeeded => t.succeeded -= 1,
            Ran::Failed => t.failed -= 1,
            Ran::Interrupted => t.interrupted -= 1,
            Ran::NotStarted => t.not_started -= 1,
        }
        let snapshot = ctx.snapshot.as_ref().expect("taken before the phases");
        let builds: Vec<Build> = (ctx.todo.builds.iter())
            .filter(|b| b.image != probe.build.image)
            .cloned()
            .collect();
        probe.read(snapshot, &builds, &ran);
    } else if let Some(ran) = &probe.ran {
        report.totals.wall_seconds += ran.wall_seconds;
        let lent = ran.cargo_step.ran();
        for image in report.images.iter_mut().filter(|_| lent) {
            if matches!(image.cargo_step, CargoStep::Cached | CargoStep::None)
                && image.result == Ran::Succeeded
            {
                image.cargo_step = ran.cargo_step;
                image.cargo_seconds = ran.cargo_seconds;
                image.cargo_name = ran.cargo_name.clone();
                image.cargo_started = ran.cargo_started;
            }
        }
    }
    report.binaries = probe.report.clone();
}

/// The cache import's prepare step: nothing to build, nothing to import; else the import, beside
/// the builds when it can be, and the layer cache it staged.
fn import(
    root: &Path,
    args: &DockerBuildArgs,
    todo: &mut Plan,
    carry: &mut Carry,
) -> anyhow::Result<Flow> {
    // an earlier run's layouts must not reach this run's export
    let _ = std::fs::remove_dir_all(root.join(transfer::layers_out()));
    if todo.builds.is_empty() {
        carry.report.import = Some(skipped("every image is up to date"));
        return Ok(Flow::Go);
    }
    match transfer::import_alongside(root, &carry.setup, &carry.location) {
        transfer::Importing::Ended(imported) => {
            let done = matches!(imported, Outcome::Done(_));
            let step = cache_step(imported, args.cache_strict, "; building cold");
            let stop = step.failed || step.result == "interrupted";
            carry.report.import = Some(step);
            if stop {
                return Ok(Flow::Stop(match carry.report.import.as_ref() {
                    Some(s) if s.failed => Status::Failed,
                    _ => Status::Interrupted,
                }));
            }
            if !done {
                // nothing imported: no layer cache either
                let _ = std::fs::remove_dir_all(root.join(transfer::layers_in()));
                let _ = std::fs::remove_file(root.join(transfer::imported_layers()));
            }
        }
        transfer::Importing::Running(beside) => {
            eprintln!(
                "cache: importing from {} beside the builds (they start after {:.1}s; their cargo steps wait for the import)",
                carry.location, beside.waited
            );
            carry.beside = Some(transfer::Importing::Running(beside));
        }
    }
    let staged = carry.setup.layer_cache_from(root, &carry.location);
    add_layer_cache(todo, carry, args.layers.cache_layers, staged);
    Ok(Flow::Go)
}

fn finish(phase: Phase, ctx: &mut Ctx, report: &mut Report) -> anyhow::Result<()> {
    match phase {
        Phase::UpToDate => {
            binaries_found(ctx, report);
            let snapshot = ctx.snapshot.as_ref().expect("taken before the phases");
            history::add_up_to_date(report, &ctx.plan, &ctx.current, snapshot);
        }
        Phase::CacheImport => {
            if let Some(carry) = ctx.cache.as_mut() {
                if let Some(importing) = carry.beside.take() {
                    // under --cache-strict a failed import beside the builds fails the run
                    let then = "; the builds ran cold";
                    carry.report.import =
                        Some(cache_step(importing.wait(), ctx.args.cache_strict, then));
                }
                report.cache = Some(carry.report.clone());
            }
        }
        Phase::Publish => crate::publish::finish(ctx.root, &ctx.plan, report),
        Phase::History => record(ctx, report),
        Phase::Timings => {
            if let Some(build) = ctx.timings.take() {
                report.timings = Some(export_timings(ctx.root, &ctx.plan, build, report));
            }
        }
        Phase::CacheExport => {
            if let Some(carry) = ctx.cache.as_mut() {
                let step = export(ctx.root, ctx.args, carry, report);
                carry.report.export = Some(step);
                report.cache = Some(carry.report.clone());
            }
        }
    }
    Ok(())
}

/// After the builds, when a cargo step ran on the engine in use (not on a named builder or
/// docker context): its cache mounts sized now ([`records::size_cache_mounts`]), while this run
/// holds the engine alone and before it returns, so that the engine's GC, when it runs after the
/// run's last build, finds their sizes known and holds none of them while the next run's build
/// asks for them. Within one run the GC may still meet a later build (`--jobs` waves, the images
/// after the probe do not use the mounts). A failure is a warning.
fn settle_cache_mounts(ctx: &Ctx, report: &Report) {
    let probe = (ctx.probe.as_ref()).and_then(|p| p.ran.as_ref());
    let cargo_ran = report.images.iter().any(|i| i.cargo_step.ran())
        || probe.is_some_and(|p| p.cargo_step.ran());
    // the whole selection: a probe on a named builder may leave every image out
    let elsewhere = ctx.plan.builds.iter().any(|b| b.runs_on().is_some());
    if !cargo_ran
        || elsewhere
        || crate::exec::runner::interrupted()
        || !engine_use::with(EngineUse::try_alone)
    {
        return;
    }
    if let Err(err) = records::size_cache_mounts() {
        eprintln!("warning: docker-build: the cache mounts' sizes not worked out: {err:#}");
    }
    engine_use::with(EngineUse::share);
}

/// The history phase: the run's record, appended (bench's docker-build in a sandbox records into
/// the workspace's history, marked, and into its own), and the summary's "why" lines.
fn record(ctx: &mut Ctx, report: &mut Report) {
    let Some(snapshot) = ctx.snapshot.take() else {
        return;
    };
    let recording = std::time::Instant::now();
    let tag = (ctx.args.build.tag.clone()).unwrap_or_else(|| session::decl_tag(&ctx.plan));
    // an image found up to date is still made of what its last build recorded
    let mut products: BTreeMap<String, String> = (ctx.current.iter())
        .filter_map(|i| Some((i.clone(), snapshot.last.get(i)?.0.product.clone()?)))
        .collect();
    products.extend(ctx.probe.iter().flat_map(|p| p.products.clone()));
    let mut record = snapshot.finish(
        "docker-build",
        &tag,
        report.totals.wall_seconds,
        history::history_images(report),
    );
    record.source = history::source_from_env();
    for image in record.images.iter_mut().filter(|i| i.succeeded()) {
        image.product = products.get(&image.image).cloned();
    }
    for (image, recorded) in report.images.iter_mut().zip(&record.images) {
        image.why = recorded.why.clone();
    }
    if !history::enabled() {
        return;
    }
    let (root, file) = (ctx.root, history::record_file(ctx.root));
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
        record.source = None;
        if let Err(err) = history::append(&history::path(root), &record) {
            eprintln!("warning: build history not recorded: {err:#}");
        }
    }
    report.recording_seconds = Some(recording.elapsed().as_secs_f64());
}

/// After the builds: exports the `timings` stage (when every build succeeded) and reads the
/// slowest crates of cargo's report.
fn export_timings(
    root: &Path,
    plan: &Plan,
    build: Build,
    report: &Report,
) -> timings::TimingsReport {
    let mut fresh = report.images.iter().any(|i| i.cargo_step.ran());
    if report.totals.failed + report.totals.interrupted + report.totals.not_started > 0 {
        let why = "a build did not succeed; not exported".to_string();
        return timings::report(root, fresh, Err(why));
    }
    let one = plan.single(build);
    let exported = session::execute(root, &one, progress::detect_mode());
    let export = &exported.images[0];
    fresh |= export.cargo_step.ran();
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

/// The cache export's finish step: a new entry when the builds succeeded and cargo compiled
/// something, or when the location has no entry for this key yet (a warm engine seeding an
/// empty location); otherwise the location stays as it is.
fn export(root: &Path, args: &DockerBuildArgs, carry: &mut Carry, report: &Report) -> CacheStep {
    let ahead = carry.ahead.take();
    let discard = |ahead: Option<transfer::ExportAhead>, why: String| {
        if let Some(ahead) = ahead {
            ahead.discard(root, &carry.setup);
        }
        eprintln!("cache: {why}; {} left as it is", carry.location);
        skipped(&why)
    };
    let failed = report.totals.failed + report.totals.interrupted + report.totals.not_started;
    if failed > 0 {
        return discard(ahead, "a build did not succeed".into());
    }
    // something changed when a cargo step ran and compiled a crate: without the layer cache the
    // step always runs on a fresh engine, and finds everything fresh when nothing changed
    let compiled: usize = (report.images.iter())
        .filter(|i| i.cargo_step == CargoStep::Ran)
        .map(|i| {
            let log = std::fs::read_to_string(root.join(&i.log)).unwrap_or_default();
            crate::cargo_log::compiled(&log).len()
        })
        .sum();
    if compiled == 0 && transfer::holds_entry(&carry.setup, &carry.location) {
        let ran = report.images.iter().any(|i| i.cargo_step == CargoStep::Ran);
        let why = match (report.images.iter().all(|i| i.up_to_date), ran) {
            (true, _) => "no build ran (every image up to date)",
            (false, false) => "no cargo step ran",
            (false, true) => "cargo compiled nothing (everything fresh)",
        };
        return discard(ahead, why.into());
    }
    // a directory location merges the builds' layouts (none when nothing was built); a registry
    // location's builds wrote their layer cache to its tags
    let built_layouts = root.join(transfer::layers_out()).is_dir();
    let layers = (args.layers.cache_layers
        && (built_layouts || matches!(carry.location, Location::Registry(_))))
    .then(transfer::layers_out);
    let exported = transfer::export_after(
        root,
        &carry.setup,
        &carry.location,
        layers.as_deref(),
        ahead,
    )
    .unwrap_or_else(|e| Outcome::Cold(format!("export to {} failed: {e:#}", carry.location)));
    cache_step(exported, args.cache_strict, "")
}

fn skipped(why: &str) -> CacheStep {
    CacheStep {
        result: "skipped".into(),
        line: why.into(),
        failed: false,
    }
}

/// A cache outcome as the report keeps it; a cold one is a warning now (stderr), or with
/// `strict` an error that fails the run. `then` ends a warning: what happens instead.
fn cache_step(outcome: Outcome, strict: bool, then: &str) -> CacheStep {
    let (result, line) = match outcome {
        Outcome::Done(line) => ("done", line),
        Outcome::Cold(why) => ("cold", why),
        Outcome::Interrupted => ("interrupted", "interrupted".to_string()),
    };
    if result == "cold" {
        match strict {
            true => eprintln!("error: cache: {line}"),
            false => eprintln!("warning: cache: {line}{then}"),
        }
    }
    CacheStep {
        result: result.into(),
        failed: strict && result == "cold",
        line,
    }
}
