//! The helper builds that carry cache mounts' contents in and out of BuildKit, as data. Pure.
//!
//! BuildKit exports layers (`--cache-to`) but never the contents of cache mounts. An export helper
//! is a generated Dockerfile whose RUN mounts the same caches (same id and sharing as the
//! strategy's Dockerfiles, each at a path of its own) and writes a tar of each into /out, copied
//! to the host with `--output type=local`; an import helper ADDs the compressed tars from its
//! build context (BuildKit unpacks them) and its RUN copies them into the mounts. The RUNs use a
//! nonce build argument, so they are never layer-cached.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use crate::{
    dockerfile::{lexer::shell_words, model::Dockerfile},
    target::{Output, Target},
};

/// The build argument that keeps a helper's RUN from being layer-cached.
pub const NONCE_ARG: &str = "ATTUNE_CACHE_NONCE";
/// The automatic platform argument the target caches' ids carry (`id=...-${TARGETPLATFORM}`).
pub const TARGETPLATFORM: &str = "TARGETPLATFORM";
/// The import helper's stages that hold the unpacked archives, `-<n>` each (bind-mounted by its
/// RUN).
pub const ARCHIVES_CONTEXT: &str = "attune-cache-archives";
/// What of a cargo home is worth carrying (the Cargo book's advice): `registry/src` is
/// re-extracted from `registry/cache` when missing, and the lock files are per process.
pub const CARGO_HOME_PATHS: [&str; 3] = ["registry/index", "registry/cache", "git/db"];

/// A cache mount of the strategy's Dockerfiles.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CacheMount {
    pub id: String,
    pub target: String,
    pub sharing: String,
    /// The RUN sets `CARGO_HOME` to this mount: only [`CARGO_HOME_PATHS`] travel.
    pub cargo_home: bool,
}

impl CacheMount {
    /// What travels, relative to the mount's target.
    pub fn paths(&self) -> Vec<String> {
        if self.cargo_home {
            CARGO_HOME_PATHS.iter().map(|p| p.to_string()).collect()
        } else {
            vec![".".into()]
        }
    }

    /// The tar's file name, inside the helper and in the entry (`<id>.tar`, a `/` of the id's
    /// platform as `_`: `target-workspace-linux_amd64.tar`).
    pub fn tar_name(&self) -> String {
        format!("{}.tar", self.id.replace('/', "_"))
    }

    /// The compressed tar's file name, in the entry (`mounts/`) and the import helper's context.
    pub fn archive_name(&self) -> String {
        format!("{}.zst", self.tar_name())
    }

    /// The id as a file name (a `/` of the id's platform as `_`).
    pub fn unpacked_dir(&self) -> String {
        self.id.replace('/', "_")
    }

    /// The file name of part `k` of the mount's archive: part 0 is [`Self::archive_name`],
    /// part 1 `<id>.1.tar.zst`.
    pub fn part_archive_name(&self, k: usize) -> String {
        if k == 0 {
            self.archive_name()
        } else {
            format!("{}.{k}.tar.zst", self.unpacked_dir())
        }
    }

    /// Where the import helper binds the unpacked part `k` (`/attune-cache-in/<this>`).
    pub fn part_dir(&self, k: usize) -> String {
        if k == 0 {
            self.unpacked_dir()
        } else {
            format!("{}.{k}", self.unpacked_dir())
        }
    }

    /// Where the helper builds mount the cache: a path of its own per id
    /// (`/attune-mnt/<id>`), since the strategy's Dockerfiles may mount several caches at one
    /// target (the per-service strategy: a target cache per service, each at /build/target).
    pub fn at(&self) -> String {
        format!("/attune-mnt/{}", self.unpacked_dir())
    }
}

/// What the builds of one Dockerfile target use: the builder's base image and its cache mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uses {
    pub base_image: Option<String>,
    pub mounts: Vec<CacheMount>,
    /// Every RUN that mounts a cache holds the [`LOCK_FILE`] of one of its target caches
    /// (`exec 9>target/attune.lock && flock 9`), and every cache mount is `sharing=shared`: a
    /// helper that holds those locks keeps the builds' RUNs out of the caches until it is done.
    pub locked: bool,
}

/// The file at the root of a target cache that the strategy's cargo RUNs hold a `flock` on
/// while they use the caches. The helpers hold it too, and never carry it: unpacking it would
/// replace the file the builds lock with another.
pub const LOCK_FILE: &str = "attune.lock";
/// The most target caches a helper locks (file descriptors 9 down to 3).
const MAX_LOCKS: usize = 7;
/// What the import helper prints, then `-` and its nonce, once it holds every target cache's
/// lock: from then on the builds may start, their cargo RUNs wait for the import.
pub const LOCKED_MARKER: &str = "attune-cache-import: target caches locked for import";

