//! `bench --scenarios ephemeral`: CI runners that start empty. Before every build the engine's
//! BuildKit state is wiped (`docker builder prune -af`, the bench's images removed) and the tree
//! is a fresh `git clone`, so every file has a new mtime; the only thing that survives from one
//! run to the next is what the contender carries, as a CI cache action would:
//!
//! - `cache`: `docker-build --cache DIR` (the cache mounts' contents; this project's default);
//! - `cache-layers`: the same with `--cache-layers` (BuildKit's layer cache too);
//! - `cache-nofix`: `--cache DIR` with the Dockerfile's content-based freshness removed (the
//!   `touch` of unchanged sources), to show what the mtimes of a fresh clone cost;
//! - `cold`: `docker-build`, nothing carried;
//! - `chef`: the cargo-chef Dockerfile with its layer cache exported and imported
//!   (`--cache-to/--cache-from type=local,mode=max`, one directory per image);
//! - `native`: cargo on the host with its target directory and cargo home restored from a
//!   tarball (zstd) and saved to it, every file given its last commit's time (`git_times`);
//! - `native-nofix`: the same without the commit times;
//! - `sccache` (only in a generated workspace of `--scenarios scale`, whose `sccache` strategy it
//!   builds): sccache as `RUSTC_WRAPPER`, its store a cache mount carried by `--cache` (the
//!   target directory is not carried), its hit rate from `sccache --show-stats` in the log.
//!
//! A run is `seed` (the base tree, building the first entry), then per repetition `api` and
//! `common`: a commit changing a file of that crate on top of the previous ones, then every
//! contender in rotating order. Each run's compiled crates are counted from its logs, which is
//! what shows that the cargo step ran and what it had to redo.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::proc::{Command, Stdio};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::{
    cargo_log, git_times,
    history::median,
    sandbox::{nonce, Sandbox},
    session::human_size,
    util::UsageError,
    workspace::Declaration,
};

pub const SCENARIO: &str = "ephemeral";

/// The changes of each repetition: a file of the first image's crate, then of common.
pub const CHANGES: [&str; 2] = ["api", "common"];

/// The tag every ephemeral build gets (the images are removed before each run).
const TAG: &str = "bench-eph";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Contender {
    Cache,
    CacheLayers,
    CacheNofix,
    Cold,
    Chef,
    Native,
    NativeNofix,
    Sccache,
}

/// What `--scenarios scale` runs in its ephemeral part (default), and may run.
pub const SCALE: [Contender; 4] = [
    Contender::Cache,
    Contender::Cold,
    Contender::Native,
    Contender::Sccache,
];

pub const ALL: [Contender; 7] = [
    Contender::Cache,
    Contender::CacheLayers,
    Contender::CacheNofix,
    Contender::Cold,
    Contender::Chef,
    Contender::Native,
    Contender::NativeNofix,
];

impl Contender {
    pub fn key(self) -> &'static str {
        match self {
            Contender::Cache => "cache",
            Contender::CacheLayers => "cache-layers",
            Contender::CacheNofix => "cache-nofix",
            Contender::Cold => "cold",
            Contender::Chef => "chef",
            Contender::Native => "native",
            Contender::NativeNofix => "native-nofix",
            Contender::Sccache => "sccache",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Contender::Cache => "xtask --cache",
            Contender::CacheLayers => "xtask --cache --cache-layers",
            Contender::CacheNofix => "xtask --cache, mtimes of the clone",
            Contender::Cold => "xtask, nothing carried",
            Contender::Chef => "cargo-chef + layer cache",
            Contender::Native => "native cargo + restored target",
            Contender::NativeNofix => "native cargo + restored, clone mtimes",
            Contender::Sccache => "sccache (store carried)",
        }
    }

    fn carries(self) -> bool {
        self != Contender::Cold
    }

    fn is_native(self) -> bool {
        matches!(self, Contender::Native | Contender::NativeNofix)
    }
}

/// The contenders `--contenders` names (default: all).
pub fn select(keys: &[String]) -> anyhow::Result<Vec<Contender>> {
    select_from(keys, &ALL, "the ephemeral scenario")
}

/// The contenders of `among` that `keys` name (default: all of them).
pub fn select_from(
    keys: &[String],
    among: &[Contender],
    what: &str,
) -> anyhow::Result<Vec<Contender>> {
    if keys.is_empty() {
        return Ok(among.to_vec());
    }
    keys.iter()
        .map(|k| {
            among.iter().copied().find(|c| c.key() == k).ok_or_else(|| {
                UsageError(format!(
                    "unknown contender `{k}` for {what}; contenders: {}",
                    among.iter().map(|c| c.key()).collect::<Vec<_>>().join(", ")
                ))
                .into()
            })
        })
        .collect()
}

