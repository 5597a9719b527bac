//! Import and export of cache entries: the edge of [`super`], where the helper builds run (through
//! the runner, so Ctrl-C stops them with the builds) and files are read and written.
//!
//! Import never fails a build: a missing location, no compatible entry, a damaged archive or a
//! failed helper build is a [`Outcome::Cold`] with a one-line reason, and the builds go on cold.
//!
//! Longer than 500 lines: import and export are one protocol (setup, helper builds, staging,
//! publish) whose steps must agree on paths and names.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::Context;

use super::{
    archive,
    helper::{self, CacheMount, HelperBuild, HelperOptions, Incoming},
    key::{self, Candidate, Choice, KeyInputs},
    location::{self, Listed, Location, RegistryRef, Staging},
    manifest::{self, ArchivePart, Layers, Manifest, MountArchive},
    remote,
};
use crate::{
    exec::{
        progress,
        runner::{self, Job, Outcome as JobOutcome},
    },
    plan::Plan,
    session::human_size,
    target::Spec,
    util::Status,
};

/// Where the helper builds and the staged layer caches live, relative to the workspace root.
pub const WORK_DIR: &str = "target/xtask/cache";
/// The cargo profile the Dockerfiles build.
pub const PROFILE: &str = "release";

/// What an import or export needs to know about the builds.
#[derive(Debug, Clone)]
pub struct Setup {
    pub inputs: KeyInputs,
    /// The workspace's crate names ([`helper::Stable::locals`]).
    pub locals: Vec<String>,
    pub mounts: Vec<CacheMount>,
    /// `(id, target)` of every cache mount of the strategy (every image it builds, not only the
    /// plan's): what an entry may carry ([`Manifest::check_mounts`]).
    pub strategy_mounts: Vec<(String, String)>,
    pub helper: HelperOptions,
    /// Every RUN of the plan that mounts a cache locks its target cache
    /// ([`helper::Uses::locked`]): an import may run beside the builds.
    pub locked: bool,
    /// The images whose layer caches travel (one tag each in the layer cache).
    pub images: Vec<String>,
    /// Whether an import stages the entry's layer cache (`docker-build --cache` only with
    /// `--cache-layers`; `cache import` always).
    pub layers: bool,
    pub log_dir: PathBuf,
}

impl Setup {
    /// `--cache-from` for the builds after an import (`{image}` is the plan's placeholder).
    pub fn cache_from(&self) -> Spec {
        let src = layers_in().display().to_string();
        Spec::of(&[("type", "local"), ("src", &src), ("tag", "{image}")])
    }

    /// `--cache-to` for the builds before an export: a directory per image (concurrent exports
    /// to one directory collide in its ingest area), merged into the entry by [`export`].
    pub fn cache_to(&self) -> Spec {
        let dest = format!("{}/{{image}}", layers_out().display());
        Spec::of(&[
            ("type", "local"),
            ("dest", &dest),
            ("mode", "max"),
            ("tag", "{image}"),
        ])
    }

    /// `--cache-to` for the builds before an export to `location`.
    pub fn layer_cache_to(&self, location: &Location) -> Spec {
        match location {
            Location::Dir(_) => self.cache_to(),
            Location::Registry(r) => {
                let reference = r.layers(&self.inputs.key(), "{image}");
                Spec::of(&[("type", "registry"), ("ref", &reference), ("mode", "max")])
            }
        }
    }

    /// `--cache-from` for the builds after an import from `location`, when it brought a layer
    /// cache: the staged directory, or the registry tags of the entry imported.
    pub fn layer_cache_from(&self, root: &Path, location: &Location) -> Option<Spec> {
        match location {
            Location::Dir(_) => root.join(layers_in()).is_dir().then(|| self.cache_from()),
            Location::Registry(_) => {
                let name = fs::read_to_string(root.join(imported_layers())).ok()?;
                Some(self.layers_from(location, name.trim()))
            }
        }
    }

    /// `--cache-from` of the layer cache of the entry `entry` (a registry's tags of it; a
    /// directory's staged layouts).
    pub fn layers_from(&self, location: &Location, entry: &str) -> Spec {
        match location {
            Location::Dir(_) => self.cache_from(),
            Location::Registry(r) => {
                let reference = r.layers(entry, "{image}");
                Spec::of(&[("type", "registry"), ("ref", &reference)])
            }
        }
    }

    /// The import helper for every mount, an archive each (`--dry-run`: the parts an entry
    /// splits a cache into are known once it is found).
    pub fn import_build(&self) -> HelperBuild {
        let mounts: Vec<Incoming> = (self.mounts.iter())
            .map(|m| Incoming {
                mount: m.clone(),
                parts: 1,
                stamp: None,
            })
            .collect();
        self.import_build_of(&mounts)
    }

    /// The import helper for `mounts` (with their parts), its archives staged in `import-in`.
    fn import_build_of(&self, mounts: &[Incoming]) -> HelperBuild {
        helper::import_build(&self.helper, mounts, &Path::new(WORK_DIR).join("import-in"))
    }

    pub fn export_build(&self) -> HelperBuild {
        helper::export_build(&self.helper, &self.mounts, None, &helper::Stable::default())
    }
}

pub fn layers_in() -> PathBuf {
    Path::new(WORK_DIR).join("layers-in")
}

/// The key of the entry whose registry layer cache the last import brought (registry locations).
pub fn imported_layers() -> PathBuf {
    Path::new(WORK_DIR).join("imported-layers")
}

pub fn layers_out() -> PathBuf {
    Path::new(WORK_DIR).join("layers-out")
}

/// What a dry run's cache ids carry for the engine's platform it does not ask: expanded as
/// this (safe in an id), then shown as [`ENGINE_PLATFORM`].
const ENGINE_PLATFORM_STAND_IN: &str = "ENGINE_OS/ENGINE_ARCH";
/// The placeholder of a dry run for the engine's platform.
const ENGINE_PLATFORM: &str = "<the engine's platform>";