/// The cache mounts the build of `target` (with `build_args`, `KEY=VALUE`) uses: every RUN of the
/// stages it depends on (its ancestry and the stages it copies or mounts from), ids and targets
/// with `${ARG}`s expanded. `file` names the Dockerfile in errors.
///
/// The automatic platform arguments are not build arguments the builds pass: a caller that
/// knows the platform gives it as [`TARGETPLATFORM`]`=<os>/<arch>` (what BuildKit expands
/// `${TARGETPLATFORM}` to), so that `id=target-workspace-${TARGETPLATFORM}` becomes the id the
/// builds mount, `target-workspace-linux/amd64`.
pub fn uses(
    df: &Dockerfile,
    file: &str,
    target: &str,
    build_args: &[String],
) -> Result<Uses, String> {
    let given: BTreeMap<String, String> = build_args
        .iter()
        .filter_map(|a| a.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let args = global_args(df, &given);
    let Some(start) = df.stage(target) else {
        return Err(format!("{file}: no stage `{target}`"));
    };
    let needed = needed_stages(df, start.index);

    let mut out = Uses {
        base_image: None,
        mounts: Vec::new(),
        locked: true,
    };
    for &index in &needed {
        let stage = &df.stages[index];
        let mut scope = args.clone();
        for ins in df.stage_instructions(stage) {
            if ins.keyword == "ARG" {
                for (key, default) in arg_defaults(&ins.args) {
                    if let Some(value) = given.get(&key).cloned().or(default) {
                        scope.insert(key, value);
                    }
                }
            }
            if ins.keyword != "RUN" {
                continue;
            }
            let words = shell_words(&ins.args);
            // this RUN's cache mounts: (target, is the cargo home)
            let mut this_run: Vec<(String, bool)> = Vec::new();
            for mount in ins.mounts.iter().filter(|m| m.is_cache()) {
                let at = format!("{file} line {}", mount.line);
                let target = mount
                    .target()
                    .ok_or_else(|| format!("{at}: a cache mount without target"))?;
                let target = expand(target, &scope)
                    .map_err(|v| format!("{at}: target `{target}` needs the build argument {v}"))?;
                let id = mount.id().unwrap_or(&target).to_string();
                let id = expand(&id, &scope)
                    .map_err(|v| format!("{at}: id `{id}` needs the build argument {v}"))?;
                if !safe(&id) || !safe(&target) {
                    return Err(format!(
                        "{at}: cache mount id `{id}` or target `{target}` has characters the helper builds do not quote"
                    ));
                }
                let cargo_home = words
                    .iter()
                    .any(|w| w.strip_prefix("CARGO_HOME=") == Some(target.as_str()));
                let sharing = mount.get("sharing").unwrap_or("shared").to_string();
                this_run.push((target.clone(), cargo_home));
                // the import's two stages mount a cache at once: only a shared one is the
                // same directory for both
                out.locked &= sharing == "shared";
                let cache = CacheMount {
                    id,
                    target,
                    sharing,
                    cargo_home,
                };
                if let Some(other) = out.mounts.iter().find(|m| m.id == cache.id) {
                    if other.target != cache.target || other.cargo_home != cache.cargo_home {
                        return Err(format!(
                            "{at}: cache id `{}` is mounted at {} here and at {} elsewhere",
                            cache.id, cache.target, other.target
                        ));
                    }
                    continue;
                }
                if out.base_image.is_none() {
                    let root = df.ancestry(stage).last().copied().unwrap_or(stage);
                    out.base_image = Some(expand(&root.base, &scope).map_err(|v| {
                        format!(
                            "{file} line {}: base image needs the build argument {v}",
                            root.line
                        )
                    })?);
                }
                out.mounts.push(cache);
            }
            if !this_run.is_empty() {
                out.locked &= runs_locked(&ins.args, &this_run);
            }
        }
    }
    Ok(out)
}

/// The global ARGs in order, a build argument (`given`) overriding the default, and then every
/// build argument.
fn global_args(df: &Dockerfile, given: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut args: BTreeMap<String, String> = BTreeMap::new();
    for ins in df.global.iter().map(|&i| &df.instructions[i]) {
        if ins.keyword != "ARG" {
            continue;
        }
        for (key, default) in arg_defaults(&ins.args) {
            let value = match (given.get(&key), default) {
                (Some(v), _) => v.clone(),
                (None, Some(d)) => expand(&d, &args).unwrap_or(d),
                (None, None) => continue,
            };
            args.insert(key, value);
        }
    }
    args.extend(given.clone());
    args
}

/// The stages the stage `start` needs (its bases, `COPY --from` and `--mount from=` sources,
/// and theirs), by index, in file order.
fn needed_stages(df: &Dockerfile, start: usize) -> Vec<usize> {
    let mut needed = vec![start];
    let mut i = 0;
    while i < needed.len() {
        let stage = &df.stages[needed[i]];
        let mut refs: Vec<String> = vec![stage.base.clone()];
        for ins in df.stage_instructions(stage) {
            refs.extend(ins.flag("from").and_then(|f| f.value.clone()));
            refs.extend((ins.mounts.iter()).filter_map(|m| m.get("from").map(String::from)));
        }
        for r in refs {
            if let Some(dep) = df.stage(&r).filter(|d| d.index < stage.index) {
                if !needed.contains(&dep.index) {
                    needed.push(dep.index);
                }
            }
        }
        i += 1;
    }
    needed.sort_unstable();
    needed
}

/// Whether a RUN (its text, and its cache mounts as (target, is the cargo home)) holds the
/// [`LOCK_FILE`] of one of its target caches: it runs `flock` and names
/// `<last part of the target>/attune.lock` (`target/attune.lock` for `/build/target`). A reading
/// of the text, not of the shell: the convention of the project's Dockerfiles, whose cargo RUNs
/// start with `exec 9>target/attune.lock && flock 9`.
fn runs_locked(text: &str, mounts: &[(String, bool)]) -> bool {
    text.contains("flock")
        && mounts.iter().any(|(target, cargo_home)| {
            let last = target
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or("");
            !cargo_home && !last.is_empty() && text.contains(&format!("{last}/{LOCK_FILE}"))
        })
}

/// The shell that opens and locks the [`LOCK_FILE`] of each target cache of `mounts`, where
/// the helpers mount it (`exec 9>/attune-mnt/<id>/attune.lock && flock 9`); None without a
/// target cache or with more than [`MAX_LOCKS`].
pub fn lock_script(mounts: &[CacheMount]) -> Option<String> {
    let targets: Vec<&CacheMount> = mounts.iter().filter(|m| !m.cargo_home).collect();
    if targets.is_empty() || targets.len() > MAX_LOCKS {
        return None;
    }
    let opens: Vec<String> = (targets.iter().enumerate())
        .map(|(i, m)| format!("{}>{}/{LOCK_FILE}", 9 - i, m.at()))
        .collect();
    let locks: Vec<String> = (0..targets.len())
        .map(|i| format!("flock {}", 9 - i))
        .collect();
    Some(format!(
        "exec {} && {}",
        opens.join(" "),
        locks.join(" && ")
    ))
}

/// The automatic platform arguments BuildKit gives a build for `platform` (`os/arch[/variant]`),
/// as `KEY=VALUE` build arguments for [`uses`]: `TARGETPLATFORM`, `TARGETOS`, `TARGETARCH` and
/// `TARGETVARIANT` (empty without a variant).
pub fn platform_args(platform: &str) -> Vec<String> {
    let mut parts = platform.splitn(3, '/');
    let os = parts.next().unwrap_or("");
    let arch = parts.next().unwrap_or("");
    let variant = parts.next().unwrap_or("");
    vec![
        format!("{TARGETPLATFORM}={platform}"),
        format!("TARGETOS={os}"),
        format!("TARGETARCH={arch}"),
        format!("TARGETVARIANT={variant}"),
    ]
}

/// A helper build: a typed [`Target`] as the images' builds have (its argv rendered from it
/// where the process starts), the Dockerfile text written to the target's file before it runs,
/// and where its files land. Paths relative to the workspace root.
#[derive(Debug, Clone)]
pub struct HelperBuild {
    /// `cache-export` or `cache-import`.
    pub name: String,
    pub target: Target,
    pub dockerfile_text: String,
    /// `--output type=local,dest=` of the build.
    pub output: PathBuf,
}

impl HelperBuild {
    /// The `docker buildx build` command line, from the target.
    pub fn argv(&self) -> Vec<String> {
        self.target.build_argv("rawjson")
    }

    pub fn dockerfile(&self) -> &Path {
        &self.target.dockerfile
    }
}

/// The common options of a helper build.
#[derive(Debug, Clone)]
pub struct HelperOptions {
    /// Where the helper's Dockerfile, context and output live (relative to the workspace root).
    pub work_dir: PathBuf,
    pub base_image: String,
    pub builder: Option<String>,
    /// A docker context to run on (`docker --context NAME buildx build`), instead of a builder.
    pub context: Option<String>,
    pub platform: Option<String>,
    pub nonce: String,
}

impl HelperOptions {
    /// A helper's target of `kind`: its Dockerfile in the work directory, run where the builds
    /// run (builder or docker context), for the platform, with the nonce that keeps its RUN out
    /// of the layer cache.
    pub fn target(&self, kind: &str, context: &Path, output: Output) -> Target {
        Target {
            name: format!("cache-{kind}"),
            context: context.to_path_buf(),
            dockerfile: self.work_dir.join(format!("{kind}.Dockerfile")),
            args: vec![(NONCE_ARG.to_string(), self.nonce.clone())],
            platforms: self.platform.iter().cloned().collect(),
            output,
            builder: self.builder.clone(),
            docker_context: self.context.clone(),
            ..Target::default()
        }
    }
}

/// The build argument of an export helper started while the builds run ([`export_build`]).
pub const BUILDS_STARTED_ARG: &str = "ATTUNE_BUILDS_STARTED";
/// The exit status of an export helper that found a target cache older than the builds.
pub const NOT_YET_EXIT: i32 = 3;

/// What the export may leave out: the workspace's own crates (what is not theirs in a target
/// cache is the dependencies' artifacts, which change only with Cargo.lock or the toolchain),
/// and, per cache id, the stable id ([`crate::cache::manifest::MountArchive::stable_id`]) of
/// the entry at the location whose stable parts the new entry may reuse.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stable {
    /// Crate and target names of the workspace, `-` as `_`.
    pub locals: Vec<String>,
    pub offers: BTreeMap<String, String>,
}

/// The file at the root of a cache where the import leaves `<stable id> <stable list>` of the
/// entry it copied in (the list: the digest of the stable part's sorted paths), once the copy
/// has ended: the stable files, when they are that list and none is newer, are the entry's.
pub const STABLE_STAMP: &str = ".attune-stable";

/// The export helper: tars of `mounts` land in `<work>/export-out/`, each cache's in two: its
/// stable part (`<id>.stable.tar`: the cargo home, and a target cache's dependency artifacts)
/// and the rest (`<id>.tar`: the workspace's own crates, every directory, everything outside
/// `<profile>/{deps,build,.fingerprint}`); a part with no file has no tar.
/// `<id>.stable-files` counts the stable part's files, `<id>.stable-list` is the digest of
/// their sorted paths. When `stable` offers the cache's stable id, and the cache still holds
/// what the import of that entry left (the [`STABLE_STAMP`] names that id and this list, and
/// no stable file is newer than it), the stable tar is left out and `<id>.reused` holds the
/// id: the new entry links the stable parts of the old one.
///
/// `builds_started` (seconds since the epoch): the helper was started while the builds run; once
/// it holds the locks it checks that every target cache's [`UNITS_FILE`] was written since,
/// and otherwise exits [`NOT_YET_EXIT`] (it got a lock before the build's cargo RUN).
pub fn export_build(
    options: &HelperOptions,
    mounts: &[CacheMount],
    builds_started: Option<u64>,
    stable: &Stable,
) -> HelperBuild {
    let mut script = vec![
        format!("echo \"cache export ${NONCE_ARG}\""),
        "mkdir -p /out".to_string(),
    ];
    // no build writes the caches while they are swept and copied
    script.extend(lock_script(mounts));
    let units: Vec<String> = (mounts.iter())
        .filter(|m| !m.cargo_home)
        .map(|m| format!("{}/{UNITS_FILE}", m.at()))
        .collect();
    if builds_started.is_some() && !units.is_empty() {
        script.push(format!(
            "for f in {}; do if ! [ -f \"$f\" ] || [ \"$(stat -c %Y \"$f\")\" -lt \"${BUILDS_STARTED_ARG}\" ]; then \
             echo \"attune-cache-export: $f is older than the builds\" >&2; exit {NOT_YET_EXIT}; fi; done",
            units.join(" ")
        ));
    }
    for m in mounts {
        if !m.cargo_home {
            script.push(sweep_script(&m.at(), &m.target));
        }
        let offer = (stable.offers.get(&m.id)).map(String::as_str);
        script.push(tar_script(m, &m.at(), "/out", &stable.locals, offer));
    }
    let text = dockerfile(
        "export",
        "copies the contents of the strategy's cache mounts out, a stable tar and a tar of the rest per mount",
        &options.base_image,
        &mount_flags(mounts),
        &script,
        "/out/",
    );
    let mut build = helper(options, "export", text, None);
    if let Some(started) = builds_started {
        let text = build.dockerfile_text.replacen(
            &format!("ARG {NONCE_ARG}\n"),
            &format!("ARG {NONCE_ARG}\nARG {BUILDS_STARTED_ARG}\n"),
            1,
        );
        build.dockerfile_text = text;
        (build.target.args).push((BUILDS_STARTED_ARG.to_string(), started.to_string()));
    }
    build
}

