//! The build history: one JSON record per `docker-build` run in `target/xtask/history.jsonl`
//! (and per build of bench and verify-parallel, marked with their `source`).
//!
//! A record holds the run (time, git revision, strategy, engine) and, per image, its outcome and
//! the content digests of everything its build reads ([`inputs`]). Appending is one `write` of a
//! whole line under an advisory lock, so concurrent runs never interleave; past
//! [`ROTATE_BYTES`] the file moves to `history.1.jsonl`. Reading skips corrupt lines with a
//! warning naming the line. [`explain`] compares two runs of an image; [`plot`] draws the times.
//!
//! Longer than 500 lines: the record format, its locked append and rotation, and the snapshot
//! that fills a record are one file format's reader and writer.

pub mod explain;
#[doc(hidden)]
pub mod fixtures;
pub mod inputs;
pub mod plot;

use std::{
    collections::BTreeMap,
    fs,
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::{
    exec::{
        events::CargoStep,
        runner::{JobResult, Outcome},
    },
    plan::Plan,
    report::{ImageReport, Report},
};

pub use inputs::Inputs;

/// Past this size the history file is rotated to `history.1.jsonl` (the older one is dropped).
pub const ROTATE_BYTES: u64 = 5 * 1024 * 1024;
/// Set to `off` (or `0`) to write no record (the up-to-date check still reads the history).
pub const DISABLE_ENV: &str = "ATTUNE_HISTORY";
pub const FORMAT_VERSION: u32 = 1;
/// Where `docker-build` appends its record instead of the workspace's own history: bench sets it
/// for the `docker-build` it runs in a sandbox (whose `target/` goes away with it) to the
/// workspace's file. The up-to-date check still reads the sandbox's own (empty) history.
pub const FILE_ENV: &str = "ATTUNE_HISTORY_FILE";
/// The command a `docker-build` runs for (`bench`): the record's `source`.
pub const SOURCE_ENV: &str = "ATTUNE_HISTORY_SOURCE";
/// `REV clean|dirty` of the workspace a sandbox was copied from, set by the command that made it:
/// a sandboxed build's record gets it without asking git (which the sandbox has not).
pub const GIT_ENV: &str = "ATTUNE_HISTORY_GIT";

/// [`GIT_ENV`]'s value for `root`.
pub fn git_env_value(root: &Path) -> String {
    let (rev, dirty) = git_state(root);
    format!(
        "{} {}",
        rev.unwrap_or_default(),
        match dirty {
            Some(true) => "dirty",
            Some(false) => "clean",
            None => "unknown",
        }
    )
}
/// The `source` of the records of the workspace's own `docker-build` runs (no `source` field).
pub const OWN_SOURCE: &str = "docker-build";

/// One run of `docker-build`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub version: u32,
    /// Seconds since the Unix epoch when the run started.
    pub time: f64,
    /// Which command built: `docker-build` (bench runs it too, with `--tag bench`) or
    /// `verify-parallel`.
    pub command: String,
    pub git_rev: Option<String>,
    pub git_dirty: Option<bool>,
    pub strategy: String,
    pub tag: String,
    pub engine_id: Option<String>,
    pub wall_seconds: f64,
    /// The command whose build this was when not the workspace's own `docker-build`: `bench`
    /// (its docker-build in a sandbox) or `verify-parallel`. Their builds run from a sandbox with
    /// rewritten Dockerfiles (cache namespaces), so neither the up-to-date check nor
    /// `history --explain` compares them with the workspace's own runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Content digest of every file of the build context (as `.dockerignore` filters it) that
    /// some image of this run reads: `path -> digest`.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    pub images: Vec<ImageRecord>,
}

/// One image of a run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageRecord {
    pub image: String,
    /// `succeeded`, `failed`, `interrupted`, `not-started` or `up-to-date` (no build started).
    pub result: String,
    pub wall_seconds: f64,
    /// `ran`, `shared`, `cached` or `none`.
    pub cargo_step: String,
    pub cargo_seconds: Option<f64>,
    pub steps_run: usize,
    pub steps_cached: usize,
    pub image_id: Option<String>,
    pub size_bytes: Option<u64>,
    /// What the build read; `None` when it could not be hashed.
    pub inputs: Option<Inputs>,
    /// One digest over `inputs`, the strategy and the engine: equal digests, equal builds.
    pub digest: Option<String>,
    /// Why the cargo step ran (the first input that differs from the last run), when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// For a local output (`--output type=local`): the digest of the files it wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_digest: Option<String>,
    /// `REPO:TAG@DIGEST` when an atomic publish moved (or found) the tag there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<String>,
    /// What the image is made of: its inputs beside the builder stage and the digests of the
    /// builder's files it took ([`crate::binaries::product`]); equal products, equal images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
}