/// The cache mounts and builder base image of a plan's builds for `platform` (`os/arch`, what
/// the ids' `${TARGETPLATFORM}` expands to), from its Dockerfiles, and whether every RUN that
/// mounts them locks its target cache.
pub fn mounts_of_plan(
    root: &Path,
    plan: &Plan,
    platform: &str,
) -> anyhow::Result<(String, Vec<CacheMount>, bool)> {
    let mut texts: std::collections::BTreeMap<PathBuf, crate::dockerfile::model::Dockerfile> =
        Default::default();
    let mut base: Option<String> = None;
    let mut mounts: Vec<CacheMount> = Vec::new();
    let mut locked = true;
    for build in &plan.builds {
        if !texts.contains_key(build.dockerfile()) {
            let path = root.join(build.dockerfile());
            let text = fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", build.dockerfile().display()))?;
            let df = crate::dockerfile::model::parse(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", build.dockerfile().display()))?;
            texts.insert(build.dockerfile().to_path_buf(), df);
        }
        let file = build.dockerfile().display().to_string();
        let build_args: Vec<String> = (build.target.args.iter())
            .map(|(k, v)| format!("{k}={v}"))
            .chain(helper::platform_args(platform))
            .collect();
        let uses = helper::uses(
            &texts[build.dockerfile()],
            &file,
            &build.target.target,
            &build_args,
        )
        .map_err(|e| anyhow::anyhow!("image `{}`: {e}", build.image))?;
        locked &= uses.locked;
        if let (Some(b), None) = (uses.base_image, &base) {
            base = Some(b);
        }
        for m in uses.mounts {
            if !mounts.iter().any(|o| o.id == m.id) {
                mounts.push(m);
            }
        }
    }
    let Some(base) = base else {
        anyhow::bail!("the selected images' Dockerfiles have no cache mount: nothing to carry");
    };
    Ok((base, mounts, locked))
}

/// What the caller already knows, so that [`setup`] asks no process for it: from the
/// declaration (its cargo metadata) and from the engine check that ran beside it.
#[derive(Debug, Clone, Default)]
pub struct Known {
    pub rust_version: Option<String>,
    pub local_crates: Vec<String>,
    /// The engine's `<os>/<arch>`.
    pub platform: Option<String>,
    /// Image reference -> its id, as `docker image inspect` says.
    pub image_ids: BTreeMap<String, String>,
    /// The plan of every image the strategy builds ([`whole_strategy`]).
    pub whole: Option<Plan>,
}

/// The plan of every image `strategy` builds (as declared, no option): the cache mounts an entry
/// of it may carry.
pub fn whole_strategy(decl: &crate::workspace::Declaration, strategy: &str) -> Option<Plan> {
    let images: Vec<_> = (decl.images.iter())
        .filter(|i| decl.dockerfile_for(strategy, i).is_ok())
        .collect();
    let options = crate::plan::Options {
        strategy: strategy.into(),
        tag: decl.tag.clone(),
        ..Default::default()
    };
    crate::plan::plan(decl, &images, &options).ok()
}

impl Known {
    pub fn of(decl: &crate::workspace::Declaration) -> Known {
        Known {
            rust_version: decl.rust_version.clone(),
            local_crates: decl.local_crates.clone(),
            ..Known::default()
        }
    }
}

/// The engine's `<os>/<arch>` (what BuildKit calls the platform it builds for by default).
pub fn engine_platform() -> anyhow::Result<String> {
    docker_query(&["version", "--format", "{{.Server.Os}}/{{.Server.Arch}}"])
        .context("cannot ask the engine its platform")
}

/// The builder's base image, the cache mounts of `plan` for `platform` (a dry run's stand-in
/// shown as such), whether its RUNs lock them, and `(id, target)` of every mount of the whole
/// strategy ([`Known::whole`]; the plan's own without it).
type Mounts = (String, Vec<CacheMount>, bool, Vec<(String, String)>);

fn mounts_for(root: &Path, plan: &Plan, platform: &str, known: &Known) -> anyhow::Result<Mounts> {
    let (base, mounts, locked) = if platform == ENGINE_PLATFORM {
        let (base, mounts, locked) = mounts_of_plan(root, plan, ENGINE_PLATFORM_STAND_IN)?;
        let shown = mounts.into_iter().map(|m| CacheMount {
            id: m.id.replace(ENGINE_PLATFORM_STAND_IN, ENGINE_PLATFORM),
            ..m
        });
        (base, shown.collect(), locked)
    } else {
        mounts_of_plan(root, plan, platform)?
    };
    let whole = (known.whole.as_ref()).filter(|_| platform != ENGINE_PLATFORM);
    let all = match whole.map(|w| mounts_of_plan(root, w, platform)) {
        Some(Ok((_, all, _))) => all,
        _ => mounts.clone(),
    };
    let all = all.into_iter().map(|m| (m.id, m.target)).collect();
    Ok((base, mounts, locked, all))
}

/// The setup for `plan`; with `engine` false (a dry run) the engine's facts are placeholders.
/// The helpers run where the plan's first build runs (its builder or docker context: with
/// `--builders`, the first builder, which compiles the shared builder stage).
pub fn setup(
    root: &Path,
    plan: &Plan,
    platforms: &[String],
    build_args: &[String],
    log_dir: &Path,
    engine: bool,
    known: &Known,
) -> anyhow::Result<Setup> {
    if platforms.len() > 1 {
        return Err(crate::util::UsageError(format!(
            "--cache with --platform: a cache entry holds one platform; --platform {} names {}",
            platforms.join(","),
            platforms.len()
        ))
        .into());
    }
    let arg = |name: &str| {
        build_args
            .iter()
            .rev()
            .find_map(|a| a.strip_prefix(&format!("{name}=")).map(str::to_string))
    };
    let rust_version = match (arg("RUST_VERSION"), known.rust_version.clone()) {
        (Some(v), _) | (None, Some(v)) => v,
        (None, None) => crate::workspace::rust_version(root)?,
    };
    let lock = root.join("Cargo.lock");
    let cargo_lock =
        archive::sha256_file(&lock).with_context(|| format!("cannot read {}", lock.display()))?;
    // the platform first: the target caches' ids carry it (`id=target-workspace-${TARGETPLATFORM}`)
    let platform = match (platforms.first(), engine) {
        (Some(p), _) => p.clone(),
        (None, true) => match &known.platform {
            Some(p) => p.clone(),
            None => engine_platform()?,
        },
        (None, false) => ENGINE_PLATFORM.into(),
    };
    let (base_image, mounts, locked, strategy_mounts) = mounts_for(root, plan, &platform, known)?;
    let base_image_id = if let (true, Some(id)) = (engine, known.image_ids.get(&base_image)) {
        id.clone()
    } else if engine {
        docker_query(&["image", "inspect", "--format", "{{.Id}}", &base_image])
            .with_context(|| format!("cannot inspect the base image {base_image}"))?
    } else {
        "<id of the base image>".into()
    };
    let nonce = if engine {
        format!(
            "{:x}",
            runner::unix_now().to_bits() ^ u64::from(std::process::id())
        )
    } else {
        "<nonce>".into()
    };
    Ok(Setup {
        locals: known.local_crates.clone(),
        inputs: KeyInputs {
            cargo_lock,
            rust_version,
            base_image: base_image.clone(),
            base_image_id,
            strategy: plan.strategy.clone(),
            profile: PROFILE.into(),
            platform,
            rustflags: arg("RUSTFLAGS").unwrap_or_default(),
        },
        mounts,
        strategy_mounts,
        locked,
        helper: HelperOptions {
            work_dir: WORK_DIR.into(),
            base_image,
            builder: plan.builds.first().and_then(|b| b.target.builder.clone()),
            context: plan
                .builds
                .first()
                .and_then(|b| b.target.docker_context.clone()),
            platform: platforms.first().cloned(),
            nonce,
        },
        images: plan.builds.iter().map(|b| b.image.clone()).collect(),
        layers: true,
        log_dir: log_dir.to_path_buf(),
    })
}

fn docker_query(args: &[&str]) -> anyhow::Result<String> {
    let out = crate::proc::capture_with_timeout(
        crate::proc::Command::new("docker").args(args),
        std::time::Duration::from_secs(30),
    )?;
    let line = out.lines().next().unwrap_or("").trim().to_string();
    anyhow::ensure!(
        !line.is_empty(),
        "`docker {}` printed nothing",
        args.join(" ")
    );
    Ok(line)
}

/// How an import or export ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done; what was carried, in one line.
    Done(String),
    /// Nothing carried, and why, in one line: the builds go on cold (import) or LOCATION stays as
    /// it was (export).
    Cold(String),
    Interrupted,
}