/// One timed run.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Sample {
    pub contender: String,
    pub key: String,
    /// `seed`, `api` or `common`.
    pub change: String,
    pub rep: usize,
    /// Restore + build + save.
    pub seconds: f64,
    pub restore_seconds: f64,
    pub save_seconds: f64,
    pub ok: bool,
    /// Crates cargo compiled: the workspace's own, and dependencies.
    pub compiled_own: usize,
    pub compiled_deps: usize,
    /// What the contender carries after this run (bytes on disk).
    pub carried_bytes: u64,
    /// Native only: its target directory and cargo home, unpacked.
    pub native_dirs_bytes: Option<u64>,
    /// sccache only: its hit rate in percent, from `sccache --show-stats` in the build's log.
    pub hit_rate: Option<f64>,
    pub log: PathBuf,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Row {
    pub change: String,
    pub contender: String,
    pub runs: usize,
    pub failed: usize,
    pub median: Option<f64>,
    pub restore: Option<f64>,
    pub build: Option<f64>,
    pub save: Option<f64>,
    pub compiled_own: usize,
    pub compiled_deps: usize,
    pub carried_bytes: u64,
    pub vs_cold: Option<f64>,
    pub vs_chef: Option<f64>,
    pub vs_native: Option<f64>,
    pub vs_sccache: Option<f64>,
    /// Native: its target directory and cargo home, unpacked (the last run's).
    pub native_dirs_bytes: Option<u64>,
    /// sccache: the median hit rate in percent.
    pub hit_rate: Option<f64>,
}

/// A goal of the issue, checked on the medians.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Goal {
    pub what: String,
    pub value: Option<f64>,
    pub limit: f64,
    pub met: Option<bool>,
}

impl Goal {
    /// `value <= limit`; unknown when the value is.
    pub fn new(what: String, value: Option<f64>, limit: f64) -> Goal {
        Goal {
            met: value.map(|v| v <= limit),
            what,
            value,
            limit,
        }
    }
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Report {
    pub samples: Vec<Sample>,
    pub rows: Vec<Row>,
    pub goals: Vec<Goal>,
    /// The `cache` contender's carried size after each run, in order.
    pub cache_sizes: Vec<u64>,
}

/// The commands, for `--dry-run`.
pub fn describe(
    contenders: &[Contender],
    images: &[String],
    reps: usize,
    changes: &[&str],
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "ephemeral: before every run `docker builder prune -af` and the {TAG} images removed; a \
         fresh `git clone` of a copy of the tree"
    );
    for c in contenders {
        let _ = writeln!(
            out,
            "{} ({}): {}",
            c.key(),
            c.name(),
            command_text(*c, images)
        );
    }
    let _ = writeln!(
        out,
        "runs: seed, then {reps} x ({}), contenders rotating",
        changes.join(", ")
    );
    out
}

fn command_text(c: Contender, images: &[String]) -> String {
    let images = images.join(" ");
    match c {
        Contender::Cache => format!("xtask docker-build --cache CARRY {images}"),
        Contender::CacheLayers => {
            format!("xtask docker-build --cache CARRY --cache-layers {images}")
        }
        Contender::CacheNofix => format!(
            "xtask docker-build --cache CARRY {images} (Dockerfile without the `touch` of unchanged sources)"
        ),
        Contender::Cold => format!("xtask docker-build {images}"),
        Contender::Chef => format!(
            "xtask docker-build --strategy chef --cache-from type=local,src=CARRY/layers/{{image}} \
             --cache-to type=local,dest=CARRY/layers.new/{{image}},mode=max {images}"
        ),
        Contender::Native => "tar -I zstd -xf CARRY/native.tar.zst; git_times; cargo build \
                              --release --workspace --exclude xtask --bins; tar -I 'zstd -3 -T0' -cf ..."
            .into(),
        Contender::NativeNofix => "tar -I zstd -xf CARRY/native.tar.zst; cargo build --release \
                                   --workspace --exclude xtask --bins; tar -I 'zstd -3 -T0' -cf ..."
            .into(),
        Contender::Sccache => format!("xtask docker-build --strategy sccache --cache CARRY {images}"),
    }
}