impl ImageRecord {
    pub fn succeeded(&self) -> bool {
        self.result == "succeeded" || self.result == "up-to-date"
    }
    /// Whether the cargo step executed in this run.
    pub fn ran(&self) -> bool {
        self.cargo_step == "ran"
    }
}

impl Record {
    /// `docker-build` for the workspace's own runs, else the command that ran the build.
    pub fn source(&self) -> &str {
        self.source.as_deref().unwrap_or(OWN_SOURCE)
    }
}

/// The digest `REPO:TAG` names in a registry on a loopback address (`HEAD` of its manifest, the
/// `Docker-Content-Digest` header); None for any other registry or any error.
fn registry_digest(tag: &str) -> Option<String> {
    let (addr, path, tag) = crate::publish::loopback_tag(tag)?;
    let accept = "application/vnd.oci.image.index.v1+json, \
                  application/vnd.docker.distribution.manifest.list.v2+json, \
                  application/vnd.oci.image.manifest.v1+json, \
                  application/vnd.docker.distribution.manifest.v2+json";
    let (status, headers) =
        crate::http::head(addr, &format!("/v2/{path}/manifests/{tag}"), Some(accept)).ok()?;
    (status == 200)
        .then(|| {
            headers
                .into_iter()
                .find(|(k, _)| k == "docker-content-digest")
        })
        .flatten()
        .map(|(_, v)| v)
        .filter(|d| d.starts_with("sha256:"))
}

/// Where the history lives, relative to the workspace root.
pub fn path(root: &Path) -> PathBuf {
    root.join("target/xtask/history.jsonl")
}

/// Where this process appends its record: `$ATTUNE_HISTORY_FILE`, else [`path`].
pub fn record_file(root: &Path) -> PathBuf {
    match std::env::var_os(FILE_ENV) {
        Some(file) if !file.is_empty() => PathBuf::from(file),
        _ => path(root),
    }
}

/// `$ATTUNE_HISTORY_SOURCE`, when set and not `docker-build`.
pub fn source_from_env() -> Option<String> {
    std::env::var(SOURCE_ENV)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s != OWN_SOURCE)
}

/// Appends the record of a build run from a sandbox (no `.git` there): without a revision, it
/// gets the one of the repository `file` lives in.
pub fn append_from_sandbox(file: &Path, mut record: Record) -> anyhow::Result<()> {
    // the command that made the sandbox asked git once for all its builds
    if let Ok(rev) = std::env::var(GIT_ENV) {
        let (rev, dirty) = rev.split_once(' ').unwrap_or((&rev, ""));
        record.git_rev = Some(rev.to_string()).filter(|r| !r.is_empty());
        record.git_dirty = match dirty {
            "dirty" => Some(true),
            "clean" => Some(false),
            _ => None,
        };
    }
    if record.git_rev.is_none() {
        if let Some(dir) = file.parent() {
            let _ = fs::create_dir_all(dir);
            (record.git_rev, record.git_dirty) = git_state(dir);
        }
    }
    append(file, &record)
}

pub fn enabled() -> bool {
    !matches!(
        std::env::var(DISABLE_ENV).as_deref(),
        Ok("off") | Ok("0") | Ok("false")
    )
}

/// Appends `record` as one line. Never fails a build: the caller prints the error as a warning.
pub fn append(file: &Path, record: &Record) -> anyhow::Result<()> {
    let mut line = serde_json::to_string(record)?;
    line.push('\n');
    let dir = file.parent().context("history path has no parent")?;
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let lock_path = file.with_extension("lock");
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    // flock(2) (std's lock on Linux), released when `lock` is closed
    lock.lock()
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    if fs::metadata(file).map(|m| m.len()).unwrap_or(0) + line.len() as u64 > ROTATE_BYTES {
        let rotated = rotated_path(file);
        fs::rename(file, &rotated).with_context(|| {
            format!("cannot rotate {} to {}", file.display(), rotated.display())
        })?;
    }
    let mut out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .with_context(|| format!("cannot open {}", file.display()))?;
    // one write of the whole line: with O_APPEND and the lock, lines never interleave
    out.write_all(line.as_bytes())
        .with_context(|| format!("cannot write {}", file.display()))?;
    Ok(())
}