/// What an import found and staged on the host before its helper build unpacks it.
#[derive(Debug, Clone)]
struct Staged {
    name: String,
    /// How the entry differs from the key, when it is the closest one (` (no entry ...)`).
    note: String,
    parts: Vec<String>,
    /// The mounts the entry carries, whose archives wait in `import-in`, with their parts.
    mounts: Vec<Incoming>,
    /// A registry entry fetched to the host, removed after the import.
    fetched: Option<PathBuf>,
}

/// Imports the entry for `setup` from `location` into the engine's cache mounts, and stages its
/// layer cache at [`layers_in`].
pub fn import(root: &Path, setup: &Setup, location: &Location) -> Outcome {
    let clock = Instant::now();
    match stage(root, setup, location) {
        Err(outcome) => outcome,
        Ok(staged) => unpack_whole(root, setup, location, &staged, clock),
    }
}

/// [`unpack`] before the builds start, and the import's line.
fn unpack_whole(
    root: &Path,
    setup: &Setup,
    location: &Location,
    staged: &Staged,
    clock: Instant,
) -> Outcome {
    match unpack(root, setup, staged, false) {
        Ok(()) => done(staged, location, clock.elapsed().as_secs_f64(), None),
        Err(outcome) => outcome,
    }
}

/// An import that may still be running while the builds run.
pub enum Importing {
    Ended(Outcome),
    /// The helper holds every target cache's lock: the builds' cargo RUNs wait for it.
    Running(Beside),
}

/// An import helper running beside the builds.
pub struct Beside {
    /// What the helper did, and when it ended.
    handle: std::thread::JoinHandle<(Result<(), Outcome>, Instant)>,
    staged: Staged,
    location: Location,
    clock: Instant,
    /// Seconds from the start of the import until the builds could start.
    pub waited: f64,
}

impl Importing {
    pub fn wait(self) -> Outcome {
        match self {
            Importing::Ended(outcome) => outcome,
            Importing::Running(beside) => {
                let (result, ended) = (beside.handle.join()).unwrap_or_else(|_| {
                    let panic = Outcome::Cold("the import stopped with a panic".into());
                    (Err(panic), Instant::now())
                });
                match result {
                    Ok(()) => done(
                        &beside.staged,
                        &beside.location,
                        ended.duration_since(beside.clock).as_secs_f64(),
                        Some(beside.waited),
                    ),
                    Err(outcome) => outcome,
                }
            }
        }
    }
}