/// The awk program that splits `find -printf '%y %p\n'` of a target cache: a file under
/// `<profile>/{deps,build,.fingerprint}/<name>-<16 hex>` whose name (without `lib`) is no crate
/// of the workspace (`W`, names between spaces) is stable (to file `S`); directories and
/// everything else to `L`. mawk has no `{16}`: the hash is spelled out.
const CLASSIFY: &str = "{ t = substr($0, 1, 1); p = substr($0, 3); if (t == \"d\") { print p > L; next } s = 0; \
if (match(p, /^\\.\\/[^\\/]+\\/(deps|build|\\.fingerprint)\\/[^\\/]+/)) { e = substr(p, 1, RLENGTH); sub(/^.*\\//, \"\", e); b = e; \
sub(/-[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f](\\..*)?$/, \"\", b); \
if (b != e) { gsub(/-/, \"_\", b); s = 1; if (index(W, \" \" b \" \") || (substr(b, 1, 3) == \"lib\" && index(W, \" \" substr(b, 4) \" \"))) s = 0 } } \
if (s) print p > S; else print p > L }";

/// The export of one cache mounted at `at` into `out` (see [`export_build`]): the stable part
/// and the rest, each a tar when it has a file, the stable part's file count and list digest,
/// and, when `offer` (a stable id) and that list are what the cache's [`STABLE_STAMP`] says and
/// no stable file is newer than it, `<id>.reused` instead of the stable tar. `locals`: the
/// workspace's crate names ([`Stable::locals`]).
fn tar_script(
    m: &CacheMount,
    at: &str,
    out: &str,
    locals: &[String],
    offer: Option<&str>,
) -> String {
    let base = m.unpacked_dir();
    let offer = offer.filter(|o| !o.is_empty() && o.chars().all(|c| c.is_ascii_hexdigit()));
    let tmp = format!("\"${{TMPDIR:-/tmp}}/attune-{base}");
    let file = |ext: &str| format!("{tmp}.{ext}\"");
    // the stable files, counted and listed (a digest of their sorted paths: the paths carry
    // cargo's hashes, so the list names exactly which artifacts the part holds)
    let counted = format!(
        "count=$(wc -l < {stable}) && list=$(LC_ALL=C sort {stable} | sha256sum | cut -c1-64) && \
         echo $count > {out}/{base}.stable-files && echo $list > {out}/{base}.stable-list",
        stable = file("stable")
    );
    // reused: the stamp names the offered entry and this list, and no stable file is newer (a
    // `find` that fails reuses nothing)
    let keep = |newer_stable: &str, tar: &str| {
        match offer {
        Some(offer) => format!(
            "if [ -f {STABLE_STAMP} ] && [ \"$(cat {STABLE_STAMP})\" = \"{offer} $list\" ] && {newer_stable}; \
             then echo {offer} > {out}/{base}.reused; elif [ $count -gt 0 ]; then {tar}; fi"
        ),
        None => format!("if [ $count -gt 0 ]; then {tar}; fi"),
    }
    };
    if m.cargo_home {
        // all of it is stable
        return format!(
            "cd {at} && set -- && for p in {paths}; do if [ -e \"$p\" ]; then set -- \"$@\" \"$p\"; fi; done && \
             : > {stable} && if [ $# -gt 0 ]; then find \"$@\" ! -type d > {stable}; fi && {counted} && \
             {}",
            keep(
                &format!(
                    "[ $# -gt 0 ] && find \"$@\" -newer {STABLE_STAMP} ! -type d > {newer} && ! [ -s {newer} ]",
                    newer = file("newer")
                ),
                &format!("tar -cf {out}/{base}.stable.tar -T /dev/null \"$@\"")
            ),
            paths = m.paths().join(" "),
            stable = file("stable"),
        );
    }
    let locals: Vec<&str> = (locals.iter())
        .map(String::as_str)
        .filter(|n| n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .collect();
    let find = |newer: &str, into: &str| {
        format!(
            "find . -mindepth 1 \\( -path ./{LOCK_FILE} -o -path './.attune-*' \\) -prune -o {newer}-printf '%y %p\\n' > {into}"
        )
    };
    let classify = |input: &str, stable: &str, rest: &str| {
        format!(
            "awk -v W=' {} ' -v S={stable} -v L={rest} '{CLASSIFY}' {input}",
            locals.join(" ")
        )
    };
    format!(
        "cd {at} && {} && : > {stable} && : > {local} && {} && {counted} && \
         {} && \
         if [ -s {local} ]; then tar -cf {out}/{tar} --no-recursion -T {local}; fi",
        find("", &file("all")),
        classify(&file("all"), &file("stable"), &file("local")),
        keep(
            &format!(
                "{} && [ -z \"$({} | head -c1)\" ]",
                find(&format!("-newer {STABLE_STAMP} "), &file("newer")),
                classify(&file("newer"), "/dev/stdout", "/dev/null"),
            ),
            &format!(
                "tar -cf {out}/{base}.stable.tar --no-recursion -T {}",
                file("stable")
            )
        ),
        stable = file("stable"),
        local = file("local"),
        tar = m.tar_name(),
    )
}

/// The file in a target cache where the strategy's cargo RUN leaves cargo's JSON messages
/// (`--message-format=json-render-diagnostics`) of its last successful build.
pub const UNITS_FILE: &str = "attune-units.json";

/// cargo-sweep style, before a target cache is exported: deletes every entry of
/// `<profile>/{deps,build,.fingerprint}` whose hash suffix (`name-<16 hex>[.ext]`) no unit of
/// the last build used. The used hashes are those in the paths of the `compiler-artifact`
/// (every unit, fresh ones included) and `build-script-executed` (`out_dir`) messages, plus the
/// deps/ file a root binary's uplifted `executable` is a hard link of (its hash is not in the
/// JSON). Without [`UNITS_FILE`] nothing is deleted. Deleting can only make cargo rebuild, never
/// keep a stale artifact: a unit is its files in all three directories, under one hash.
///
/// `dir` is where the helper mounts the cache, `built` where the builds mounted it (the paths in
/// the JSON start there).
pub fn sweep_script(dir: &str, built: &str) -> String {
    let target = built;
    format!(
        "cd {dir} && if [ -s {UNITS_FILE} ]; then \
        {{ grep -E '\"reason\":\"(compiler-artifact|build-script-executed)\"' {UNITS_FILE}; \
        grep -oE '\"executable\":\"[^\"]+\"' {UNITS_FILE} | cut -d'\"' -f4 | \
        while read -r exe; do exe=\"./${{exe#{built}/}}\"; if [ -e \"$exe\" ]; then find \"${{exe%/*}}/deps\" -maxdepth 1 -samefile \"$exe\"; fi; done; }} | \
        grep -oE -- '-[0-9a-f]{{16}}' | cut -c2- | LC_ALL=C sort -u > \"${{TMPDIR:-/tmp}}/attune-used\" && \
        find . -mindepth 3 -maxdepth 3 \\( -path './*/deps/*' -o -path './*/build/*' -o -path './*/.fingerprint/*' \\) | \
        sed -nE 's/^(.*-([0-9a-f]{{16}})(\\.[^/]*)?)$/\\2 \\1/p' | LC_ALL=C sort | \
        LC_ALL=C join -v1 - \"${{TMPDIR:-/tmp}}/attune-used\" | cut -d' ' -f2- > \"${{TMPDIR:-/tmp}}/attune-unused\" && \
        echo \"sweep {target}: $(wc -l < \"${{TMPDIR:-/tmp}}/attune-unused\") unused entries\" && \
        xargs -r -d '\\n' rm -rf < \"${{TMPDIR:-/tmp}}/attune-unused\"; fi"
    )
}

/// A cache to import, its archive in `parts`, and what its [`STABLE_STAMP`] says after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub mount: CacheMount,
    pub parts: usize,
    pub stamp: Option<String>,
}