/// `history.jsonl` -> `history.1.jsonl`.
pub fn rotated_path(file: &Path) -> PathBuf {
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("history");
    file.with_file_name(format!("{stem}.1.jsonl"))
}

/// The records of `text` (one JSON object a line), oldest first, and a warning for each line
/// that is not a record (`name:LINE: ...`).
pub fn parse(text: &str, name: &str) -> (Vec<Record>, Vec<String>) {
    let mut records = Vec::new();
    let mut warnings = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Record>(line) {
            Ok(record) => records.push(record),
            Err(err) => warnings.push(format!(
                "{name}:{}: skipped a corrupt or truncated history line ({err})",
                i + 1
            )),
        }
    }
    (records, warnings)
}

/// Every record, the rotated file's first; warnings for unreadable lines.
pub fn read_all(file: &Path) -> (Vec<Record>, Vec<String>) {
    let mut records = Vec::new();
    let mut warnings = Vec::new();
    for path in [rotated_path(file), file.to_path_buf()] {
        match fs::read_to_string(&path) {
            Ok(text) => {
                let (r, w) = parse(&text, &path.display().to_string());
                records.extend(r);
                warnings.extend(w);
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => warnings.push(format!("cannot read {}: {err}", path.display())),
        }
    }
    (records, warnings)
}

/// An image's last successful record, its run's files, strategy and engine id.
pub type LastRun = (
    ImageRecord,
    BTreeMap<String, String>,
    String,
    Option<String>,
);

/// The newest successful record of each of `images` (and the files map of its run), reading the
/// history from its end and stopping when every image is found. Unreadable lines are skipped.
pub fn last_successful(file: &Path, images: &[&str]) -> BTreeMap<String, LastRun> {
    let mut found = BTreeMap::new();
    let Ok(text) = fs::read_to_string(file) else {
        return found;
    };
    for line in text.lines().rev() {
        if found.len() == images.len() {
            break;
        }
        let Ok(record) = serde_json::from_str::<Record>(line) else {
            continue;
        };
        // a sandbox's build (bench, verify-parallel) says nothing about this workspace's images
        if record.source.is_some() {
            continue;
        }
        for image in &record.images {
            if image.succeeded()
                && images.contains(&image.image.as_str())
                && !found.contains_key(&image.image)
            {
                found.insert(
                    image.image.clone(),
                    (
                        image.clone(),
                        record.files.clone(),
                        record.strategy.clone(),
                        record.engine_id.clone(),
                    ),
                );
            }
        }
    }
    found
}

/// What the inputs of a run's images looked like when it started, the engine's view of them, and
/// each image's last successful record: enough to decide "up to date" and to explain a re-run.
pub struct Snapshot {
    pub time: f64,
    pub strategy: String,
    pub engine_id: Option<String>,
    pub files: BTreeMap<String, String>,
    /// Per image, its inputs and their digest, or why they could not be hashed.
    pub inputs: BTreeMap<String, Result<(Inputs, String), String>>,
    /// Tag -> image id on the engine now.
    pub image_ids: BTreeMap<String, String>,
    pub last: BTreeMap<String, (ImageRecord, BTreeMap<String, String>)>,
    last_engine: BTreeMap<String, (String, Option<String>)>,
    /// Local outputs: image -> (directory, digest of its files before the run).
    outputs: BTreeMap<String, (PathBuf, Option<String>)>,
    /// An atomic publish: `REPO:TAG` -> the digest the registry has under it now (None when it
    /// has none or cannot be asked).
    pub published_now: BTreeMap<String, Option<String>>,
    git: Option<std::thread::JoinHandle<(Option<String>, Option<bool>)>>,
}

impl Snapshot {
    /// Hashes the context (in parallel) while the engine is asked for its id and the images'
    /// ids, and the history is read from its end. Never fails: what cannot be known is a doubt.
    /// The engine's identity is not known yet: [`Snapshot::set_engine`] adds it.
    pub fn take(root: &Path, plan: &crate::plan::Plan) -> Snapshot {
        let engine_id: Option<String> = None;
        let time = crate::exec::runner::unix_now();
        let git = enabled().then(|| {
            let root = root.to_path_buf();
            std::thread::spawn(move || git_state(&root))
        });
        let reads: Vec<(String, Read)> = (plan.builds.iter())
            .map(|b| (b.image.clone(), dockerfile_reads(root, b)))
            .collect();
        let mut refs: Vec<String> = plan
            .builds
            .iter()
            .filter_map(|b| b.tag().cloned())
            .collect();
        for (_, read) in &reads {
            if let Ok((r, _)) = read {
                for base in &r.base_images {
                    if !refs.contains(base) {
                        refs.push(base.clone());
                    }
                }
            }
        }
        let names: Vec<&str> = plan.builds.iter().map(|b| b.image.as_str()).collect();
        let file = path(root);
        let (files, (ids, last)) = rayon::join(
            || inputs::hash_context(root),
            || {
                rayon::join(
                    || crate::docker::inspect_images(&refs),
                    || last_successful(&file, &names),
                )
            },
        );
        let files = files.map_err(|e| format!("{e:#}"));
        let outputs = plan
            .builds
            .iter()
            .filter_map(|b| {
                let dir = root.join(b.output_dir()?);
                let digest = dir_digest(&dir);
                Some((b.image.clone(), (dir, digest)))
            })
            .collect();
        let mut result = BTreeMap::new();
        for (build, (image, read)) in plan.builds.iter().zip(reads) {
            let entry = match (&files, read) {
                (Err(e), _) => Err(e.clone()),
                (_, Err(e)) => Err(format!("{e:#}")),
                (Ok(files), Ok((reads, dockerfile_digest))) => {
                    let inputs = inputs_of(build, reads, dockerfile_digest, files, &ids);
                    let digest = inputs::digest(&inputs, &plan.strategy, engine_id.as_deref());
                    Ok((inputs, digest))
                }
            };
            result.insert(image, entry);
        }
        let (last, last_engine) = last
            .into_iter()
            .map(|(image, (rec, files, strategy, engine))| {
                ((image.clone(), (rec, files)), (image, (strategy, engine)))
            })
            .unzip();
        Snapshot {
            time,
            strategy: plan.strategy.clone(),
            engine_id,
            files: files.unwrap_or_default(),
            inputs: result,
            image_ids: ids.into_iter().map(|(r, (id, _))| (r, id)).collect(),
            last,
            last_engine,
            outputs,
            published_now: BTreeMap::new(),
            git,
        }
    }

    /// For an atomic publish: asks the registry which digest each tag of `plan` names now. Only a
    /// registry on a loopback address is asked (plain HTTP, the local one); any other tag stays
    /// unknown, so its image builds.
    pub fn read_published(&mut self, plan: &crate::plan::Plan) {
        for build in &plan.builds {
            if let Some(publish) = &build.publish {
                self.published_now
                    .insert(publish.tag.clone(), registry_digest(&publish.tag));
            }
        }
    }

    /// Sets the engine's identity, part of every image's digest.
    pub fn set_engine(&mut self, engine_id: Option<String>) {
        for (inputs, digest) in self.inputs.values_mut().flatten() {
            *digest = inputs::digest(inputs, &self.strategy, engine_id.as_deref());
        }
        self.engine_id = engine_id;
    }

    /// Whether `build` can be skipped: its inputs' digest equals its last successful build's
    /// and the engine still has the image under that build's id. Any doubt says no.
    /// For an atomic publish the result is the tag in the registry: it must still name the
    /// digest the last publish moved it to.
    pub fn up_to_date(&self, build: &crate::plan::Build) -> bool {
        let risky = ["--no-cache", "--pull", "--push"];
        let publishes = build.publish.is_some();
        if (build.argv().iter())
            .any(|a| risky.contains(&a.as_str()) && !(publishes && a == "--push"))
        {
            return false;
        }
        if let Some(publish) = &build.publish {
            let (Some(Ok((_, digest))), Some((last, _))) =
                (self.inputs.get(&build.image), self.last.get(&build.image))
            else {
                return false;
            };
            let now = self.published_now.get(&publish.tag).cloned().flatten();
            return self.engine_id.is_some()
                && last.digest.as_ref() == Some(digest)
                && now.is_some_and(|d| {
                    last.published.as_deref() == Some(&format!("{}@{d}", publish.tag))
                });
        }
        let Some(Ok((inputs, digest))) = self.inputs.get(&build.image) else {
            return false;
        };
        if self.engine_id.is_none() || inputs.base_images.values().any(Option::is_none) {
            return false;
        }
        let Some((last, _)) = self.last.get(&build.image) else {
            return false;
        };
        // the result is still there: the image under its id, or the output's files unchanged
        let present = match (build.tag(), self.outputs.get(&build.image)) {
            (Some(tag), _) if build.loaded() => {
                last.image_id.is_some() && last.image_id.as_ref() == self.image_ids.get(tag)
            }
            (None, Some((_, now))) => now.is_some() && last.output_digest == *now,
            _ => false,
        };
        present && last.digest.as_ref() == Some(digest)
    }

    /// What `build`'s image is made of, now that the builder's files are known (`text` its
    /// Dockerfile, `cut` the builder stage; [`crate::binaries::product`]). `None` when the image
    /// takes nothing from the builder or anything of it is not known.
    pub fn product(
        &self,
        build: &crate::plan::Build,
        text: &str,
        cut: &str,
        digests: &crate::binaries::Digests,
    ) -> Option<String> {
        let (inputs, _) = self.inputs.get(&build.image)?.as_ref().ok()?;
        let args: Vec<String> = (build.target.args.iter())
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let (beside, taken) =
            inputs::reads_beside(text, &build.target.target, &args, Some(cut)).ok()?;
        if taken.is_empty() {
            return None;
        }
        let (files, strategy) = (&self.files, &self.strategy);
        let engine = self.engine_id.as_deref();
        crate::binaries::product(inputs, &beside, &taken, files, digests, strategy, engine)
    }

    /// The product the last successful build of `build` recorded, when the engine still has
    /// its image under that build's id (a loaded image only).
    pub fn last_product(&self, build: &crate::plan::Build) -> Option<&str> {
        let tag = build.tag().filter(|_| build.loaded())?;
        let (last, _) = self.last.get(&build.image)?;
        let present = last.image_id.is_some() && last.image_id.as_ref() == self.image_ids.get(tag);
        last.product.as_deref().filter(|_| present)
    }

    /// Why an image's cargo step ran: its first input that differs from its last successful run.
    pub fn reason(&self, image: &str) -> Option<String> {
        let (inputs, _) = self.inputs.get(image)?.as_ref().ok()?;
        let now = explain::Side {
            inputs,
            files: &self.files,
            strategy: &self.strategy,
            engine_id: self.engine_id.as_deref(),
        };
        let before = self.last.get(image).and_then(|(rec, files)| {
            let (strategy, engine) = self.last_engine.get(image)?;
            Some(explain::Side {
                inputs: rec.inputs.as_ref()?,
                files,
                strategy,
                engine_id: engine.as_deref(),
            })
        });
        Some(explain::first_reason(before, now))
    }

    /// The record of the run: `images` as the build reported them, completed with their inputs,
    /// digests and, where the cargo step ran, why. `files` keeps only the files some image reads.
    pub fn finish(
        mut self,
        command: &str,
        tag: &str,
        wall: f64,
        mut images: Vec<ImageRecord>,
    ) -> Record {
        for image in &mut images {
            if let Some(Ok((inputs, digest))) = self.inputs.get(&image.image) {
                image.inputs = Some(inputs.clone());
                image.digest = Some(digest.clone());
            }
            if image.ran() {
                image.why = self.reason(&image.image);
            }
            if let Some((dir, before)) = self.outputs.get(&image.image) {
                image.output_digest = match image.result.as_str() {
                    "up-to-date" => before.clone(),
                    "succeeded" => dir_digest(dir),
                    _ => None,
                };
            }
        }
        let read: Vec<String> = images
            .iter()
            .filter_map(|i| i.inputs.as_ref())
            .flat_map(|i| i.sources.iter().map(|s| s.path.clone()))
            .collect();
        let files = std::mem::take(&mut self.files)
            .into_iter()
            .filter(|(f, _)| {
                read.iter().any(|p| {
                    p.is_empty()
                        || f == p
                        || (f.starts_with(p.as_str()) && f.as_bytes().get(p.len()) == Some(&b'/'))
                })
            })
            .collect();
        let (git_rev, git_dirty) = self
            .git
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or((None, None));
        Record {
            version: FORMAT_VERSION,
            time: self.time,
            command: command.to_string(),
            git_rev,
            git_dirty,
            strategy: self.strategy.clone(),
            tag: tag.to_string(),
            engine_id: self.engine_id.clone(),
            wall_seconds: wall,
            source: None,
            files,
            images,
        }
    }
}

/// What a build's Dockerfile makes it read (its COPY/ADD sources, bind mounts and base images of
/// the stages its target needs), and the Dockerfile's digest.
type Read = anyhow::Result<(inputs::Reads, String)>;

fn dockerfile_reads(root: &Path, b: &crate::plan::Build) -> Read {
    let path = root.join(b.dockerfile());
    let build_args: Vec<String> = (b.target.args.iter())
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let text =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let reads = inputs::reads(&text, &b.target.target, &build_args)
        .with_context(|| format!("{}", b.dockerfile().display()))?;
    Ok((reads, inputs::digest_bytes(text.as_bytes())))
}

/// One build's recorded inputs: what it reads (`files`: the context's digests), its arguments,
/// its base images' ids (`ids`, from the engine) and the digest of its options.
fn inputs_of(
    build: &crate::plan::Build,
    reads: inputs::Reads,
    dockerfile_digest: String,
    files: &BTreeMap<String, String>,
    ids: &BTreeMap<String, (String, u64)>,
) -> Inputs {
    Inputs {
        dockerfile: build.dockerfile().display().to_string(),
        dockerfile_digest,
        target: build.target.target.clone(),
        sources: (reads.sources.iter())
            .map(|s| inputs::source(s, files))
            .collect(),
        build_args: build.target.args.iter().cloned().collect(),
        base_images: (reads.base_images.iter())
            .map(|b| (b.clone(), ids.get(b).map(|(id, _)| id.clone())))
            .collect(),
        options_digest: inputs::options_digest(&build.argv()),
    }
}

/// Which engine a build ran on, without a process of its own (`docker info` costs a quarter
/// of a no-op run): where the client points (`DOCKER_HOST`, `DOCKER_CONTEXT`, else the default
/// socket) and the server's version. `None` when the server did not answer.
pub fn engine_identity(server_version: Option<&str>) -> Option<String> {
    let version = server_version?;
    let host = std::env::var("DOCKER_HOST")
        .or_else(|_| std::env::var("DOCKER_CONTEXT").map(|c| format!("context:{c}")))
        .unwrap_or_else(|_| "default".into());
    Some(format!("{host} {version}"))
}

/// One digest over the files under `dir`; `None` when it is missing, empty or unreadable.
fn dir_digest(dir: &Path) -> Option<String> {
    let files = inputs::hash_context(dir).ok().filter(|f| !f.is_empty())?;
    Some(inputs::source("", &files).digest)
}

/// `git rev-parse HEAD` and whether tracked files differ from it.
pub fn git_state(root: &Path) -> (Option<String>, Option<bool>) {
    let git = |args: &[&str]| {
        let mut git = crate::proc::Command::new("git");
        git.args(args)
            .current_dir(root)
            .stdin(crate::proc::Stdio::null())
            .stderr(crate::proc::Stdio::null());
        crate::proc::output(&mut git)
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let rev = git(&["rev-parse", "HEAD"]);
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty());
    (rev, dirty)
}

/// The median of `values` (`None` when empty).
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    Some(if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    })
}