/// Where everything of one run of the bench lives.
struct Bench<'a> {
    decl: &'a Declaration,
    images: &'a [String],
    xtask: &'a Path,
    out_dir: &'a Path,
    /// The repository the clones come from, and the temporary directory holding everything.
    upstream: PathBuf,
    work: PathBuf,
    members: Vec<String>,
}

#[allow(clippy::too_many_arguments)]
pub fn run(
    root: &Path,
    decl: &Declaration,
    images: &[String],
    contenders: &[Contender],
    reps: usize,
    xtask: &Path,
    out_dir: &Path,
    changes: &[&str],
) -> anyhow::Result<Report> {
    eprintln!(
        "bench: ephemeral: every run starts with `docker builder prune -af` on this engine (its \
         whole build cache, not only this workspace's)"
    );
    // the tree as committed, minus target/ and .git/, in a fresh repository
    let upstream = Sandbox::create(root, "ephemeral", false)?;
    let work = upstream.root.join(".bench");
    let upstream_dir = upstream.root.join("upstream");
    fs::create_dir_all(&work)?;
    // the copy itself becomes the work area: the repository is a subdirectory
    move_tree_into(&upstream.root, &upstream_dir)?;
    git(&upstream_dir, &["init", "-q"])?;
    git(&upstream_dir, &["add", "-A"])?;
    git(&upstream_dir, &["commit", "-qm", "base"])?;
    let members = workspace_members(root)?;
    let bench = Bench {
        decl,
        images,
        xtask,
        out_dir,
        upstream: upstream_dir,
        work,
        members,
    };
    let mut samples = Vec::new();
    for c in contenders.iter().filter(|c| c.carries()) {
        samples.push(bench.run_one(*c, "seed", 0)?);
    }
    for rep in 0..reps {
        for (i, change) in changes.iter().copied().enumerate() {
            bench.commit_change(change)?;
            let mut order = contenders.to_vec();
            order.rotate_left((rep * changes.len() + i) % contenders.len().max(1));
            for c in order {
                samples.push(bench.run_one(c, change, rep + 1)?);
            }
        }
    }
    let rows = rows(&samples, contenders);
    let goals = goals(&rows, &samples);
    let cache_sizes = (samples.iter())
        .filter(|s| s.key == Contender::Cache.key() && s.ok)
        .map(|s| s.carried_bytes)
        .collect();
    drop(upstream);
    Ok(Report {
        samples,
        rows,
        goals,
        cache_sizes,
    })
}