/// The import helper: `archives` (a directory, the helper's build context) holds the entry's
/// archives, each mount's in `parts` ([`CacheMount::part_archive_name`]: a large target cache
/// travels split, so that its parts unpack at once). An `ADD` per archive, each in a stage of
/// its own, lets BuildKit unpack them (zstd included) side by side; one RUN copies them into
/// the mounts, every part at once. Nothing is decompressed on the host, and only the
/// compressed bytes travel to the engine.
///
/// With target caches to lock ([`lock_script`]) two stages run at once: `lock` takes every
/// target cache's lock at the start of the build, says so ([`LOCKED_MARKER`]: the builds may
/// start, their cargo RUNs wait on that lock), and holds it until `import`, which waits for
/// the lock to be held, has copied the archives in. The two talk through files named with the
/// nonce in the first target cache. A mount whose copy fails is emptied, once every copy has
/// ended, and the build ends with an error; BuildKit stops the other stage with it (measured
/// on this engine). The `import` stage waits at most ten minutes for the lock; `lock` waits for
/// the copy as long as it takes (its end is the copy's end or failure), and, like the builds,
/// for the lock itself as long as another build holds it.
///
/// Caches mounted `sharing=locked` (after `rollback-locked`) get one stage: BuildKit keeps the
/// builds out of them while it copies, and two stages would wait for each other.
///
/// `incoming` are the caches whose archives (none an empty tar) are in `archives`, with their
/// number of parts: an archive that BuildKit's ADD leaves as a file (an engine whose ADD does
/// not read zstd) fails the import. Each cache's [`STABLE_STAMP`] goes before the copy, and
/// comes back with the entry's stamp once every copy has ended whole.
pub fn import_build(
    options: &HelperOptions,
    incoming: &[Incoming],
    archives: &Path,
) -> HelperBuild {
    let mounts: Vec<CacheMount> = incoming.iter().map(|i| i.mount.clone()).collect();
    let mounts = &mounts[..];
    // (mount index, part): a stage and a bind mount each
    let parts: Vec<(usize, usize)> = (incoming.iter().enumerate())
        .flat_map(|(i, m)| (0..m.parts.max(1)).map(move |k| (i, k)))
        .collect();
    let mut text = format!(
        "# attune cache import helper, generated by `cargo xtask cache import`: BuildKit unpacks \
         each archive (ADD, a stage each, side by side), a RUN copies them into the mounts.\n\
         # The RUNs use {NONCE_ARG}, so they are never layer-cached.\n"
    );
    for (n, (i, k)) in parts.iter().enumerate() {
        text.push_str(&format!(
            "FROM scratch AS {ARCHIVES_CONTEXT}-{n}\nADD {} /\n\n",
            mounts[*i].part_archive_name(*k)
        ));
    }
    let binds: Vec<String> = (parts.iter().enumerate())
        .map(|(n, (i, k))| {
            format!(
                "--mount=type=bind,from={ARCHIVES_CONTEXT}-{n},target=/attune-cache-in/{}",
                mounts[*i].part_dir(*k)
            )
        })
        .collect();
    // the two stages mount the caches at once: with `sharing=locked` (after `rollback-locked`)
    // the second would wait for the first, which waits for the second; one stage then, whose
    // mounts BuildKit itself keeps from the builds
    let locks = lock_script(mounts).filter(|_| mounts.iter().all(|m| m.sharing == "shared"));
    let first_target = mounts.iter().find(|m| !m.cargo_home).map(CacheMount::at);
    let flags = first_target.as_ref().filter(|_| locks.is_some()).map(|at| {
        (
            format!("{at}/.attune-locked-${NONCE_ARG}"),
            format!("{at}/.attune-imported-${NONCE_ARG}"),
        )
    });
    let wait = |flag: &str, what: &str| {
        format!(
            "i=0 && while ! [ -e {flag} ]; do i=$((i+1)); if [ $i -gt 12000 ]; then \
             echo \"attune-cache-import: {what} did not come in 10 minutes\" >&2; exit 1; fi; sleep 0.05; done"
        )
    };

    let mut copy = vec![
        format!("echo \"cache import ${NONCE_ARG}\""),
        "mkdir -p /done".to_string(),
    ];
    if let Some((locked, _)) = &flags {
        copy.push(wait(locked, "the lock"));
    }
    let failed = flags
        .as_ref()
        .map(|(_, imported)| format!("echo failed > {imported}; "))
        .unwrap_or_default();
    copy.push(copy_script(incoming, &parts, &failed));
    if let Some((_, imported)) = &flags {
        copy.push(format!("echo ok > {imported}"));
    }
    copy.push("echo imported > /done/imported".into());

    let mut import_flags = binds;
    import_flags.extend(mount_flags(mounts));
    let base = &options.base_image;
    match (locks, flags) {
        (Some(locks), Some((locked, imported))) => {
            let at = first_target.as_deref().unwrap_or("/nonexistent");
            text.push_str(&lock_stage(base, mounts, locks, at, &locked, &imported));
            text.push_str(&format!(
                "\nFROM {base} AS import\nARG {NONCE_ARG}\n{}\n",
                run(&import_flags, &copy)
            ));
            text.push_str(
                "\nFROM scratch\nCOPY --from=lock /done/ /\nCOPY --from=import /done/ /\n",
            );
        }
        _ => {
            text.push_str(&format!(
                "FROM {base} AS import\nARG {NONCE_ARG}\n{}\n",
                run(&import_flags, &copy)
            ));
            text.push_str("\nFROM scratch\nCOPY --from=import /done/ /\n");
        }
    }
    helper(options, "import", text, Some(archives))
}

/// The import's `lock` stage: it holds every target cache's lock (`locks`) from the start of the
/// builds, says so (`touch locked`, the [`LOCKED_MARKER`] in its log), and lets go once the copy
/// stage wrote `imported` (failing when the copy did). `at`: the first target cache's mount.
fn lock_stage(
    base: &str,
    mounts: &[CacheMount],
    locks: String,
    at: &str,
    locked: &str,
    imported: &str,
) -> String {
    let targets: Vec<CacheMount> = mounts.iter().filter(|m| !m.cargo_home).cloned().collect();
    let hold = vec![
        format!("echo \"cache import lock ${NONCE_ARG}\""),
        "mkdir -p /done".to_string(),
        locks,
        // hand-over files of a helper that was killed: only a lock holder writes them
        format!("rm -f {at}/.attune-locked-* {at}/.attune-imported-*"),
        format!("touch {locked}"),
        // printf joins the two: BuildKit shows the RUN with its arguments expanded, and the
        // marker must not appear in the log before the RUN prints it
        format!("printf '%s-%s\\n' \"{LOCKED_MARKER}\" \"${NONCE_ARG}\""),
        format!("while ! [ -e {imported} ]; do sleep 0.05; done"),
        format!("status=$(cat {imported})"),
        format!("rm -f {locked} {imported}"),
        "[ \"$status\" = ok ]".to_string(),
        "echo held > /done/held".to_string(),
    ];
    format!(
        "FROM {base} AS lock\nARG {NONCE_ARG}\n{}\n",
        run(&mount_flags(&targets), &hold)
    )
}

/// The import's copy, one shell group: every part of every mount is copied at once (a
/// subshell each; the directories of a split mount are made first, so that two copies never
/// race to make one). Once all have ended, each mount one of whose copies failed is emptied,
/// never left half-filled (the builds then compile cold), and the group fails after `failed`.
fn copy_script(incoming: &[Incoming], parts: &[(usize, usize)], failed: &str) -> String {
    let mut steps: Vec<String> = (0..incoming.len()).map(|i| format!("f{i}=0")).collect();
    // a stamp of an earlier import is not this one's
    steps.push(format!(
        "rm -f {}",
        (incoming.iter())
            .map(|i| format!("{}/{STABLE_STAMP}", i.mount.at()))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    for (
        i,
        Incoming {
            mount: m, parts: n, ..
        },
    ) in incoming.iter().enumerate()
    {
        if *n > 1 {
            for k in 0..*n {
                steps.push(format!(
                    "( cd /attune-cache-in/{} && find . -mindepth 1 -type d -print0 | ( cd {} && xargs -0 -r mkdir -p ) ) || f{i}=1",
                    m.part_dir(k),
                    m.at()
                ));
            }
        }
    }
    for (n, (i, k)) in parts.iter().enumerate() {
        let m = &incoming[*i].mount;
        // ADD unpacks an archive; one it leaves as a file, it could not read. A lock file an
        // older entry may carry is never copied.
        steps.push(format!(
            "( cd /attune-cache-in/{dir} && if [ -e {archive} ]; then echo \"attune-cache-import: the engine's ADD did not unpack {archive}\" >&2; exit 1; fi && \
             find . -mindepth 1 -maxdepth 1 ! -name {LOCK_FILE} -exec cp -a -t {at} {{}} + ) & p{n}=$!",
            dir = m.part_dir(*k),
            archive = m.part_archive_name(*k),
            at = m.at(),
        ));
    }
    for (n, (i, _)) in parts.iter().enumerate() {
        steps.push(format!("wait $p{n} || f{i}=1"));
    }
    for (i, Incoming { mount: m, .. }) in incoming.iter().enumerate() {
        let empty = if m.cargo_home {
            format!(
                "rm -rf {}",
                (m.paths().iter())
                    .map(|p| format!("{}/{p}", m.at()))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        } else {
            format!(
                "find {} -mindepth 1 -maxdepth 1 ! -name {LOCK_FILE} ! -name '.attune-*' -exec rm -rf {{}} +",
                m.at()
            )
        };
        steps.push(format!(
            "if [ $f{i} = 1 ]; then echo \"attune-cache-import: cannot copy {archive} into the cache {id}; the cache left empty\" >&2; {empty}; fi",
            archive = m.archive_name(),
            id = m.id,
        ));
    }
    let sum: Vec<String> = (0..incoming.len()).map(|i| format!("f{i}")).collect();
    steps.push(format!(
        "if [ $(({})) != 0 ]; then {failed}exit 1; fi",
        sum.join("+")
    ));
    for i in incoming {
        if let Some(stamp) = i.stamp.as_deref().filter(|s| safe_stamp(s)) {
            steps.push(format!("echo '{stamp}' > {}/{STABLE_STAMP}", i.mount.at()));
        }
    }
    format!("{{ {}; }}", steps.join("; "))
}

/// `RUN <flags> <script>`, one flag and one command a line.
fn run(flags: &[String], script: &[String]) -> String {
    let mut parts: Vec<String> = flags.to_vec();
    parts.push(script.join(" && \\\n    "));
    format!("RUN {}", parts.join(" \\\n    "))
}

/// A helper build of `kind`; its build context is `context`, else an empty directory.
fn helper(
    options: &HelperOptions,
    kind: &str,
    dockerfile_text: String,
    context: Option<&Path>,
) -> HelperBuild {
    let output = options.work_dir.join(format!("{kind}-out"));
    let context = context
        .map(Path::to_path_buf)
        .unwrap_or_else(|| options.work_dir.join("context"));
    HelperBuild {
        name: format!("cache-{kind}"),
        target: options.target(kind, &context, Output::Local(output.clone())),
        dockerfile_text,
        output,
    }
}

fn mount_flags(mounts: &[CacheMount]) -> Vec<String> {
    (mounts.iter())
        .map(|m| {
            format!(
                "--mount=type=cache,target={},id={},sharing={}",
                m.at(),
                m.id,
                m.sharing
            )
        })
        .collect()
}

fn dockerfile(
    kind: &str,
    what: &str,
    base: &str,
    flags: &[String],
    script: &[String],
    out: &str,
) -> String {
    format!(
        "# attune cache {kind} helper, generated by `cargo xtask cache {kind}`: {what}.\n\
         # The RUN uses {NONCE_ARG}, so it is never layer-cached.\n\
         FROM {base} AS {kind}\n\
         ARG {NONCE_ARG}\n\
         {}\n\nFROM scratch\nCOPY --from={kind} {out} /\n",
        run(flags, script)
    )
}

/// `<hex> <count>`, nothing a shell would read otherwise.
fn safe_stamp(text: &str) -> bool {
    text.chars()
        .all(|c| c.is_ascii_hexdigit() || c == ' ' || c.is_ascii_digit())
}

fn safe(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

/// `ARG A=1 B` -> [("A", Some("1")), ("B", None)].
fn arg_defaults(args: &str) -> Vec<(String, Option<String>)> {
    shell_words(args)
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.trim_matches('"').to_string())),
            None => (w.to_string(), None),
        })
        .collect()
}