/// The trend of a series: the median of its newer half over the median of its older half
/// (`None` with fewer than two values).
pub fn trend(values: &[f64]) -> Option<f64> {
    if values.len() < 2 {
        return None;
    }
    let half = values.len() / 2;
    let older = median(&values[..half])?;
    let newer = median(&values[values.len() - half..])?;
    (older > 0.0).then(|| newer / older)
}

/// Puts the images found up to date (not built) into the report, in the plan's order.
pub fn add_up_to_date(report: &mut Report, plan: &Plan, current: &[String], snapshot: &Snapshot) {
    let mut built = std::mem::take(&mut report.images).into_iter();
    for build in &plan.builds {
        if !current.contains(&build.image) {
            report.images.extend(built.next());
            continue;
        }
        let image_id = build.tag().and_then(|t| snapshot.image_ids.get(t));
        let last = snapshot.last.get(&build.image).map(|(r, _)| r);
        let size = last.and_then(|r| r.size_bytes);
        // an atomic publish found current: the tag already names the digest it moved it to
        let published = last
            .filter(|_| build.publish.is_some())
            .and_then(|r| r.published.clone());
        let digest = (published.as_deref())
            .and_then(|p| p.rsplit_once('@'))
            .map(|(_, d)| d.to_string());
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
            tag: build.tag().cloned(),
            image_id: image_id.cloned(),
            size_bytes: size,
            output_dir: build.output_dir().map(Path::to_path_buf),
            log: build.log.clone(),
            builder: None,
            retried_from: None,
            digest,
            published,
            why: None,
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
pub fn history_images(report: &Report) -> Vec<ImageRecord> {
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
            ImageRecord {
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
                product: None,
                published: i.published.clone(),
            }
        })
        .collect()
}