impl Bench<'_> {
    /// A commit on top of the previous ones that changes one file of `change`'s crate.
    fn commit_change(&self, change: &str) -> anyhow::Result<()> {
        let dir = match change {
            "api" => {
                let first = self.decl.select(&self.images[..1])?;
                self.decl.crate_dir(first[0])?.to_path_buf()
            }
            _ => self.decl.common_crate()?.to_path_buf(),
        };
        let file = ["src/lib.rs", "src/main.rs"]
            .iter()
            .map(|f| dir.join(f))
            .find(|f| self.upstream.join(f).is_file())
            .with_context(|| format!("{} has neither src/lib.rs nor src/main.rs", dir.display()))?;
        let path = self.upstream.join(&file);
        let mut text = fs::read_to_string(&path)?;
        text.push_str(&format!("\n// bench ephemeral change: {}\n", nonce()));
        // a commit time after every earlier build's outputs
        std::thread::sleep(Duration::from_millis(1100));
        fs::write(&path, text)?;
        git(
            &self.upstream,
            &["commit", "-qam", &format!("change {change}")],
        )?;
        Ok(())
    }

    fn run_one(&self, c: Contender, change: &str, rep: usize) -> anyhow::Result<Sample> {
        let dir = self.work.join(c.key());
        let carry = dir.join("carry");
        let src = dir.join("src");
        fs::create_dir_all(&carry)?;
        wipe_engine(self.decl, self.images)?;
        let _ = fs::remove_dir_all(&src);
        git(
            &dir,
            &["clone", "-q", &self.upstream.display().to_string(), "src"],
        )?;
        if c == Contender::CacheNofix {
            without_content_freshness(&src, self.decl)?;
        }
        let log = self
            .out_dir
            .join(format!("ephemeral-{}-{change}-{rep}.log", c.key()));
        let file =
            fs::File::create(&log).with_context(|| format!("cannot write {}", log.display()))?;
        eprintln!("bench: ephemeral {change} (rep {rep}) {} ...", c.name());
        let clock = Instant::now();
        let (ok, restore_seconds, save_seconds) = if c.is_native() {
            self.native(c, &dir, &src, &carry, &file)?
        } else {
            self.ours(c, &carry, &src, &file, &log)?
        };
        let seconds = clock.elapsed().as_secs_f64();
        // what cargo compiled: the run's log and, for docker-build, every image's log
        let mut text = fs::read_to_string(&log).unwrap_or_default();
        if let Ok(entries) = fs::read_dir(src.join("bench-logs")) {
            for entry in entries.flatten() {
                text.push_str(&fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        let units = cargo_log::compiled(&text);
        let (compiled_own, compiled_deps) = cargo_log::split(&units, &self.members);
        let carried_bytes = if c.carries() {
            crate::session::dir_size(&carry)
        } else {
            0
        };
        let hit_rate = (c == Contender::Sccache)
            .then(|| sccache_hit_rate(&text))
            .flatten();
        let native_dirs_bytes = c.is_native().then(|| {
            crate::session::dir_size(&dir.join("target"))
                + crate::session::dir_size(&dir.join("cargo-home"))
        });
        eprintln!(
            "bench: ephemeral {change} (rep {rep}) {}: {seconds:.1}s (restore {restore_seconds:.1}s, save {save_seconds:.1}s; compiled {compiled_own} own + {compiled_deps} deps; carried {}){}",
            c.name(),
            human_size(carried_bytes),
            if ok { String::new() } else { format!(" FAILED; log {}", log.display()) }
        );
        // the work tree of the run is not needed any more; keep the logs
        let logs = self
            .out_dir
            .join(format!("ephemeral-{}-{change}-{rep}-logs", c.key()));
        let _ = fs::remove_dir_all(&logs);
        let _ = fs::rename(src.join("bench-logs"), &logs);
        Ok(Sample {
            contender: c.name().into(),
            key: c.key().into(),
            change: change.into(),
            rep,
            seconds,
            restore_seconds,
            save_seconds,
            ok,
            compiled_own,
            compiled_deps,
            carried_bytes,
            native_dirs_bytes,
            hit_rate,
            log,
        })
    }

    /// docker-build in the clone, as the contender `c` runs it (with `--cache` the carried
    /// directory, chef its layer cache); (ok, restore s, save s) from its log.
    fn ours(
        &self,
        c: Contender,
        carry: &Path,
        src: &Path,
        file: &fs::File,
        log: &Path,
    ) -> anyhow::Result<(bool, f64, f64)> {
        let mut argv: Vec<String> = vec![
            "docker-build".into(),
            "--tag".into(),
            TAG.into(),
            "--engine".into(),
            "external".into(),
            "--log-dir".into(),
            "bench-logs".into(),
        ];
        match c {
            Contender::Chef => {
                argv.extend(["--strategy".into(), "chef".into()]);
                if carry.join("layers").is_dir() {
                    argv.push(format!(
                        "--cache-from=type=local,src={}/{{image}}",
                        carry.join("layers").display()
                    ));
                }
                let _ = fs::remove_dir_all(carry.join("layers.new"));
                argv.push(format!(
                    "--cache-to=type=local,dest={}/{{image}},mode=max",
                    carry.join("layers.new").display()
                ));
            }
            Contender::Cold => {}
            Contender::Sccache => {
                argv.extend(["--strategy".into(), "sccache".into()]);
                argv.extend(["--cache".into(), carry.display().to_string()]);
            }
            _ => {
                argv.extend(["--cache".into(), carry.display().to_string()]);
                if c == Contender::CacheLayers {
                    argv.push("--cache-layers".into());
                }
            }
        }
        argv.extend(self.images.iter().cloned());
        let mut cmd = Command::new(self.xtask);
        cmd.args(&argv)
            .current_dir(src)
            .env_remove("CARGO_MANIFEST_DIR")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file.try_clone()?);
        let ok = crate::proc::status(&mut cmd)?.success();
        let mut save = 0.0;
        if c == Contender::Chef && ok {
            let t = Instant::now();
            let _ = fs::remove_dir_all(carry.join("layers"));
            fs::rename(carry.join("layers.new"), carry.join("layers"))?;
            save = t.elapsed().as_secs_f64();
        }
        let text = fs::read_to_string(log).unwrap_or_default();
        Ok((
            ok,
            restore_seconds(&text).unwrap_or(0.0),
            save + cache_line_seconds(&text, "cache: exported").unwrap_or(0.0),
        ))
    }

    /// Native cargo: restore the tarball, build, save it; (ok, restore s, save s).
    fn native(
        &self,
        c: Contender,
        dir: &Path,
        src: &Path,
        carry: &Path,
        log: &fs::File,
    ) -> anyhow::Result<(bool, f64, f64)> {
        let tarball = carry.join("native.tar.zst");
        for d in ["target", "cargo-home"] {
            let _ = fs::remove_dir_all(dir.join(d));
        }
        let t = Instant::now();
        if tarball.is_file() {
            run_logged(
                Command::new("tar")
                    .args(["-I", "zstd", "-xf"])
                    .arg(&tarball)
                    .arg("-C")
                    .arg(dir),
                log,
            )?;
        }
        let restore = t.elapsed().as_secs_f64();
        if c == Contender::Native {
            git_times::restore_commit_mtimes(src)?;
        }
        let argv = super::Contender::Native.argv(Path::new(""), &[], "");
        let ok = run_logged(
            Command::new(&argv[0])
                .args(&argv[1..])
                .current_dir(src)
                .env_remove("CARGO_MANIFEST_DIR")
                .env("CARGO_TARGET_DIR", dir.join("target"))
                .env("CARGO_HOME", dir.join("cargo-home")),
            log,
        )?;
        let t = Instant::now();
        if ok {
            let part = carry.join("native.tar.zst.part");
            let saved = run_logged(
                Command::new("tar")
                    .args(["-I", "zstd -3 -T0", "-cf"])
                    .arg(&part)
                    .arg("-C")
                    .arg(dir)
                    .args(["target", "cargo-home"]),
                log,
            )?;
            if !saved {
                bail!("cannot save the native cache (log above)");
            }
            fs::rename(&part, &tarball)?;
        }
        Ok((ok, restore, t.elapsed().as_secs_f64()))
    }
}

fn run_logged(cmd: &mut Command, log: &fs::File) -> anyhow::Result<bool> {
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log.try_clone()?);
    Ok(crate::proc::status(cmd)?.success())
}

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = crate::proc::output(
        Command::new("git")
            .args(["-c", "user.name=bench", "-c", "user.email=bench@localhost"])
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null()),
    )
    .with_context(|| format!("cannot run git {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "git {} failed in {}: {}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// An engine as a fresh CI runner finds it: no build cache, none of the bench's images (the base
/// images stay, as a runner's image or a pull would bring them).
fn wipe_engine(decl: &Declaration, images: &[String]) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(600);
    crate::proc::capture_with_timeout(
        Command::new("docker").args(["builder", "prune", "-af"]),
        timeout,
    )
    .context("cannot wipe the build cache (docker builder prune -af)")?;
    let tags: Vec<String> = (images.iter())
        .map(|i| format!("{}{i}:{TAG}", decl.image_prefix))
        .collect();
    // absent images are fine
    let _ = crate::proc::capture_with_timeout(
        Command::new("docker")
            .args(["image", "rm", "-f"])
            .args(&tags),
        timeout,
    );
    Ok(())
}

/// The clone's Dockerfiles without the content-based freshness: the `touch` that gives unchanged
/// sources an old mtime becomes a no-op.
fn without_content_freshness(src: &Path, decl: &Declaration) -> anyhow::Result<()> {
    let strategy = decl
        .strategies
        .get(&decl.default_strategy)
        .context("the default strategy is not declared")?;
    let file = strategy
        .dockerfile
        .as_ref()
        .context("the default strategy names no Dockerfile")?;
    let path = src.join(file);
    let text = fs::read_to_string(&path)?;
    const TOUCH: &str = "xargs -r -d '\\n' touch -d @1000000000";
    if !text.contains(TOUCH) {
        bail!(
            "{}: no `{TOUCH}` to remove (the content-based freshness changed; update the bench)",
            file.display()
        );
    }
    fs::write(&path, text.replace(TOUCH, "xargs -r -d '\\n' true"))?;
    Ok(())
}

/// sccache's hit rate in percent: the first `Cache hits rate ... NN.NN %` line of
/// `sccache --show-stats` in a build's log (BuildKit's `#12 3.4 ` prefix allowed).
pub fn sccache_hit_rate(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.contains("Cache hits rate"))?;
    let rest = &line[line.find("Cache hits rate")? + "Cache hits rate".len()..];
    let number: String = (rest.split_whitespace())
        .find(|w| w.parse::<f64>().is_ok())?
        .to_string();
    number.parse().ok()
}