/// Expands `$VAR`, `${VAR}` and `${VAR:-default}`; an unset variable is the error.
fn expand(text: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, default, len) = if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                return Err(after.to_string());
            };
            let inner = &body[..end];
            match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d), end + 2),
                None => (inner, None, end + 2),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], None, end)
        };
        match (vars.get(name).filter(|v| !v.is_empty()), default) {
            (Some(v), _) => out.push_str(v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => return Err(name.to_string()),
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerfile::model::parse;

    fn read(name: &str) -> Dockerfile {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../docker")
            .join(name);
        parse(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn ids(uses: &Uses) -> Vec<(&str, bool)> {
        uses.mounts
            .iter()
            .map(|m| (m.id.as_str(), m.cargo_home))
            .collect()
    }

    #[test]
    fn mounts_of_the_project_dockerfiles() {
        let amd64 = platform_args("linux/amd64");
        let ws = read("Dockerfile.workspace");
        let api = uses(&ws, "docker/Dockerfile.workspace", "api", &amd64).unwrap();
        assert_eq!(
            ids(&api),
            [
                ("cargo-home", true),
                ("target-workspace-linux/amd64", false)
            ]
        );
        assert_eq!(api.base_image.as_deref(), Some("rust:1.95-slim-bookworm"));
        assert_eq!(api.mounts[1].target, "/build/target");
        assert_eq!(api.mounts[1].sharing, "shared");
        assert_eq!(api.mounts[1].tar_name(), "target-workspace-linux_amd64.tar");
        // each platform its own target cache; the cargo home is shared
        let arm = uses(
            &ws,
            "docker/Dockerfile.workspace",
            "api",
            &platform_args("linux/arm/v7"),
        )
        .unwrap();
        assert_eq!(
            ids(&arm),
            [
                ("cargo-home", true),
                ("target-workspace-linux/arm/v7", false)
            ]
        );
        // without the platform the id cannot be expanded (BuildKit always gives it)
        let err = uses(&ws, "docker/Dockerfile.workspace", "api", &[]).unwrap_err();
        assert!(
            err.ends_with(
                "id `target-workspace-${TARGETPLATFORM}` needs the build argument TARGETPLATFORM"
            ),
            "{err}"
        );
        // a stage that copies nothing from the builder uses no cache
        let base = uses(&ws, "docker/Dockerfile.workspace", "runtime-base", &[]).unwrap();
        assert_eq!(base.mounts, []);

        let optimized = read("Dockerfile.optimized");
        let file = "docker/Dockerfile.optimized";
        let with = |args: &[&str]| -> Vec<String> {
            args.iter()
                .map(|a| a.to_string())
                .chain(amd64.iter().cloned())
                .collect()
        };
        let api = uses(&optimized, file, "runtime", &with(&["SERVICE=api"])).unwrap();
        assert_eq!(
            ids(&api),
            [
                ("cargo-home", true),
                ("target-builder-api-linux/amd64", false)
            ]
        );
        let rust = uses(
            &optimized,
            file,
            "runtime",
            &with(&["SERVICE=api", "RUST_VERSION=1.96"]),
        )
        .unwrap();
        assert_eq!(rust.base_image.as_deref(), Some("rust:1.96-slim-bookworm"));
        let err = uses(&optimized, file, "runtime", &with(&[])).unwrap_err();
        assert!(
            err.starts_with("docker/Dockerfile.optimized line ")
                && err.ends_with(
                    "id `target-builder-${SERVICE}-${TARGETPLATFORM}` needs the build argument SERVICE"
                ),
            "{err}"
        );
        assert_eq!(
            uses(&optimized, file, "nope", &[]).unwrap_err(),
            "docker/Dockerfile.optimized: no stage `nope`"
        );

        for (name, target, id) in [
            (
                "Dockerfile.worker.optimized",
                "worker-shell",
                "target-worker-builder-linux/amd64",
            ),
            (
                "Dockerfile.pack-binaries",
                "pack-binaries",
                "target-pack-binaries-linux/amd64",
            ),
        ] {
            let df = read(name);
            let found = uses(&df, name, target, &amd64).unwrap();
            assert_eq!(ids(&found), [("cargo-home", true), (id, false)], "{name}");
        }
    }

    #[test]
    fn platform_arguments() {
        assert_eq!(
            platform_args("linux/arm/v7"),
            [
                "TARGETPLATFORM=linux/arm/v7",
                "TARGETOS=linux",
                "TARGETARCH=arm",
                "TARGETVARIANT=v7"
            ]
        );
        assert_eq!(platform_args("linux/amd64")[3], "TARGETVARIANT=");
    }

    fn options() -> HelperOptions {
        HelperOptions {
            work_dir: "target/xtask/cache".into(),
            base_image: "rust:1.95-slim-bookworm".into(),
            builder: None,
            context: None,
            platform: Some("linux/amd64".into()),
            nonce: "<nonce>".into(),
        }
    }

    fn one_part(mounts: &[CacheMount]) -> Vec<Incoming> {
        (mounts.iter())
            .map(|m| Incoming {
                mount: m.clone(),
                parts: 1,
                stamp: None,
            })
            .collect()
    }

    fn mounts() -> Vec<CacheMount> {
        vec![
            CacheMount {
                id: "cargo-home".into(),
                target: "/cargo-home".into(),
                sharing: "shared".into(),
                cargo_home: true,
            },
            CacheMount {
                id: "target-workspace-linux/amd64".into(),
                target: "/build/target".into(),
                sharing: "shared".into(),
                cargo_home: false,
            },
        ]
    }

    #[test]
    fn export_helper_snapshot() {
        let build = export_build(&options(), &mounts(), None, &Stable::default());
        assert_eq!(
            build.dockerfile_text,
            r#"# attune cache export helper, generated by `cargo xtask cache export`: copies the contents of the strategy's cache mounts out, a stable tar and a tar of the rest per mount.
# The RUN uses ATTUNE_CACHE_NONCE, so it is never layer-cached.
FROM rust:1.95-slim-bookworm AS export
ARG ATTUNE_CACHE_NONCE
RUN --mount=type=cache,target=/attune-mnt/cargo-home,id=cargo-home,sharing=shared \
    --mount=type=cache,target=/attune-mnt/target-workspace-linux_amd64,id=target-workspace-linux/amd64,sharing=shared \
    echo "cache export $ATTUNE_CACHE_NONCE" && \
    mkdir -p /out && \
    exec 9>/attune-mnt/target-workspace-linux_amd64/attune.lock && flock 9 && \
    TAR_HOME && \
    SWEEP && \
    TAR_TARGET

FROM scratch
COPY --from=export /out/ /
"#
            .replace(
                "SWEEP",
                &sweep_script("/attune-mnt/target-workspace-linux_amd64", "/build/target"),
            )
            .replace(
                "TAR_HOME",
                &tar_script(&mounts()[0], "/attune-mnt/cargo-home", "/out", &[], None)
            )
            .replace(
                "TAR_TARGET",
                &tar_script(
                    &mounts()[1],
                    "/attune-mnt/target-workspace-linux_amd64",
                    "/out",
                    &[],
                    None
                )
            )
        );
        // what the export may leave out travels into the script
        let stable = Stable {
            locals: vec!["attune_api".into(), "bad name;rm".into()],
            offers: [(
                "target-workspace-linux/amd64".to_string(),
                "ab12".to_string(),
            )]
            .into(),
        };
        let text = export_build(&options(), &mounts(), None, &stable).dockerfile_text;
        assert!(text.contains("awk -v W=' attune_api ' "), "{text}");
        assert!(
            text.contains(&format!("[ \"$(cat {STABLE_STAMP})\" = \"ab12 $list\" ]")),
            "{text}"
        );
        assert!(
            text.contains("echo ab12 > /out/target-workspace-linux_amd64.reused"),
            "{text}"
        );
        // nothing offered for the cargo home: nothing to reuse
        assert!(!text.contains("/out/cargo-home.reused"), "{text}");
        assert_eq!(
            crate::proc::shell_line(&build.argv()),
            "docker buildx build --progress=rawjson --file target/xtask/cache/export.Dockerfile \
             --build-arg 'ATTUNE_CACHE_NONCE=<nonce>' --platform linux/amd64 \
             --output type=local,dest=target/xtask/cache/export-out target/xtask/cache/context"
        );
    }

    /// Started beside the builds, the export helper declares the builds' start, and once it holds
    /// the lock refuses a target cache whose units file is older (it would be the import's).
    #[test]
    fn export_helper_beside_the_builds_checks_the_target_cache_is_theirs() {
        let build = export_build(
            &options(),
            &mounts(),
            Some(1_700_000_000),
            &Stable::default(),
        );
        let text = &build.dockerfile_text;
        assert!(
            text.contains(&format!("ARG {NONCE_ARG}\nARG {BUILDS_STARTED_ARG}\n")),
            "{text}"
        );
        let lock = text.find("flock 9").unwrap();
        let check = text
            .find(&format!(
                "for f in /attune-mnt/target-workspace-linux_amd64/{UNITS_FILE}; do if ! [ -f \"$f\" ] || [ \"$(stat -c %Y \"$f\")\" -lt \"${BUILDS_STARTED_ARG}\" ]"
            ))
            .unwrap();
        let sweep = text.find("sweep /build/target").unwrap();
        assert!(lock < check && check < sweep, "{text}");
        assert!(text.contains(&format!("exit {NOT_YET_EXIT}")), "{text}");
        assert!(
            crate::proc::shell_line(&build.argv()).contains(&format!(
                "--build-arg {BUILDS_STARTED_ARG}=1700000000 --platform"
            )),
            "{:?}",
            build.argv()
        );
        let plain = export_build(&options(), &mounts(), None, &Stable::default());
        assert!(!plain.dockerfile_text.contains(BUILDS_STARTED_ARG));
    }

    #[test]
    fn import_helper_snapshot() {
        let build = import_build(
            &HelperOptions {
                builder: Some("remote".into()),
                platform: None,
                ..options()
            },
            &one_part(&mounts()[..1]),
            Path::new("target/xtask/cache/import-in"),
        );
        assert_eq!(
            build.dockerfile_text,
            r#"# attune cache import helper, generated by `cargo xtask cache import`: BuildKit unpacks each archive (ADD, a stage each, side by side), a RUN copies them into the mounts.
# The RUNs use ATTUNE_CACHE_NONCE, so they are never layer-cached.
FROM scratch AS attune-cache-archives-0
ADD cargo-home.tar.zst /

FROM rust:1.95-slim-bookworm AS import
ARG ATTUNE_CACHE_NONCE
RUN --mount=type=bind,from=attune-cache-archives-0,target=/attune-cache-in/cargo-home \
    --mount=type=cache,target=/attune-mnt/cargo-home,id=cargo-home,sharing=shared \
    echo "cache import $ATTUNE_CACHE_NONCE" && \
    mkdir -p /done && \
    { f0=0; rm -f /attune-mnt/cargo-home/.attune-stable; ( cd /attune-cache-in/cargo-home && if [ -e cargo-home.tar.zst ]; then echo "attune-cache-import: the engine's ADD did not unpack cargo-home.tar.zst" >&2; exit 1; fi && find . -mindepth 1 -maxdepth 1 ! -name attune.lock -exec cp -a -t /attune-mnt/cargo-home {} + ) & p0=$!; wait $p0 || f0=1; if [ $f0 = 1 ]; then echo "attune-cache-import: cannot copy cargo-home.tar.zst into the cache cargo-home; the cache left empty" >&2; rm -rf /attune-mnt/cargo-home/registry/index /attune-mnt/cargo-home/registry/cache /attune-mnt/cargo-home/git/db; fi; if [ $((f0)) != 0 ]; then exit 1; fi; } && \
    echo imported > /done/imported

FROM scratch
COPY --from=import /done/ /
"#
        );
        // the archives are the build context: ADD reads them from there
        assert_eq!(
            crate::proc::shell_line(&build.argv()),
            "docker buildx build --builder remote --progress=rawjson --file target/xtask/cache/import.Dockerfile \
             --build-arg 'ATTUNE_CACHE_NONCE=<nonce>' \
             --output type=local,dest=target/xtask/cache/import-out target/xtask/cache/import-in"
        );
    }

    /// With a target cache, a `lock` stage takes its lock (the one the builds' cargo RUNs
    /// take) at once, says so (the marker joined by printf: BuildKit shows a RUN with the nonce
    /// expanded, the marker must not be in it) and holds it until the `import` stage, which
    /// waits for the lock to be held, has copied the archives in; a failed copy says so. The
    /// lock file is never copied.
    #[test]
    fn import_helper_holds_the_target_caches_locks_while_it_copies() {
        let build = import_build(
            &options(),
            &one_part(&mounts()),
            Path::new("target/xtask/cache/import-in"),
        );
        let text = &build.dockerfile_text;
        let stage = |name: &str| {
            let at = text.find(&format!("AS {name}\n")).unwrap();
            let end = text[at..]
                .find("\n\n")
                .map(|e| at + e)
                .unwrap_or(text.len());
            &text[at..end]
        };
        let (lock, import) = (stage("lock"), stage("import"));
        assert!(!lock.contains("attune-cache-archives"), "{lock}");
        assert!(!lock.contains("id=cargo-home"), "{lock}");
        let flock = lock
            .find("exec 9>/attune-mnt/target-workspace-linux_amd64/attune.lock && flock 9")
            .unwrap();
        let locked = lock
            .find(
                "touch /attune-mnt/target-workspace-linux_amd64/.attune-locked-$ATTUNE_CACHE_NONCE",
            )
            .unwrap();
        let marker = lock
            .find(&format!(
                "printf '%s-%s\\n' \"{LOCKED_MARKER}\" \"${NONCE_ARG}\""
            ))
            .unwrap();
        let wait = lock
            .find("while ! [ -e /attune-mnt/target-workspace-linux_amd64/.attune-imported-$ATTUNE_CACHE_NONCE ]")
            .unwrap();
        assert!(flock < locked && locked < marker && marker < wait, "{lock}");
        assert!(lock.contains("[ \"$status\" = ok ]"), "{lock}");
        assert!(!text.contains(&format!("{LOCKED_MARKER}-")), "{text}");

        let waits = import
            .find("while ! [ -e /attune-mnt/target-workspace-linux_amd64/.attune-locked-$ATTUNE_CACHE_NONCE ]")
            .unwrap();
        let copy = import
            .find("cp -a -t /attune-mnt/target-workspace-linux_amd64")
            .unwrap();
        let ok = import
            .find("echo ok > /attune-mnt/target-workspace-linux_amd64/.attune-imported-$ATTUNE_CACHE_NONCE")
            .unwrap();
        assert!(waits < copy && copy < ok, "{import}");
        assert!(
            import.contains(
                "if [ -e target-workspace-linux_amd64.tar.zst ]; then echo \"attune-cache-import: the engine's ADD did not unpack target-workspace-linux_amd64.tar.zst\" >&2; exit 1; fi"
            ),
            "{import}"
        );
        // a failed copy empties its cache once every copy has ended, then says so to `lock`
        let waited = import.find("wait $p1 || f1=1").unwrap();
        let emptied = import
            .find("if [ $f1 = 1 ]; then echo \"attune-cache-import: cannot copy target-workspace-linux_amd64.tar.zst into the cache target-workspace-linux/amd64; the cache left empty\" >&2; \
                   find /attune-mnt/target-workspace-linux_amd64 -mindepth 1 -maxdepth 1 ! -name attune.lock ! -name '.attune-*' -exec rm -rf {} +; fi")
            .unwrap();
        let failed = import
            .find("if [ $((f0+f1)) != 0 ]; then echo failed > /attune-mnt/target-workspace-linux_amd64/.attune-imported-$ATTUNE_CACHE_NONCE; exit 1; fi")
            .unwrap();
        assert!(
            waited < emptied && emptied < failed && failed < ok,
            "{import}"
        );
        // hand-over files of a killed helper go once the lock is held
        assert!(lock.contains(
            "rm -f /attune-mnt/target-workspace-linux_amd64/.attune-locked-* /attune-mnt/target-workspace-linux_amd64/.attune-imported-*"
        ), "{lock}");
        assert!(!lock.contains("10 minutes"), "{lock}");
        assert!(
            text.ends_with(
                "FROM scratch\nCOPY --from=lock /done/ /\nCOPY --from=import /done/ /\n"
            ),
            "{text}"
        );

        // more target caches than file descriptors to lock them with: no lock, no marker
        let many: Vec<CacheMount> = (0..8)
            .map(|i| CacheMount {
                id: format!("target-{i}"),
                target: format!("/t{i}"),
                sharing: "shared".into(),
                cargo_home: false,
            })
            .collect();
        assert_eq!(lock_script(&many), None);
        assert_eq!(
            lock_script(&many[..2]).as_deref(),
            Some("exec 9>/attune-mnt/target-0/attune.lock 8>/attune-mnt/target-1/attune.lock && flock 9 && flock 8")
        );
        let text = import_build(&options(), &one_part(&many), Path::new("in")).dockerfile_text;
        assert!(!text.contains("printf"), "{text}");
        assert!(!text.contains("AS lock"), "{text}");

        // caches mounted `sharing=locked` (rollback-locked): one stage, or the two would wait for
        // each other forever
        let locked: Vec<CacheMount> = mounts()
            .into_iter()
            .map(|m| CacheMount {
                sharing: "locked".into(),
                ..m
            })
            .collect();
        let text = import_build(&options(), &one_part(&locked), Path::new("in")).dockerfile_text;
        assert!(!text.contains("AS lock"), "{text}");
        assert!(!text.contains(".attune-locked-"), "{text}");
        assert!(text.contains("sharing=locked"), "{text}");
    }

    /// A target cache in two parts: a stage and an ADD each (BuildKit unpacks them side by
    /// side), both bound into the one RUN, the directories made before the copies start at
    /// once, and a failure of either empties the cache.
    #[test]
    fn import_helper_unpacks_and_copies_the_parts_side_by_side() {
        let mounts = mounts();
        let incoming = vec![
            Incoming {
                mount: mounts[0].clone(),
                parts: 1,
                stamp: None,
            },
            Incoming {
                mount: mounts[1].clone(),
                parts: 2,
                stamp: Some(format!("{} 42", "ab".repeat(32))),
            },
        ];
        let text = import_build(&options(), &incoming, Path::new("in")).dockerfile_text;
        assert!(text.contains(
            "FROM scratch AS attune-cache-archives-0\nADD cargo-home.tar.zst /\n\n\
             FROM scratch AS attune-cache-archives-1\nADD target-workspace-linux_amd64.tar.zst /\n\n\
             FROM scratch AS attune-cache-archives-2\nADD target-workspace-linux_amd64.1.tar.zst /\n"
        ), "{text}");
        let import = &text[text.find("AS import").unwrap()..];
        for bind in [
            "--mount=type=bind,from=attune-cache-archives-1,target=/attune-cache-in/target-workspace-linux_amd64 ",
            "--mount=type=bind,from=attune-cache-archives-2,target=/attune-cache-in/target-workspace-linux_amd64.1 ",
        ] {
            assert!(import.contains(bind), "{import}");
        }
        let dirs = import
            .find("( cd /attune-cache-in/target-workspace-linux_amd64.1 && find . -mindepth 1 -type d -print0 | ( cd /attune-mnt/target-workspace-linux_amd64 && xargs -0 -r mkdir -p ) ) || f1=1")
            .unwrap();
        let second = import
            .find("( cd /attune-cache-in/target-workspace-linux_amd64.1 && if [ -e target-workspace-linux_amd64.1.tar.zst ]")
            .unwrap();
        let started = import
            .find("-exec cp -a -t /attune-mnt/target-workspace-linux_amd64 {} + ) & p2=$!")
            .unwrap();
        let waited = import.find("wait $p2 || f1=1").unwrap();
        assert!(
            dirs < second && second < started && started < waited,
            "{import}"
        );
        assert!(
            !import.contains("attune-cache-in/cargo-home && find . -mindepth 1 -type d"),
            "{import}"
        );
    }

    /// The export's script, run here with sh, find, awk and tar (what the builder image has):
    /// a target cache splits into the dependencies' artifacts and the rest, and the stable tar
    /// is left out only while the import's stamp holds (the offered id, as many stable files,
    /// none newer).
    #[test]
    fn export_leaves_out_the_stable_part_the_cache_still_holds() {
        let tmp = tempfile::tempdir().unwrap();
        let (cache, out) = (tmp.path().join("cache"), tmp.path().join("out"));
        let files = [
            "release/deps/libserde-0123456789abcdef.rlib",
            "release/.fingerprint/serde-0123456789abcdef/lib-serde.json",
            "release/deps/libattune_common-fedcba9876543210.rlib",
            "release/.fingerprint/attune-api-fedcba9876543210/bin-attune-api.json",
            "release/attune-api",
            "attune-units.json",
            "attune.lock",
            ".attune-locked-x",
        ];
        for f in files {
            let path = cache.join(f);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, f).unwrap();
        }
        let mount = CacheMount {
            id: "target-t".into(),
            target: "/build/target".into(),
            sharing: "shared".into(),
            cargo_home: false,
        };
        let locals = vec!["attune_api".to_string(), "attune_common".to_string()];
        let sh = |script: &str| {
            let _ = std::fs::remove_dir_all(&out);
            std::fs::create_dir_all(&out).unwrap();
            let status = std::process::Command::new("sh")
                .arg("-c")
                .arg(script)
                .env("TMPDIR", tmp.path())
                .status()
                .unwrap();
            assert!(status.success(), "{script}");
        };
        let listed = |tar: &str| -> Vec<String> {
            let o = std::process::Command::new("tar")
                .arg("-tf")
                .arg(out.join(tar))
                .output()
                .unwrap();
            assert!(o.status.success(), "{tar}");
            String::from_utf8(o.stdout)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect()
        };
        let read = |f: &str| {
            std::fs::read_to_string(out.join(f))
                .ok()
                .map(|t| t.trim().to_string())
        };
        let script = |offer: Option<&str>| {
            tar_script(
                &mount,
                &cache.to_string_lossy(),
                &out.to_string_lossy(),
                &locals,
                offer,
            )
        };
        let touch = |when: &str, path: &Path| {
            let status = std::process::Command::new("touch")
                .args(["-d", when])
                .arg(path)
                .status()
                .unwrap();
            assert!(status.success());
        };

        sh(&script(None));
        assert_eq!(read("target-t.stable-files").as_deref(), Some("2"));
        let list = read("target-t.stable-list").unwrap();
        assert_eq!(list.len(), 64, "{list}");
        assert_eq!(read("target-t.reused"), None);
        let mut stable = listed("target-t.stable.tar");
        stable.sort();
        assert_eq!(
            stable,
            [
                "./release/.fingerprint/serde-0123456789abcdef/lib-serde.json",
                "./release/deps/libserde-0123456789abcdef.rlib"
            ]
        );
        let rest = listed("target-t.tar");
        for f in &files[2..6] {
            assert!(rest.contains(&format!("./{f}")), "{f}: {rest:?}");
        }
        // every directory travels with the rest, the dependencies' files do not
        assert!(
            rest.contains(&"./release/.fingerprint/serde-0123456789abcdef/".to_string()),
            "{rest:?}"
        );
        assert!(
            !(rest.iter())
                .filter(|f| !f.ends_with('/'))
                .any(|f| f.contains("serde")
                    || f.contains("attune.lock")
                    || f.contains(".attune-")),
            "{rest:?}"
        );

        // as the import leaves it: the entry's files older than the stamp
        for f in files {
            touch("@1000000000", &cache.join(f));
        }
        let stamp = cache.join(STABLE_STAMP);
        let stamped = |text: &str| {
            std::fs::write(&stamp, text).unwrap();
            touch("@1500000000", &stamp);
        };
        let with_list = format!("abcd {list}");
        stamped(&with_list);
        sh(&script(Some("abcd")));
        assert_eq!(read("target-t.reused").as_deref(), Some("abcd"));
        assert!(!out.join("target-t.stable.tar").exists());
        assert!(listed("target-t.tar").contains(&"./release/attune-api".to_string()));
        // another entry's id, or not the stable files it left: all of it
        sh(&script(Some("abce")));
        assert_eq!(read("target-t.reused"), None);
        assert!(out.join("target-t.stable.tar").exists());
        stamped(&format!("abcd {}", "0".repeat(64)));
        sh(&script(Some("abcd")));
        assert_eq!(read("target-t.reused"), None);
        // the cache held another build of a dependency, older than the stamp, and the sweep
        // left it in place of the entry's: as many stable files, none newer, another list
        let other = cache.join("release/deps/libserde-1111111111111111.rlib");
        std::fs::rename(cache.join(files[0]), &other).unwrap();
        stamped(&with_list);
        sh(&script(Some("abcd")));
        assert_eq!(read("target-t.stable-files").as_deref(), Some("2"));
        assert_eq!(read("target-t.reused"), None);
        std::fs::rename(&other, cache.join(files[0])).unwrap();
        // a workspace crate rebuilt: the stable part still holds
        stamped(&with_list);
        touch("now", &cache.join(files[2]));
        sh(&script(Some("abcd")));
        assert_eq!(read("target-t.reused").as_deref(), Some("abcd"));
        // a dependency rebuilt: it does not
        touch("now", &cache.join(files[0]));
        sh(&script(Some("abcd")));
        assert_eq!(read("target-t.reused"), None);
        assert_eq!(listed("target-t.stable.tar").len(), 2);

        // the cargo home: all of it stable
        let home = CacheMount {
            id: "cargo-home".into(),
            target: "/cargo-home".into(),
            sharing: "shared".into(),
            cargo_home: true,
        };
        let crate_file = cache.join("registry/cache/x.crate");
        std::fs::create_dir_all(crate_file.parent().unwrap()).unwrap();
        std::fs::write(&crate_file, "x").unwrap();
        touch("@1000000000", &crate_file);
        let home_script = |offer: Option<&str>| {
            tar_script(
                &home,
                &cache.to_string_lossy(),
                &out.to_string_lossy(),
                &locals,
                offer,
            )
        };
        sh(&home_script(None));
        assert_eq!(read("cargo-home.stable-files").as_deref(), Some("1"));
        assert_eq!(
            listed("cargo-home.stable.tar"),
            ["registry/cache/", "registry/cache/x.crate"]
        );
        stamped(&format!("abcd {}", read("cargo-home.stable-list").unwrap()));
        sh(&home_script(Some("abcd")));
        assert_eq!(read("cargo-home.reused").as_deref(), Some("abcd"));
        touch("now", &crate_file);
        sh(&home_script(Some("abcd")));
        assert_eq!(read("cargo-home.reused"), None);

        // a part with no file has no tar
        std::fs::remove_dir_all(&cache).unwrap();
        std::fs::create_dir_all(cache.join("release")).unwrap();
        sh(&script(None));
        assert_eq!(read("target-t.stable-files").as_deref(), Some("0"));
        assert!(!out.join("target-t.stable.tar").exists());
        assert_eq!(listed("target-t.tar"), ["./release/"]);
        sh(&home_script(None));
        assert_eq!(read("cargo-home.stable-files").as_deref(), Some("0"));
        assert!(!out.join("cargo-home.stable.tar").exists());
    }

    /// The per-service strategy mounts a target cache per service, all at /build/target: the
    /// helpers mount each at a path of its own, so that each is copied (and locked) once, and
    /// the lock script never opens one file twice (two opens of one file exclude each other
    /// under flock: the second `flock` would wait forever).
    #[test]
    fn per_service_target_caches_get_paths_of_their_own() {
        let df = read("Dockerfile.optimized");
        let mut mounts: Vec<CacheMount> = Vec::new();
        for service in ["api", "executor"] {
            let args: Vec<String> = platform_args("linux/amd64")
                .into_iter()
                .chain([format!("SERVICE={service}")])
                .collect();
            let u = uses(&df, "Dockerfile.optimized", "runtime", &args).unwrap();
            assert!(u.locked);
            for m in u.mounts {
                if !mounts.iter().any(|o| o.id == m.id) {
                    mounts.push(m);
                }
            }
        }
        let targets: Vec<&CacheMount> = mounts.iter().filter(|m| !m.cargo_home).collect();
        assert_eq!(targets.len(), 2, "{mounts:?}");
        assert_eq!(targets[0].target, targets[1].target);
        assert_ne!(targets[0].at(), targets[1].at());
        let locks = lock_script(&mounts).unwrap();
        assert_eq!(
            locks,
            "exec 9>/attune-mnt/target-builder-api-linux_amd64/attune.lock \
             8>/attune-mnt/target-builder-executor-linux_amd64/attune.lock && flock 9 && flock 8"
        );
        let export = export_build(&options(), &mounts, None, &Stable::default()).dockerfile_text;
        for m in &targets {
            assert!(
                export.contains(&format!(
                    "--mount=type=cache,target={},id={},",
                    m.at(),
                    m.id
                )),
                "{export}"
            );
            assert!(
                export.contains(&format!("cd {} && find . -mindepth 1", m.at())),
                "{export}"
            );
        }
        assert!(!export.contains("target=/build/target"), "{export}");
    }

    /// The project's Dockerfiles lock their target caches in every RUN that mounts one; a RUN
    /// without `flock`, or locking another file, does not count.
    #[test]
    fn which_runs_lock_their_target_cache() {
        let amd64 = platform_args("linux/amd64");
        for (file, target) in [
            ("Dockerfile.workspace", "api"),
            ("Dockerfile.optimized", "runtime"),
            ("Dockerfile.worker.optimized", "worker-shell"),
        ] {
            let df = read(file);
            let args: Vec<String> = amd64
                .iter()
                .cloned()
                .chain(["SERVICE=api".to_string()])
                .collect();
            let u = uses(&df, file, target, &args).unwrap();
            assert!(u.locked, "{file} {target}");
        }
        let mounts = [
            ("/cargo-home".to_string(), true),
            ("/build/target".to_string(), false),
        ];
        assert!(runs_locked(
            "exec 9>target/attune.lock && flock 9 && cargo build",
            &mounts
        ));
        assert!(!runs_locked(
            "exec 9>target/attune.lock && cargo build",
            &mounts
        ));
        assert!(!runs_locked("flock /tmp/x cargo build", &mounts));
        assert!(!runs_locked(
            "exec 9>target/attune.lock && flock 9",
            &mounts[..1]
        ));
        // a cache mount that is not shared: the import's two stages would not see one directory
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker/Dockerfile.workspace"),
        )
        .unwrap()
        .replace(
            "id=cargo-home,sharing=shared",
            "id=cargo-home,sharing=locked",
        );
        let u = uses(&parse(&text).unwrap(), "x", "api", &amd64).unwrap();
        assert!(!u.locked);
    }

    /// The sweep on a target directory laid out as cargo 1.95 leaves it (read from a real build):
    /// a library with a build script, a root binary uplifted as a hard link, and an older unit
    /// of each kind that the last build did not use.
    #[test]
    fn sweep_keeps_the_units_of_the_last_build_only() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("target");
        let r = t.join("release");
        let used = [
            "deps/libtiny_x-8183e02cffd48a07.rlib",
            "deps/libtiny_x-8183e02cffd48a07.rmeta",
            "deps/tiny_x-8183e02cffd48a07.d",
            "deps/tiny_bin-8c2af55c1aad543d.d",
            "build/tiny-x-29662716192ee9d8/build-script-build",
            "build/tiny-x-8e0231586cd5da0a/out/generated.rs",
            ".fingerprint/tiny-x-29662716192ee9d8/lib",
            ".fingerprint/tiny-x-8183e02cffd48a07/lib",
            ".fingerprint/tiny-x-8c2af55c1aad543d/bin",
            ".fingerprint/tiny-x-8e0231586cd5da0a/run",
        ];
        let unused = [
            "deps/libtiny_x-0000000000000001.rlib",
            "deps/tiny_x-0000000000000001.d",
            "deps/tiny_bin-0000000000000002",
            "build/tiny-x-0000000000000003/out/generated.rs",
            ".fingerprint/tiny-x-0000000000000001/lib",
            ".fingerprint/tiny-x-0000000000000002/bin",
        ];
        for p in used.iter().chain(&unused) {
            let p = r.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, "x").unwrap();
        }
        // the root binary: deps/<name>-<hash> and its uplifted hard link, no hash in the JSON
        std::fs::write(r.join("deps/tiny_bin-8c2af55c1aad543d"), "bin").unwrap();
        std::fs::hard_link(r.join("deps/tiny_bin-8c2af55c1aad543d"), r.join("tiny-bin")).unwrap();
        // the paths as the builds saw them: the helper mounts the cache elsewhere
        let at = |p: &str| format!("/build/target/release/{p}");
        let json = [
            format!(
                r#"{{"reason":"compiler-artifact","filenames":["{}"],"executable":null}}"#,
                at("build/tiny-x-29662716192ee9d8/build-script-build")
            ),
            format!(
                r#"{{"reason":"build-script-executed","out_dir":"{}"}}"#,
                at("build/tiny-x-8e0231586cd5da0a/out")
            ),
            format!(
                r#"{{"reason":"compiler-artifact","filenames":["{}","{}"],"executable":null}}"#,
                at("libtiny_x.rlib"),
                at("deps/libtiny_x-8183e02cffd48a07.rmeta")
            ),
            format!(
                r#"{{"reason":"compiler-artifact","filenames":["{0}"],"executable":"{0}"}}"#,
                at("tiny-bin")
            ),
            r#"{"reason":"build-finished","success":true}"#.to_string(),
        ];
        std::fs::write(t.join(UNITS_FILE), json.join("\n")).unwrap();

        let script = sweep_script(&t.to_string_lossy(), "/build/target");
        let out = std::process::Command::new("sh")
            .args(["-c", &script])
            .env("TMPDIR", dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains(": 6 unused entries"));
        for p in used
            .iter()
            .chain(&["deps/tiny_bin-8c2af55c1aad543d", "../release/tiny-bin"])
        {
            assert!(r.join(p).exists(), "{p} was removed");
        }
        for p in unused {
            let top: std::path::PathBuf = p.split('/').take(2).collect();
            assert!(!r.join(&top).exists(), "{p} was kept");
        }

        // without the JSON of a last build, nothing is removed
        std::fs::remove_file(t.join(UNITS_FILE)).unwrap();
        std::fs::write(r.join("deps/old-0000000000000009.d"), "x").unwrap();
        let status = std::process::Command::new("sh")
            .args(["-c", &script])
            .env("TMPDIR", dir.path())
            .status()
            .unwrap();
        assert!(status.success());
        assert!(r.join("deps/old-0000000000000009.d").exists());
    }

    #[test]
    fn expansion() {
        let vars: BTreeMap<String, String> =
            [("A".to_string(), "1".to_string())].into_iter().collect();
        assert_eq!(expand("x-${A}-$A-${B:-d}", &vars), Ok("x-1-1-d".into()));
        assert_eq!(expand("${B}", &vars), Err("B".into()));
    }
}