#[cfg(test)]
pub mod tests {
    pub use super::fixtures::{image, record};
    use super::*;

    #[test]
    fn corrupt_and_truncated_lines_are_skipped_with_their_line_number() {
        let good = serde_json::to_string(&record(1.0, vec![image("api", "succeeded", 2.0, "ran")]))
            .unwrap();
        let text = format!("{good}\nnot json\n{good}\n{}\n", &good[..good.len() / 2]);
        let (records, warnings) = parse(&text, "h.jsonl");
        assert_eq!(records.len(), 2);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].starts_with("h.jsonl:2: "), "{}", warnings[0]);
        assert!(warnings[1].starts_with("h.jsonl:4: "), "{}", warnings[1]);
    }

    #[test]
    fn append_writes_whole_lines_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x/history.jsonl");
        let r = record(1.0, vec![image("api", "succeeded", 2.0, "ran")]);
        append(&file, &r).unwrap();
        append(&file, &r).unwrap();
        let (records, warnings) = read_all(&file);
        assert_eq!((records.len(), warnings.len()), (2, 0));
        // past the limit, the file moves aside and a new one starts
        let big = fs::OpenOptions::new().append(true).open(&file).unwrap();
        big.set_len(ROTATE_BYTES).unwrap();
        append(&file, &r).unwrap();
        assert!(rotated_path(&file).is_file());
        let text = fs::read_to_string(&file).unwrap();
        assert_eq!(text.lines().count(), 1);
    }

    #[test]
    fn concurrent_appends_never_interleave() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("history.jsonl");
        let mut r = record(1.0, vec![]);
        // a long line: many images
        r.images = (0..200)
            .map(|i| image(&format!("img{i}"), "succeeded", 1.0, "cached"))
            .collect();
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..10 {
                        append(&file, &r).unwrap();
                    }
                });
            }
        });
        let (records, warnings) = read_all(&file);
        assert_eq!(warnings, Vec::<String>::new());
        assert_eq!(records.len(), 80);
    }

    #[test]
    fn unwritable_history_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        // the history's directory is a file: nothing can be created under it
        let blocker = dir.path().join("target");
        fs::write(&blocker, "").unwrap();
        let err = append(&blocker.join("history.jsonl"), &record(1.0, vec![])).unwrap_err();
        assert!(format!("{err:#}").contains("target"), "{err:#}");
    }

    #[test]
    fn last_successful_reads_from_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("history.jsonl");
        append(
            &file,
            &record(1.0, vec![image("api", "succeeded", 5.0, "ran")]),
        )
        .unwrap();
        append(
            &file,
            &record(2.0, vec![image("api", "succeeded", 1.0, "cached")]),
        )
        .unwrap();
        append(
            &file,
            &record(3.0, vec![image("api", "failed", 1.0, "ran")]),
        )
        .unwrap();
        let last = last_successful(&file, &["api", "sensor"]);
        assert_eq!(last.len(), 1);
        assert_eq!(last["api"].0.cargo_step, "cached");
        // a bench's build, newer, is no "last run" of this workspace's image
        let mut bench = record(4.0, vec![image("api", "succeeded", 9.0, "ran")]);
        bench.source = Some("bench".into());
        append(&file, &bench).unwrap();
        assert_eq!(
            last_successful(&file, &["api"])["api"].0.cargo_step,
            "cached"
        );
    }

    #[test]
    fn median_and_trend() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[1.0, 2.0, 3.0, 4.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(trend(&[1.0, 1.0, 2.0, 2.0]), Some(2.0));
        assert_eq!(trend(&[1.0]), None);
    }
}