/// [`import`], overlapped with the builds when it can be: once the helper build holds the lock
/// of every target cache (the one the builds' cargo RUNs take, see [`helper::LOCK_FILE`]), this
/// returns [`Importing::Running`] and the caller starts the builds; their steps before cargo
/// run while the archives are sent and unpacked. It runs whole first ([`Importing::Ended`])
/// when the Dockerfiles' RUNs do not all lock their target caches ([`Setup::locked`]), when the
/// entry does not carry every target cache of the builds (a build whose cache the helper does
/// not lock would not wait for the cargo home's copy), or when the helper ends before it says
/// it holds the locks.
pub fn import_alongside(root: &Path, setup: &Setup, location: &Location) -> Importing {
    let clock = Instant::now();
    let staged = match stage(root, setup, location) {
        Ok(staged) => staged,
        Err(outcome) => return Importing::Ended(outcome),
    };
    let covered = (setup.mounts.iter())
        .filter(|m| !m.cargo_home)
        .all(|m| staged.mounts.iter().any(|s| s.mount.id == m.id));
    let carried: Vec<CacheMount> = staged.mounts.iter().map(|i| i.mount.clone()).collect();
    if !covered || !setup.locked || helper::lock_script(&carried).is_none() {
        return Importing::Ended(unpack_whole(root, setup, location, &staged, clock));
    }
    let log = root.join(&setup.log_dir).join("cache-import.log");
    let _ = fs::remove_file(&log);
    let marker = format!("{}-{}", helper::LOCKED_MARKER, setup.helper.nonce);
    let handle = {
        let (root, setup, staged) = (root.to_path_buf(), setup.clone(), staged.clone());
        std::thread::spawn(move || (unpack(&root, &setup, &staged, true), Instant::now()))
    };
    loop {
        let locked = fs::read_to_string(&log).is_ok_and(|text| text.contains(&marker));
        if locked {
            return Importing::Running(Beside {
                handle,
                staged,
                location: location.clone(),
                clock,
                waited: clock.elapsed().as_secs_f64(),
            });
        }
        if handle.is_finished() {
            // it ended without saying it holds the locks: failed or interrupted
            let outcome = match handle.join() {
                Ok((Ok(()), _)) => done(&staged, location, clock.elapsed().as_secs_f64(), None),
                Ok((Err(outcome), _)) => outcome,
                Err(_) => Outcome::Cold("the import stopped with a panic".into()),
            };
            return Importing::Ended(outcome);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Finds the entry for `setup` at `location`, checks its archives and links them into
/// `import-in` (the import helper's context), and stages its layer cache (a directory
/// location) or names it (a registry).
fn stage(root: &Path, setup: &Setup, location: &Location) -> Result<Staged, Outcome> {
    let _ = fs::remove_file(root.join(imported_layers()));
    let (name, note) = choose_entry(setup, location)?;
    let (entry, fetched) = fetch_entry(root, setup, location, &name)?;
    let manifest = match location::read_manifest(&entry) {
        Ok(m) if m.key == name => m,
        Ok(m) => {
            return Err(Outcome::Cold(format!(
                "entry {name}: its manifest names another key ({})",
                m.key
            )))
        }
        Err(e) => return Err(Outcome::Cold(format!("{e:#}"))),
    };
    if let Err(e) = manifest.check_mounts(&setup.strategy_mounts) {
        return Err(Outcome::Cold(format!("entry {name}: {e}")));
    }
    let (mut parts, mounts) = stage_archives(root, setup, &name, &entry, &manifest)?;
    parts.extend(stage_layers(root, setup, &name, &entry, &manifest)?);
    Ok(Staged {
        name,
        note,
        parts,
        mounts,
        fetched,
    })
}

/// The entry at `location` for `setup`'s key, or the closest one (with a note saying how it
/// differs); none is a cold outcome naming what was found and why it did not fit.
fn choose_entry(setup: &Setup, location: &Location) -> Result<(String, String), Outcome> {
    let listed = match location {
        Location::Dir(dir) if !dir.is_dir() => {
            return Err(Outcome::Cold(format!(
                "cache location {location} does not exist"
            )))
        }
        Location::Dir(dir) => location::list(dir).map_err(|e| format!("{e:#}")),
        Location::Registry(r) => list_registry(r),
    };
    let listed = listed.map_err(Outcome::Cold)?;
    let candidates: Vec<Candidate> = (listed.iter())
        .filter_map(|l| {
            l.manifest.as_ref().ok().map(|m| Candidate {
                name: l.name.clone(),
                inputs: m.inputs.clone(),
                created: m.created,
            })
        })
        .collect();
    let key = setup.inputs.key();
    match key::choose(&setup.inputs, &candidates) {
        Choice::Exact(name) => Ok((name, String::new())),
        Choice::Closest { name, differs } => {
            let note = format!(
                " (no entry {key}: the closest, differing in {})",
                differs.join(", ")
            );
            Ok((name, note))
        }
        Choice::Miss(rejected) => {
            let unreadable = (listed.iter())
                .filter_map(|l| (l.manifest.as_ref().err()).map(|e| format!("{}: {e}", l.name)));
            let mut why: Vec<String> = rejected.iter().map(|(n, w)| format!("{n}: {w}")).collect();
            why.extend(unreadable);
            Err(Outcome::Cold(if why.is_empty() {
                format!("no cache entry at {location}")
            } else {
                format!(
                    "no usable cache entry for {key} at {location} ({})",
                    why.join("; ")
                )
            }))
        }
    }
}

/// The entry's directory: at a directory location itself, from a registry fetched to the host
/// by a helper build (then also returned as what to remove after the import).
fn fetch_entry(
    root: &Path,
    setup: &Setup,
    location: &Location,
    name: &str,
) -> Result<(PathBuf, Option<PathBuf>), Outcome> {
    let r = match location {
        Location::Dir(dir) => return Ok((dir.join(name), None)),
        Location::Registry(r) => r,
    };
    let build = remote::fetch_build(&setup.helper, &r.entry(name));
    let out = root.join(&build.output);
    let _ = fs::remove_dir_all(&out);
    match run_helper(root, setup, &build, false) {
        Ok(JobOutcome::Succeeded) => Ok((out.clone(), Some(out))),
        Ok(JobOutcome::Interrupted | JobOutcome::NotStarted) => Err(Outcome::Interrupted),
        Ok(JobOutcome::Failed) => Err(Outcome::Cold(format!(
            "cannot fetch the entry {} (log: {})",
            r.entry(name),
            setup.log_dir.join("cache-fetch.log").display()
        ))),
        Err(e) => Err(Outcome::Cold(format!("{e:#}"))),
    }
}

/// Checks every archive of the caches the builds use (size, sha256, and what its tar holds:
/// [`archive::verify`], the archives at once) and links them into `import-in`, the import
/// helper's context; BuildKit unpacks them there (its ADD). The import's line's parts, and the
/// mounts carried with their parts.
fn stage_archives(
    root: &Path,
    setup: &Setup,
    name: &str,
    entry: &Path,
    manifest: &Manifest,
) -> Result<(Vec<String>, Vec<Incoming>), Outcome> {
    use rayon::prelude::*;
    let archives = root.join(WORK_DIR).join("import-in");
    let _ = fs::remove_dir_all(&archives);
    let _ = fs::remove_dir_all(root.join(layers_in()));
    if let Err(e) = fs::create_dir_all(&archives) {
        let why = format!("cannot create {}: {e}", archives.display());
        return Err(Outcome::Cold(why));
    }
    let (mut parts, mut carried_mounts) = (Vec::new(), Vec::new());
    let mut checks = Vec::new();
    for mount in setup.mounts.iter() {
        let Some(carried) = manifest.mount(&mount.id) else {
            continue;
        };
        if carried.stable_files == 0 && carried.total_tar_bytes() <= archive::EMPTY_TAR_BYTES {
            // nothing in it (and ADD would not take an empty tar for an archive)
            parts.push(format!("{} empty", mount.id));
            continue;
        }
        let pieces = carried.parts();
        parts.push(format!(
            "{} {} ({} compressed{})",
            mount.id,
            human_size(carried.total_tar_bytes()),
            human_size(carried.total_bytes()),
            match pieces.len() {
                1 => String::new(),
                n => format!(", {n} parts"),
            }
        ));
        carried_mounts.push(Incoming {
            mount: mount.clone(),
            parts: pieces.len(),
            stamp: carried.stamp(),
        });
        let named = pieces.into_iter().enumerate();
        checks.extend(named.map(|(k, part)| (mount.part_archive_name(k), part)));
    }
    let damage = (checks.par_iter()).find_map_first(|(_, part)| {
        let file = entry.join(&part.file);
        let checked = archive::verify(&file, &part.sha256, part.bytes, part.tar_bytes);
        checked
            .err()
            .map(|damage| format!("entry {name}: {} is {damage}", part.file))
    });
    if let Some(why) = damage {
        return Err(Outcome::Cold(why));
    }
    if runner::interrupted() {
        return Err(Outcome::Interrupted);
    }
    for (staged_as, part) in &checks {
        if let Err(e) = archive::link_file(&entry.join(&part.file), &archives.join(staged_as)) {
            return Err(Outcome::Cold(format!("cannot stage {}: {e}", part.file)));
        }
    }
    Ok((parts, carried_mounts))
}

/// Stages the entry's layer cache when the builds read one: an OCI layout checked and linked
/// into [`layers_in`], or the name of the entry whose registry tags hold it.
fn stage_layers(
    root: &Path,
    setup: &Setup,
    name: &str,
    entry: &Path,
    manifest: &Manifest,
) -> Result<Option<String>, Outcome> {
    let Some(layers) = manifest.layers.as_ref().filter(|_| setup.layers) else {
        return Ok(None);
    };
    if layers.kind == "registry" {
        if let Err(e) = fs::write(root.join(imported_layers()), name) {
            let why = format!("cannot record the imported entry: {e}");
            return Err(Outcome::Cold(why));
        }
        return Ok(Some(format!("layers in the registry ({})", layers.dir)));
    }
    let src = entry.join(&layers.dir);
    if let Err(e) = archive::check_layout(&src) {
        let why = format!("entry {name}: layer cache {}: {e}", layers.dir);
        return Err(Outcome::Cold(why));
    }
    match archive::link_tree(&src, &root.join(layers_in())) {
        Ok(bytes) => Ok(Some(format!("layers {}", human_size(bytes)))),
        Err(e) => Err(Outcome::Cold(format!("cannot stage the layer cache: {e}"))),
    }
}

/// Runs the import helper on what [`stage`] left, then removes what was staged on the host.
/// `quiet`: no progress lines (the builds' progress runs at the same time).
fn unpack(root: &Path, setup: &Setup, staged: &Staged, quiet: bool) -> Result<(), Outcome> {
    let result = if staged.mounts.is_empty() {
        Ok(())
    } else {
        match run_helper(root, setup, &setup.import_build_of(&staged.mounts), quiet) {
            Ok(JobOutcome::Succeeded) => Ok(()),
            Ok(JobOutcome::Interrupted | JobOutcome::NotStarted) => Err(Outcome::Interrupted),
            Ok(JobOutcome::Failed) => Err(Outcome::Cold(format!(
                "the import helper build failed (log: {})",
                setup.log_dir.join("cache-import.log").display()
            ))),
            Err(e) => Err(Outcome::Cold(format!("{e:#}"))),
        }
    };
    let _ = fs::remove_dir_all(root.join(WORK_DIR).join("import-in"));
    if let Some(fetched) = &staged.fetched {
        let _ = fs::remove_dir_all(fetched);
    }
    result
}

/// The line of a finished import; `builds_after`: the seconds after which the builds started
/// beside it.
fn done(staged: &Staged, location: &Location, seconds: f64, builds_after: Option<f64>) -> Outcome {
    let beside = builds_after
        .map(|after| {
            format!(
                " (the builds started after {after:.1}s; their cargo steps waited for the rest)"
            )
        })
        .unwrap_or_default();
    Outcome::Done(format!(
        "imported {}{} from {location}: {} in {seconds:.1}s{beside}",
        staged.name,
        staged.note,
        staged.parts.join(", "),
    ))
}

/// An export helper that may start while the builds run ([`export_ahead`]).
pub struct ExportAhead {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// What the helper did, if it started: its outcome and when it ended.
    handle: Option<std::thread::JoinHandle<Option<(JobOutcome, Instant)>>>,
}

/// A caller that returns early (an error, a failed import under `--cache-strict`) stops the
/// watching: a helper starts no more.
impl Drop for ExportAhead {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl ExportAhead {
    /// Stops watching (the builds are done) and waits for a helper that started.
    fn finish(mut self) -> Option<(JobOutcome, Instant)> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.handle.take()?.join().ok().flatten()
    }

    /// The builds failed or compiled nothing: waits for a helper that started, and drops its
    /// tars.
    pub fn discard(self, root: &Path, setup: &Setup) {
        if self.finish().is_some() {
            let _ = fs::remove_dir_all(root.join(setup.export_build().output));
        }
    }
}

/// Starts the export helper beside the builds when it is safe and worth it: the plan has one
/// target cache, and every RUN that mounts it locks it ([`Setup::locked`]). A thread watches
/// the builds' `logs` until one shows cargo compiling (the cargo RUN, which holds the lock, is
/// running: nothing compiling, nothing to export) and then runs the helper, whose RUN waits
/// for that lock and so copies the caches the moment the cargo RUN ends, while the builds
/// still assemble and export their images. The helper checks that the target cache was written
/// after `builds_started`; if not, [`export_after`] runs it again after the builds.
pub fn export_ahead(
    root: &Path,
    setup: &Setup,
    location: &Location,
    logs: Vec<PathBuf>,
    builds_started: u64,
) -> Option<ExportAhead> {
    let targets = setup.mounts.iter().filter(|m| !m.cargo_home).count();
    if !setup.locked || targets != 1 || helper::lock_script(&setup.mounts).is_none() {
        return None;
    }
    // logs of an earlier run must not start it
    for log in &logs {
        let _ = fs::remove_file(log);
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handle = {
        let (root, setup, stop) = (root.to_path_buf(), setup.clone(), stop.clone());
        let location = location.clone();
        std::thread::spawn(move || {
            loop {
                // read once more after the builds ended: fast builds end between two looks
                let done = stop.load(std::sync::atomic::Ordering::SeqCst);
                let compiling = logs.iter().any(|log| {
                    fs::read_to_string(log)
                        .is_ok_and(|t| !crate::cargo_log::compiled(&t).is_empty())
                });
                if compiling {
                    break;
                }
                if done || runner::interrupted() {
                    return None;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            let stable = stable_of(&setup, &location);
            let build =
                helper::export_build(&setup.helper, &setup.mounts, Some(builds_started), &stable);
            let _ = fs::remove_dir_all(root.join(&build.output));
            let outcome = run_helper(&root, &setup, &build, true).unwrap_or(JobOutcome::Failed);
            Some((outcome, Instant::now()))
        })
    };
    Some(ExportAhead {
        stop,
        handle: Some(handle),
    })
}

/// Exports the engine's cache mounts for `setup`, and the layer cache at `layers` (written by the
/// builds' `--cache-to`) when given, as one entry at `location`.
pub fn export(
    root: &Path,
    setup: &Setup,
    location: &Location,
    layers: Option<&Path>,
) -> anyhow::Result<Outcome> {
    export_after(root, setup, location, layers, None)
}

/// [`export`] after builds that ran with an [`export_ahead`]: its tars when its helper
/// succeeded, else the helper runs now.
pub fn export_after(
    root: &Path,
    setup: &Setup,
    location: &Location,
    layers: Option<&Path>,
    ahead: Option<ExportAhead>,
) -> anyhow::Result<Outcome> {
    let clock = Instant::now();
    // the output directory; what the helper may leave out is asked only when it runs here
    let out = root.join(setup.export_build().output);
    let mut beside = false;
    let run = |stable: &helper::Stable| -> anyhow::Result<Option<f64>> {
        let build = helper::export_build(&setup.helper, &setup.mounts, None, stable);
        let build = &build;
        let _ = fs::remove_dir_all(root.join(&build.output));
        match run_helper(root, setup, build, false)? {
            JobOutcome::Succeeded => Ok(Some(clock.elapsed().as_secs_f64())),
            JobOutcome::Interrupted | JobOutcome::NotStarted => Ok(None),
            JobOutcome::Failed => anyhow::bail!(
                "the export helper build failed (log: {})",
                setup.log_dir.join("cache-export.log").display()
            ),
        }
    };
    let mut helper_seconds = match ahead.and_then(ExportAhead::finish) {
        Some((JobOutcome::Succeeded, ended)) => {
            beside = true;
            // what the helper took after the builds (it may have ended before them)
            ended.saturating_duration_since(clock).as_secs_f64()
        }
        Some((JobOutcome::Interrupted | JobOutcome::NotStarted, _)) => {
            return Ok(Outcome::Interrupted)
        }
        _ => match run(&stable_of(setup, location))? {
            Some(seconds) => seconds,
            None => return Ok(Outcome::Interrupted),
        },
    };
    let key = setup.inputs.key();
    let staging_in = match location {
        Location::Dir(dir) => dir.clone(),
        Location::Registry(_) => root.join(WORK_DIR).join("push"),
    };
    let mut staging = Staging::create(&staging_in, &key)?;
    fs::create_dir_all(staging.path().join("mounts"))?;
    let compress_clock = Instant::now();
    let assembled = match assemble(setup, location, &key, &out, staging.path())? {
        Some(assembled) => assembled,
        None => {
            // the entry whose stable parts the helper left out is gone: all of it, once more,
            // into a new staging directory (the first may hold links to the old entry's files)
            let full = helper::Stable {
                locals: setup.locals.clone(),
                offers: Default::default(),
            };
            helper_seconds = match run(&full)? {
                Some(seconds) => seconds,
                None => return Ok(Outcome::Interrupted),
            };
            staging = Staging::create(&staging_in, &key)?;
            fs::create_dir_all(staging.path().join("mounts"))?;
            assemble(setup, location, &key, &out, staging.path())?
                .context("the export helper left out a stable part it was not offered")?
        }
    };
    if runner::interrupted() {
        return Ok(Outcome::Interrupted);
    }
    let (archives, mut parts) = assembled;
    let compress_seconds = compress_clock.elapsed().as_secs_f64();
    let (layers, line) = entry_layers(root, setup, location, &key, layers, staging.path())?;
    parts.extend(line);
    let manifest = Manifest {
        format: manifest::FORMAT,
        key: key.clone(),
        inputs: setup.inputs.clone(),
        created: runner::unix_now() as u64,
        mounts: archives,
        layers,
    };
    let total = manifest.total_bytes();
    fs::write(staging.path().join(manifest::FILE), manifest.to_json())?;
    if runner::interrupted() {
        return Ok(Outcome::Interrupted);
    }
    let Some(replaced) = publish_entry(root, setup, location, staging, &manifest)? else {
        return Ok(Outcome::Interrupted);
    };
    Ok(Outcome::Done(format!(
        "exported {key} to {location}{}: {}; {} in {:.1}s (helper build {}{helper_seconds:.1}s, zstd {compress_seconds:.1}s)",
        if replaced { " (replacing the entry)" } else { "" },
        parts.join(", "),
        human_size(total),
        clock.elapsed().as_secs_f64(),
        if beside { "beside the builds, then " } else { "" },
    )))
}

/// The entry's layer cache: at a directory location the builds' OCI layouts (`layers`) merged
/// into the staging directory, at a registry the builds' own tags; with its part of the line.
fn entry_layers(
    root: &Path,
    setup: &Setup,
    location: &Location,
    key: &str,
    layers: Option<&Path>,
    staging: &Path,
) -> anyhow::Result<(Option<Layers>, Option<String>)> {
    let Some(dir) = layers else {
        return Ok((None, None));
    };
    if let Location::Registry(_) = location {
        let layers = Layers {
            kind: "registry".into(),
            dir: format!("{key}{}{{image}}", manifest::LAYERS_TAG),
            tags: setup.images.clone(),
            bytes: 0,
        };
        return Ok((Some(layers), None));
    }
    let dir = root.join(dir);
    // the images built this run (those found up to date wrote no layout)
    let layouts: Vec<PathBuf> = (setup.images.iter())
        .map(|i| dir.join(i))
        .filter(|d| d.join("index.json").is_file())
        .collect();
    let bytes = archive::merge_layouts(&layouts, &staging.join("layers"))
        .map_err(|e| anyhow::anyhow!("the builds' layer cache: {e}"))?;
    let layers = Layers {
        kind: "oci-layout".into(),
        dir: "layers".into(),
        tags: setup.images.clone(),
        bytes,
    };
    Ok((Some(layers), Some(format!("layers {}", human_size(bytes)))))
}

/// Publishes the staged entry: one rename into a directory location, one tag update in a
/// registry (a reader finds the old entry or the new one, never half). Whether an entry was
/// replaced; none when interrupted.
fn publish_entry(
    root: &Path,
    setup: &Setup,
    location: &Location,
    staging: Staging,
    manifest: &Manifest,
) -> anyhow::Result<Option<bool>> {
    let r = match location {
        Location::Dir(_) => return Ok(Some(staging.publish()?)),
        Location::Registry(r) => r,
    };
    let entry = r.entry(&manifest.key);
    let push = remote::push_build(&setup.helper, &entry, staging.path(), &manifest.to_json());
    match run_helper_in(root, setup, &push, staging.path(), false)? {
        JobOutcome::Succeeded => Ok(Some(false)),
        JobOutcome::Interrupted | JobOutcome::NotStarted => Ok(None),
        JobOutcome::Failed => anyhow::bail!(
            "the push of {entry} failed (log: {})",
            setup.log_dir.join("cache-push.log").display()
        ),
    }
}

/// Whether `location` holds an entry under `setup`'s key whose manifest reads: an export is
/// worth it even when cargo compiled nothing (a warm engine seeding an empty location).
pub fn holds_entry(setup: &Setup, location: &Location) -> bool {
    let key = setup.inputs.key();
    match location {
        Location::Dir(dir) => location::read_manifest(&dir.join(&key)).is_ok(),
        Location::Registry(r) => list_registry(r)
            .is_ok_and(|listed| (listed.iter()).any(|l| l.name == key && l.manifest.is_ok())),
    }
}

/// The entry at a directory `location` under `key` (the one an export replaces), with its
/// directory; none for a registry (its entry is not on the host) or when there is none.
fn replaced_entry(location: &Location, key: &str) -> Option<(PathBuf, Manifest)> {
    match location {
        Location::Dir(dir) => location::read_manifest(&dir.join(key))
            .ok()
            .map(|m| (dir.join(key), m)),
        Location::Registry(_) => None,
    }
}

/// What the export helper may leave out: the workspace's crates, and the stable ids of the
/// entry it would replace.
fn stable_of(setup: &Setup, location: &Location) -> helper::Stable {
    let offers = replaced_entry(location, &setup.inputs.key())
        .map(|(_, m)| {
            (m.mounts.iter())
                .filter_map(|a| a.stable_id().map(|id| (a.id.clone(), id)))
                .collect()
        })
        .unwrap_or_default();
    helper::Stable {
        locals: setup.locals.clone(),
        offers,
    }
}

/// The archives of the new entry, in `staging/mounts/`, from the export helper's `out`: per
/// cache its stable part (compressed, split when large, or linked from the entry at `location`
/// when the helper reused it) and then the rest. `None`: the helper reused stable parts that
/// the location no longer has.
fn assemble(
    setup: &Setup,
    location: &Location,
    key: &str,
    out: &Path,
    staging: &Path,
) -> anyhow::Result<Option<(Vec<MountArchive>, Vec<String>)>> {
    let old = replaced_entry(location, key);
    let mut archives = Vec::new();
    let mut lines = Vec::new();
    for mount in &setup.mounts {
        let Some((carried, line)) = assemble_mount(mount, old.as_ref(), out, staging)? else {
            return Ok(None);
        };
        archives.push(carried);
        lines.push(line);
    }
    Ok(Some((archives, lines)))
}

/// One cache of [`assemble`]: its archive entry in the manifest and its part of the line; none
/// when the helper left out a stable part that `old` no longer has.
fn assemble_mount(
    mount: &CacheMount,
    old: Option<&(PathBuf, Manifest)>,
    out: &Path,
    staging: &Path,
) -> anyhow::Result<Option<(MountArchive, String)>> {
    let base = mount.unpacked_dir();
    let read = |name: &str| fs::read_to_string(out.join(format!("{base}.{name}")));
    let stable_files: u64 = (read("stable-files").ok())
        .and_then(|t| t.trim().parse().ok())
        .with_context(|| {
            let id = &mount.id;
            format!("cache mount {id}: the export helper counted no stable files")
        })?;
    let reused = read("reused").ok();
    let Some(mut pieces) =
        stable_pieces(mount, reused.as_deref(), old, stable_files, out, staging)?
    else {
        return Ok(None);
    };
    let stable_parts = pieces.len();
    pieces.extend(rest_piece(
        mount,
        pieces.is_empty(),
        out,
        staging,
        stable_parts,
    )?);
    let _ = fs::remove_file(out.join(format!("{base}.stable.tar")));
    let mut iter = pieces.into_iter();
    let first = (iter.next())
        .with_context(|| format!("cache mount {}: the export helper wrote no tar", mount.id))?;
    let carried = MountArchive {
        id: mount.id.clone(),
        target: mount.target.clone(),
        sharing: mount.sharing.clone(),
        paths: mount.paths(),
        file: first.file,
        sha256: first.sha256,
        bytes: first.bytes,
        tar_bytes: first.tar_bytes,
        more: iter.collect(),
        stable_parts,
        stable_files,
        stable_list: (read("stable-list").map(|l| l.trim().to_string())).unwrap_or_default(),
    };
    let line = format!(
        "{} {} -> {}{}",
        mount.id,
        human_size(carried.total_tar_bytes()),
        human_size(carried.total_bytes()),
        match (reused.is_some(), carried.more.len()) {
            (true, _) => " (its stable part unchanged: linked)".to_string(),
            (false, 0) => String::new(),
            (false, more) => format!(" ({} parts)", more + 1),
        }
    );
    Ok(Some((carried, line)))
}

/// The stable part's archives of one cache: the old entry's, linked, when the helper left the
/// part out (`reused`: the stable id it found; none when `old` no longer has that part), else
/// the helper's stable tar compressed, in several whole tars when large.
fn stable_pieces(
    mount: &CacheMount,
    reused: Option<&str>,
    old: Option<&(PathBuf, Manifest)>,
    stable_files: u64,
    out: &Path,
    staging: &Path,
) -> anyhow::Result<Option<Vec<ArchivePart>>> {
    let mut pieces: Vec<ArchivePart> = Vec::new();
    if let Some(id) = reused.map(str::trim) {
        let Some((dir, old_archive)) = old
            .and_then(|(dir, m)| m.mount(&mount.id).map(|a| (dir, a)))
            .filter(|(_, a)| a.stable_id().as_deref() == Some(id))
        else {
            return Ok(None);
        };
        for (k, part) in old_archive.parts()[..old_archive.stable_parts]
            .iter()
            .enumerate()
        {
            let file = format!("mounts/{}", mount.part_archive_name(k));
            archive::link_file(&dir.join(&part.file), &staging.join(&file))
                .with_context(|| format!("cannot link {} into the new entry", part.file))?;
            pieces.push(ArchivePart {
                file,
                ..part.clone()
            });
        }
        return Ok(Some(pieces));
    }
    if stable_files == 0 {
        return Ok(Some(pieces));
    }
    let stable_tar = out.join(format!("{}.stable.tar", mount.unpacked_dir()));
    let tar_bytes = fs::metadata(&stable_tar)
        .with_context(|| format!("cache mount {}: no stable tar from the helper", mount.id))?
        .len();
    // a large tar travels in parts, unpacked side by side on import
    let files: Vec<String> = (0..archive::parts_for(tar_bytes))
        .map(|k| format!("mounts/{}", mount.part_archive_name(k)))
        .collect();
    let outs: Vec<PathBuf> = files.iter().map(|f| staging.join(f)).collect();
    let written = archive::compress_split(&stable_tar, &outs, archive::LEVEL)
        .with_context(|| format!("cache mount {}", mount.id))?;
    pieces.extend(written.into_iter().zip(files).map(|(w, file)| ArchivePart {
        file,
        sha256: w.sha256,
        bytes: w.bytes,
        tar_bytes: w.tar_bytes,
    }));
    Ok(Some(pieces))
}

/// The rest of one cache (all but the stable part), compressed as its last part, number `k`;
/// a cache with nothing in it (`alone`: no stable part either) still has an (empty) archive.
fn rest_piece(
    mount: &CacheMount,
    alone: bool,
    out: &Path,
    staging: &Path,
    k: usize,
) -> anyhow::Result<Option<ArchivePart>> {
    let rest = out.join(mount.tar_name());
    let empty = out.join(format!("{}.empty.tar", mount.unpacked_dir()));
    let tar = if rest.is_file() {
        &rest
    } else if alone {
        fs::write(&empty, [0u8; archive::EMPTY_TAR_BYTES as usize])?;
        &empty
    } else {
        return Ok(None);
    };
    let file = format!("mounts/{}", mount.part_archive_name(k));
    let written = archive::compress(tar, &staging.join(&file), archive::LEVEL)
        .with_context(|| format!("cache mount {}", mount.id));
    let _ = fs::remove_file(&empty);
    let _ = fs::remove_file(&rest);
    let written = written?;
    Ok(Some(ArchivePart {
        file,
        sha256: written.sha256,
        bytes: written.bytes,
        tar_bytes: written.tar_bytes,
    }))
}

/// Writes the helper's Dockerfile and empty context, and runs it like a build.
fn run_helper(
    root: &Path,
    setup: &Setup,
    build: &HelperBuild,
    quiet: bool,
) -> anyhow::Result<JobOutcome> {
    run_helper_in(
        root,
        setup,
        build,
        &root.join(WORK_DIR).join("context"),
        quiet,
    )
}

/// [`run_helper`] with its context directory.
fn run_helper_in(
    root: &Path,
    setup: &Setup,
    build: &HelperBuild,
    context: &Path,
    quiet: bool,
) -> anyhow::Result<JobOutcome> {
    let dockerfile = root.join(build.dockerfile());
    fs::create_dir_all(context).with_context(|| format!("cannot create {}", context.display()))?;
    fs::write(&dockerfile, &build.dockerfile_text)
        .with_context(|| format!("cannot write {}", dockerfile.display()))?;
    let job = Job {
        name: build.name.clone(),
        argv: build.argv(),
        cwd: root.to_path_buf(),
        log: root
            .join(&setup.log_dir)
            .join(format!("{}.log", build.name)),
    };
    let reporter: Box<dyn runner::Reporter> = if quiet {
        Box::new(Silent)
    } else {
        progress::reporter(progress::detect_mode(), std::slice::from_ref(&job.name))
    };
    let result = runner::run_all(std::slice::from_ref(&job), 1, reporter.as_ref());
    drop(reporter);
    Ok(result
        .into_iter()
        .next()
        .map(|r| r.outcome)
        .unwrap_or(JobOutcome::NotStarted))
}

/// Progress of a helper build that runs beside the builds: none (its log has it all).
struct Silent;

impl runner::Reporter for Silent {
    fn started(&self, _: &str) {}
    fn update(&self, _: &str, _: &crate::exec::events::Update) {}
    fn finished(&self, _: &runner::JobResult) {}
}

/// Prints the outcome; a cold one is a warning, or a failure with `strict`.
/// `then` ends a warning: what happens instead (`; building cold`).
pub fn finish(outcome: Outcome, strict: bool, then: &str) -> Status {
    match outcome {
        Outcome::Done(line) => {
            println!("cache: {line}");
            Status::Ok
        }
        Outcome::Cold(why) if strict => {
            eprintln!("error: cache: {why}");
            Status::Failed
        }
        Outcome::Cold(why) => {
            eprintln!("warning: cache: {why}{then}");
            Status::Ok
        }
        Outcome::Interrupted => Status::Interrupted,
    }
}

/// A helper build for `--dry-run`: its command and its generated Dockerfile.
pub fn render_helper(build: &HelperBuild) -> String {
    let mut out = format!(
        "# {}: a helper build, its Dockerfile generated into {}\n{}\n",
        build.name,
        build.dockerfile().display(),
        crate::proc::shell_line(&build.argv())
    );
    for line in build.dockerfile_text.lines() {
        out.push_str(&format!("#   {line}\n"));
    }
    out
}

/// The entries of a registry location, each with its manifest (from the image config's label),
/// over the registry HTTP API. An unreachable registry or an unreadable tag list is the error.
fn list_registry(r: &RegistryRef) -> Result<Vec<Listed>, String> {
    use std::net::ToSocketAddrs;
    let unreachable = |e: String| format!("cache registry {} is unreachable ({e})", r.host);
    let addr = (r.host.to_socket_addrs())
        .map_err(|e| unreachable(e.to_string()))?
        .next()
        .ok_or_else(|| unreachable("no address".into()))?;
    let get = |path: &str, accept: Option<&str>| -> Result<String, String> {
        match crate::registry::http_get_accept(addr, path, accept) {
            Ok((200, body)) => Ok(body),
            Ok((status, _)) => Err(format!("GET {path} answered {status}")),
            Err(e) => Err(unreachable(format!("{e:#}"))),
        }
    };
    let tags_path = format!("/v2/{}/tags/list", r.repo);
    let tags = match crate::registry::http_get(addr, &tags_path) {
        // an unknown repository: no entry yet
        Ok((404, _)) => return Ok(Vec::new()),
        Ok((200, body)) => remote::entry_tags(&body)
            .map_err(|e| format!("cache registry {}: {tags_path}: {e}", r.host))?,
        Ok((status, _)) => {
            return Err(format!(
                "cache registry {}: GET {tags_path} answered {status}",
                r.host
            ))
        }
        Err(e) => return Err(unreachable(format!("{e:#}"))),
    };
    let mut out = Vec::new();
    for tag in tags {
        let manifest = (|| -> Result<Manifest, String> {
            let path = |reference: &str| format!("/v2/{}/manifests/{reference}", r.repo);
            let mut body = get(&path(&tag), Some(remote::MANIFEST_ACCEPT))?;
            // an index points at an image manifest, which points at the config
            let config = match remote::manifest_ref(&body)? {
                remote::ManifestRef::Config(digest) => digest,
                remote::ManifestRef::Manifest(digest) => {
                    body = get(&path(&digest), Some(remote::MANIFEST_ACCEPT))?;
                    match remote::manifest_ref(&body)? {
                        remote::ManifestRef::Config(digest) => digest,
                        remote::ManifestRef::Manifest(_) => {
                            return Err("an image index inside an image index".into())
                        }
                    }
                }
            };
            let config = get(&format!("/v2/{}/blobs/{config}", r.repo), None)?;
            let manifest = Manifest::parse(&remote::manifest_label(&config)?)?;
            if manifest.key != tag {
                return Err(format!("its manifest names another key ({})", manifest.key));
            }
            Ok(manifest)
        })();
        out.push(Listed {
            name: tag,
            manifest,
        });
    }
    Ok(out)
}