/// The seconds of a `cache: imported ... in 12.3s` / `cache: exported ... in 20.1s (...)` line.
pub fn cache_line_seconds(text: &str, prefix: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with(prefix))?;
    line.match_indices(" in ").find_map(|(at, _)| {
        let rest = &line[at + 4..];
        let end = rest.find('s')?;
        rest[..end].parse::<f64>().ok()
    })
}

/// What an import cost before the builds could start: for an import beside the builds
/// (`... in 5.0s (the builds started after 2.1s; ...)`) the seconds until they started (the
/// rest is inside the build's time), else the whole import.
pub fn restore_seconds(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with("cache: imported"))?;
    const AFTER: &str = "the builds started after ";
    match line.find(AFTER) {
        Some(at) => {
            let rest = &line[at + AFTER.len()..];
            rest[..rest.find('s')?].parse::<f64>().ok()
        }
        None => cache_line_seconds(line, "cache: imported"),
    }
}

fn workspace_members(root: &Path) -> anyhow::Result<Vec<String>> {
    let meta = cargo_metadata::MetadataCommand::new()
        .manifest_path(root.join("Cargo.toml"))
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    Ok(meta
        .workspace_packages()
        .iter()
        .map(|p| p.name.to_string())
        .collect())
}

/// Moves every entry of `dir` (but `into` itself and `.bench`) into `into`.
fn move_tree_into(dir: &Path, into: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(into)?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if path == into || entry.file_name() == ".bench" {
            continue;
        }
        fs::rename(&path, into.join(entry.file_name()))
            .with_context(|| format!("cannot move {}", path.display()))?;
    }
    Ok(())
}

/// Medians per change and contender, with ratios to cold, chef and native; pure.
pub fn rows(samples: &[Sample], contenders: &[Contender]) -> Vec<Row> {
    let mut out = Vec::new();
    for change in ["seed", "api", "common"] {
        let of = |key: &str| -> Vec<&Sample> {
            (samples.iter())
                .filter(|s| s.change == change && s.key == key)
                .collect()
        };
        let med = |key: &str, f: fn(&Sample) -> f64| {
            median(
                &of(key)
                    .iter()
                    .filter(|s| s.ok)
                    .map(|s| f(s))
                    .collect::<Vec<f64>>(),
            )
        };
        let total = |s: &Sample| s.seconds;
        let base = |c: Contender| med(c.key(), total);
        let (cold, chef, native, sccache) = (
            base(Contender::Cold),
            base(Contender::Chef),
            base(Contender::Native),
            base(Contender::Sccache),
        );
        for c in contenders {
            let runs = of(c.key());
            if runs.is_empty() {
                continue;
            }
            let m = med(c.key(), total);
            let ratio = |b: Option<f64>| match (m, b) {
                (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                _ => None,
            };
            let last_ok = runs.iter().rev().find(|s| s.ok);
            out.push(Row {
                change: change.into(),
                contender: c.name().into(),
                runs: runs.len(),
                failed: runs.iter().filter(|s| !s.ok).count(),
                median: m,
                restore: med(c.key(), |s| s.restore_seconds),
                save: med(c.key(), |s| s.save_seconds),
                build: med(c.key(), |s| s.seconds - s.restore_seconds - s.save_seconds),
                compiled_own: runs.iter().map(|s| s.compiled_own).max().unwrap_or(0),
                compiled_deps: runs.iter().map(|s| s.compiled_deps).max().unwrap_or(0),
                carried_bytes: last_ok.map(|s| s.carried_bytes).unwrap_or(0),
                vs_cold: ratio(cold),
                vs_chef: ratio(chef),
                vs_native: ratio(native),
                vs_sccache: ratio(sccache),
                native_dirs_bytes: last_ok.and_then(|s| s.native_dirs_bytes),
                hit_rate: median(
                    &(runs.iter())
                        .filter(|s| s.ok)
                        .filter_map(|s| s.hit_rate)
                        .collect::<Vec<f64>>(),
                ),
            });
        }
    }
    out
}

/// The goals, from the rows and the sizes; pure.
pub fn goals(rows: &[Row], samples: &[Sample]) -> Vec<Goal> {
    let mut out = Vec::new();
    let goal = Goal::new;
    for change in ["api", "common"] {
        let Some(row) = rows
            .iter()
            .find(|r| r.change == change && r.contender == Contender::Cache.name())
        else {
            continue;
        };
        out.push(goal(format!("{change}: --cache / cold"), row.vs_cold, 0.40));
        out.push(goal(format!("{change}: --cache / chef"), row.vs_chef, 0.60));
        out.push(goal(
            format!("{change}: --cache / native"),
            row.vs_native,
            1.30,
        ));
    }
    let last = |key: &str| samples.iter().rev().find(|s| s.key == key && s.ok);
    if let (Some(ours), Some(native)) =
        (last(Contender::Cache.key()), last(Contender::Native.key()))
    {
        let dirs = native.native_dirs_bytes.unwrap_or(0);
        out.push(goal(
            "cache size / native target + cargo home".into(),
            (dirs > 0).then(|| ours.carried_bytes as f64 / dirs as f64),
            1.3,
        ));
    }
    let sizes: Vec<u64> = (samples.iter())
        .filter(|s| s.key == Contender::Cache.key() && s.ok && s.change != "seed")
        .map(|s| s.carried_bytes)
        .collect();
    if sizes.len() >= 2 {
        let first = sizes[0] as f64;
        let max = sizes.iter().copied().max().unwrap_or(0) as f64;
        out.push(goal(
            format!(
                "cache growth over {} changed builds (largest / first)",
                sizes.len()
            ),
            (first > 0.0).then(|| max / first),
            1.05,
        ));
    }
    out
}

fn fmt_s(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1}s")).unwrap_or_else(|| "-".into())
}

fn fmt_x(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.2}x")).unwrap_or_else(|| "-".into())
}

pub fn render_table(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{:<7} {:<38} {:>4} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>7} {:>7} {:>9}",
        "change",
        "contender",
        "runs",
        "median",
        "restore",
        "build",
        "save",
        "compiled",
        "carried",
        "vs cold",
        "vs chef",
        "vs native"
    );
    for r in &report.rows {
        let _ = writeln!(
            out,
            "{:<7} {:<38} {:>4} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>7} {:>7} {:>9}{}",
            r.change,
            r.contender,
            r.runs,
            fmt_s(r.median),
            fmt_s(r.restore),
            fmt_s(r.build),
            fmt_s(r.save),
            format!("{}+{}", r.compiled_own, r.compiled_deps),
            human_size(r.carried_bytes),
            fmt_x(r.vs_cold),
            fmt_x(r.vs_chef),
            fmt_x(r.vs_native),
            if r.failed > 0 {
                format!("  ({} FAILED)", r.failed)
            } else {
                String::new()
            }
        );
    }
    let _ = writeln!(
        out,
        "compiled = workspace crates + dependencies cargo compiled (max over the runs)"
    );
    for g in &report.goals {
        let _ = writeln!(
            out,
            "goal {:<58} {:>6} <= {:.2}  {}",
            g.what,
            g.value
                .map(|v| format!("{v:.2}"))
                .unwrap_or_else(|| "-".into()),
            g.limit,
            match g.met {
                Some(true) => "met",
                Some(false) => "NOT MET",
                None => "not measured",
            }
        );
    }
    if !report.cache_sizes.is_empty() {
        let _ = writeln!(
            out,
            "--cache carried after each run: {}",
            (report.cache_sizes.iter())
                .map(|b| human_size(*b))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    out
}

pub fn render_markdown(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| change | contender | runs | median | restore | build | save | compiled | carried | vs cold | vs chef | vs native |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &report.rows {
        let _ = writeln!(
            out,
            "| {} | {} | {}{} | {} | {} | {} | {} | {}+{} | {} | {} | {} | {} |",
            r.change,
            r.contender,
            r.runs,
            if r.failed > 0 {
                format!(" ({} failed)", r.failed)
            } else {
                String::new()
            },
            fmt_s(r.median),
            fmt_s(r.restore),
            fmt_s(r.build),
            fmt_s(r.save),
            r.compiled_own,
            r.compiled_deps,
            human_size(r.carried_bytes),
            fmt_x(r.vs_cold),
            fmt_x(r.vs_chef),
            fmt_x(r.vs_native),
        );
    }
    let _ = writeln!(out);
    for g in &report.goals {
        let _ = writeln!(
            out,
            "- {}: {} (goal ≤ {:.2}) — {}",
            g.what,
            g.value
                .map(|v| format!("{v:.2}"))
                .unwrap_or_else(|| "-".into()),
            g.limit,
            match g.met {
                Some(true) => "met",
                Some(false) => "not met",
                None => "not measured",
            }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(c: Contender, change: &str, seconds: f64, carried: u64) -> Sample {
        Sample {
            contender: c.name().into(),
            key: c.key().into(),
            change: change.into(),
            rep: 1,
            seconds,
            restore_seconds: 1.0,
            save_seconds: 2.0,
            ok: true,
            compiled_own: 1,
            compiled_deps: 0,
            carried_bytes: carried,
            native_dirs_bytes: c.is_native().then_some(1000),
            hit_rate: None,
            log: PathBuf::new(),
        }
    }

    #[test]
    fn ratios_goals_and_growth() {
        let samples = vec![
            sample(Contender::Cache, "seed", 100.0, 500),
            sample(Contender::Cache, "api", 30.0, 600),
            sample(Contender::Cold, "api", 100.0, 0),
            sample(Contender::Chef, "api", 60.0, 5000),
            sample(Contender::Native, "api", 20.0, 400),
            sample(Contender::Cache, "api", 32.0, 700),
        ];
        let contenders = [
            Contender::Cache,
            Contender::Cold,
            Contender::Chef,
            Contender::Native,
        ];
        let rows = rows(&samples, &contenders);
        let cache_api = rows
            .iter()
            .find(|r| r.change == "api" && r.contender == Contender::Cache.name())
            .unwrap();
        assert_eq!(cache_api.median, Some(31.0));
        assert_eq!(cache_api.build, Some(28.0));
        assert_eq!(cache_api.vs_cold, Some(0.31));
        assert_eq!(cache_api.vs_native, Some(31.0 / 20.0));
        assert_eq!(cache_api.carried_bytes, 700);
        let goals = goals(&rows, &samples);
        let find = |w: &str| goals.iter().find(|g| g.what.contains(w)).unwrap().clone();
        assert_eq!(find("api: --cache / cold").met, Some(true));
        assert_eq!(find("api: --cache / native").met, Some(false));
        assert_eq!(find("size").value, Some(0.7));
        // 600 then 700: the cache grew
        assert_eq!(find("growth").met, Some(false));
        assert!(render_table(&Report {
            samples,
            rows,
            goals,
            cache_sizes: vec![500, 600, 700],
        })
        .contains("NOT MET"));
    }

    #[test]
    fn seconds_of_the_cache_lines() {
        let log = "cache: imported abc from /c: mounts cargo-home 1 MB in 12.5s\n\
                   cache: exported abc to /c (replacing the entry): x; 5 MB in 20.25s (helper build 3.0s, zstd 1.0s)\n";
        assert_eq!(cache_line_seconds(log, "cache: imported"), Some(12.5));
        assert_eq!(cache_line_seconds(log, "cache: exported"), Some(20.25));
        assert_eq!(cache_line_seconds("", "cache: exported"), None);
        assert_eq!(restore_seconds(log), Some(12.5));
        let beside = "cache: imported abc from /c: t 1 MB in 5.0s (the builds started after 2.25s; their cargo steps waited for the rest)\n";
        assert_eq!(restore_seconds(beside), Some(2.25));
        assert_eq!(cache_line_seconds(beside, "cache: imported"), Some(5.0));
    }

    #[test]
    fn the_hit_rate_of_sccache_stats() {
        let log = "#14 80.1 Compile requests                    512\n\
                   #14 80.1 Cache hits                          400\n\
                   #14 80.1 Cache hits rate                  78.13 %\n\
                   #14 80.1 Cache hits rate (Rust)           78.13 %\n";
        assert_eq!(sccache_hit_rate(log), Some(78.13));
        assert_eq!(sccache_hit_rate("Cache hits rate               - %"), None);
        assert_eq!(sccache_hit_rate(""), None);
    }

    #[test]
    fn contenders_by_key() {
        assert!(
            select(&["sccache".into()]).is_err(),
            "sccache needs a generated workspace"
        );
        assert_eq!(
            select_from(&["sccache".into()], &SCALE, "scale").unwrap(),
            [Contender::Sccache]
        );
        assert_eq!(
            select(&["cache".into(), "native".into()]).unwrap(),
            [Contender::Cache, Contender::Native]
        );
        assert!(select(&["bake".into()])
            .unwrap_err()
            .to_string()
            .contains("cache, cache-layers"));
        assert_eq!(select(&[]).unwrap().len(), ALL.len());
    }
}
