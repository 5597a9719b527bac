//! `cargo xtask engine up|down|status`: a real Docker engine with BuildKit on a machine that has
//! none.
//!
//! When no Docker daemon is reachable, `up` installs Debian's docker.io, docker-buildx and
//! docker-compose (from Debian testing, pinned low, through the mirror the machine's own apt
//! sources name; a private engine older than [`ENGINE_MAJOR`] is upgraded and restarted), starts a
//! private dockerd on its own socket under the engine directory (default `/var/lib/attune-engine`,
//! or `ATTUNE_ENGINE_DIR`), and, when no registry can be reached, creates the base images the
//! Dockerfiles name from debootstrap plus the host's Rust toolchain and CA bundle. Every step
//! checks first and does nothing when already done.
//!
//! The rest of the xtask finds this engine by itself: [`use_private_engine_if_needed`] points
//! `DOCKER_HOST` at the private socket when no other engine is configured.
//!
//! Longer than 500 lines because the setup is one ordered procedure (packages, dockerd, base
//! images from debootstrap and the host toolchain) whose steps share the engine directory; its
//! queries live in `docker.rs`, its command in `cmd/engine.rs`.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use crate::proc::{Command, Stdio};

use anyhow::{bail, Context};

use crate::{
    docker::{missing_images, probe},
    engine_config::ImageStore,
    proc::{capture_with_timeout, run_checked, send_signal},
    registry::{self, Registry},
};

/// The Debian release the images are based on, and the suite Docker's packages come from.
const DEBIAN_SUITE: &str = "bookworm";
const ENGINE_SUITE: &str = "forky";
/// The oldest Docker the private engine runs. Measured (docs/SCALING.md, run 8): Docker 26.1's
/// BuildKit (0.13) walks every cache record linked to a build's steps to write the build's
/// history record, after every build; at 64 images that walk and its garbage were about 45% of
/// dockerd's CPU. Docker 28.5 (Debian testing) skips it: the 64 images after a change in common
/// took 16-19 s there against 25 s on 26.1, on the same machine.
pub const ENGINE_MAJOR: u32 = 28;
/// The apt source and pin `up` writes, and the names earlier versions wrote (removed).
const APT_SOURCE: &str = "/etc/apt/sources.list.d/attune-engine.sources";
const APT_PIN: &str = "/etc/apt/preferences.d/attune-engine";
const OLD_APT_FILES: [&str; 2] = [
    "/etc/apt/sources.list.d/attune-engine-trixie.sources",
    "/etc/apt/preferences.d/attune-engine-trixie",
];

/// The major version in `dockerd --version`'s output (`Docker version 26.1.5+dfsg1, build ...`).
pub fn docker_major(version_text: &str) -> Option<u32> {
    major(version_text.split("version").nth(1)?)
}

/// The major version of a version (`26.1.5+dfsg1-9` -> 26).
fn major(version: &str) -> Option<u32> {
    version.trim_start().split('.').next()?.trim().parse().ok()
}

/// The major version of Debian's docker.io package, when it is installed (`26.1.5+dfsg1-9`):
/// only the package `up` installs is ever upgraded, never another Docker on this machine.
fn installed_major() -> Option<u32> {
    let out = crate::proc::output(Command::new("dpkg-query").args([
        "-W",
        "-f=${db:Status-Status} ${Version}",
        "docker.io",
    ]))
    .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    major(text.strip_prefix("installed ")?)
}

/// Whether the installed docker.io is older than [`ENGINE_MAJOR`].
fn installed_outdated() -> bool {
    installed_major().is_some_and(|m| m < ENGINE_MAJOR)
}
pub const RUNTIME_IMAGE: &str = "debian:bookworm-slim";

pub fn rust_image(rust_version: &str) -> String {
    format!("rust:{rust_version}-slim-{DEBIAN_SUITE}")
}

/// Where the private engine keeps its state.
#[derive(Debug, Clone)]
pub struct EngineDir {
    pub root: PathBuf,
}

impl EngineDir {
    pub fn from_env() -> EngineDir {
        let root = std::env::var_os("ATTUNE_ENGINE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/lib/attune-engine"));
        EngineDir { root }
    }
    pub fn socket(&self) -> PathBuf {
        self.root.join("docker.sock")
    }
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }
    pub fn pidfile(&self) -> PathBuf {
        self.root.join("docker.pid")
    }
    pub fn log(&self) -> PathBuf {
        self.root.join("dockerd.log")
    }
    fn dockerd_args(&self) -> Vec<String> {
        vec![
            format!("--data-root={}", self.root.join("data").display()),
            format!("--exec-root={}", self.root.join("exec").display()),
            format!("--pidfile={}", self.pidfile().display()),
            format!("--host={}", self.docker_host()),
            format!("--config-file={}", self.config_file().display()),
        ]
    }
    /// The daemon's configuration ([`crate::engine_config`]): its image store (containerd's by
    /// default, without which the default docker driver refuses `--cache-to type=local|registry`:
    /// the layer cache could not leave the engine), and the build cache's garbage collection.
    pub fn config_file(&self) -> PathBuf {
        self.root.join("daemon.json")
    }
    /// Whether the running daemon was started with this version's configuration (an engine
    /// started by an older xtask has no `--config-file`, hence no containerd image store, or an
    /// older `daemon.json`, such as one without the build cache's sizes) and
    /// from the installed binary (an upgrade replaced it: `/proc/PID/exe` says `(deleted)`).
    pub fn runs_current_config(&self, pid: u32) -> bool {
        let replaced = fs::read_link(format!("/proc/{pid}/exe"))
            .is_ok_and(|exe| exe.to_string_lossy().ends_with(" (deleted)"));
        if replaced {
            return false;
        }
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let config = format!("--config-file={}", self.config_file().display());
        cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == config.as_bytes())
            && self.config().is_some()
    }
    /// The image store and build-cache sizes this directory's `daemon.json` names, when it has
    /// this xtask's shape (fixed when the daemon started: [`crate::engine_config`]).
    pub fn config(&self) -> Option<crate::engine_config::Config> {
        crate::engine_config::parse(&fs::read_to_string(self.config_file()).ok()?)
    }
    /// The running daemon's config, when it runs with this xtask's configuration.
    pub fn running_config(&self) -> Option<crate::engine_config::Config> {
        let pid = self.running_pid()?;
        self.runs_current_config(pid)
            .then(|| self.config())
            .flatten()
    }
    /// The image store of the running daemon, when it runs with this xtask's configuration.
    pub fn running_store(&self) -> Option<ImageStore> {
        self.running_config().map(|c| c.store)
    }
    /// This directory's disk under its daemon's GC floor now (the sizes its `daemon.json` names):
    /// the free GiB and the floor, if so.
    pub fn under_gc_floor(&self) -> Option<(u64, u64)> {
        let gc = self.config()?.gc;
        let free = crate::engine_config::disk_space(&self.root)
            .ok()?
            .free_bytes;
        crate::engine_config::under_floor(gc, free).then_some((free >> 30, gc.min_free_gib))
    }
    /// Whether the configured engine (`DOCKER_HOST`) is this one.
    pub fn in_use(&self) -> bool {
        std::env::var("DOCKER_HOST").ok() == Some(self.docker_host())
    }
    /// The pid of the dockerd this directory's pid file names, if that process is alive and
    /// really is our dockerd (a pid file left by a killed daemon is stale).
    pub fn running_pid(&self) -> Option<u32> {
        crate::proc::live_pid(
            &self.pidfile(),
            &["dockerd", &self.socket().to_string_lossy()],
        )
    }
}

/// Points `DOCKER_HOST` at the private engine when the caller configured none, the default socket
/// does not accept connections, and the private engine is running. Call once at startup, before
/// threads.
pub fn use_private_engine_if_needed() {
    let default_answers = std::os::unix::net::UnixStream::connect("/var/run/docker.sock").is_ok();
    if user_configured_engine().is_some() || default_answers {
        return;
    }
    let dir = EngineDir::from_env();
    if dir.running_pid().is_some() {
        std::env::set_var("DOCKER_HOST", dir.docker_host());
    }
}

/// The engine the user named, in words (`DOCKER_HOST=...`, `DOCKER_CONTEXT=...`, or the docker
/// context of the CLI's config.json), as it was when the xtask started: such an engine is never
/// replaced by the private one. `None` when nothing is configured.
pub fn user_configured_engine() -> Option<String> {
    static USER: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    USER.get_or_init(|| {
        let config_dir = std::env::var_os("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker")));
        let config = config_dir.and_then(|d| std::fs::read_to_string(d.join("config.json")).ok());
        configured_engine(
            std::env::var("DOCKER_HOST").ok().as_deref(),
            std::env::var("DOCKER_CONTEXT").ok().as_deref(),
            config.as_deref(),
        )
    })
    .clone()
}

/// [`user_configured_engine`] from the two variables and the CLI's config.json text.
fn configured_engine(
    host: Option<&str>,
    context: Option<&str>,
    config: Option<&str>,
) -> Option<String> {
    if let Some(host) = host.filter(|h| !h.is_empty()) {
        return Some(format!("DOCKER_HOST={host}"));
    }
    if let Some(context) = context.filter(|c| !c.is_empty() && *c != "default") {
        return Some(format!("DOCKER_CONTEXT={context}"));
    }
    let config: serde_json::Value = serde_json::from_str(config?).ok()?;
    let current = config.get("currentContext")?.as_str()?;
    (!current.is_empty() && current != "default")
        .then(|| format!("docker context `{current}` (the CLI's config.json)"))
}

/// Makes sure an engine with buildx and the base images is reachable, starting the private one if
/// needed. Used by `engine up` and by every command that needs an engine.
/// `store`: the image store the private engine must use (none: the one it uses, containerd's for
/// a new one); a private engine on the other store is restarted.
pub fn up(root: &Path, dir: &EngineDir, store: Option<ImageStore>) -> anyhow::Result<()> {
    let before = probe();
    let other_store = store.is_some_and(|s| dir.running_store() != Some(s));
    let ours_outdated = dir
        .running_pid()
        .is_some_and(|pid| !dir.runs_current_config(pid) || installed_outdated() || other_store)
        && dir.in_use();
    if let Some(wanted) = store.filter(|_| other_store && !dir.in_use() && before.reachable()) {
        let (engine, hint) = match user_configured_engine() {
            Some(engine) => (engine, "unset it (or switch the docker context)"),
            None => (
                "the default socket's engine".to_string(),
                "stop that engine",
            ),
        };
        bail!(
            "engine up --image-store {}: the engine in use is {engine}, not the private one, whose image store this sets\n  hint: {hint}, or export DOCKER_HOST={}",
            wanted.name(),
            dir.docker_host()
        );
    }
    if before.reachable() && before.buildx_version.is_some() && !ours_outdated {
        eprintln!(
            "engine: Docker {} reachable{}",
            before.server_version.as_deref().unwrap_or("?"),
            docker_host_note()
        );
    } else {
        require_root("start a private Docker engine")?;
        install_packages()?;
        start_dockerd_with(dir, &[], store)?;
        std::env::set_var("DOCKER_HOST", dir.docker_host());
        let after = probe();
        if !after.reachable() {
            bail!(
                "the private dockerd did not answer: {}; see its log {}",
                after.error.unwrap_or_default(),
                dir.log().display()
            );
        }
        if after.buildx_version.is_none() {
            bail!("`docker buildx version` fails although docker-buildx is installed; check `docker buildx ls`");
        }
        eprintln!(
            "engine: private dockerd {} up (pid {}), buildx {}\n  point your shell at it with: export DOCKER_HOST={}",
            after.server_version.as_deref().unwrap_or("?"),
            dir.running_pid().map(|p| p.to_string()).unwrap_or_else(|| "?".into()),
            after.buildx_version.as_deref().unwrap_or("?"),
            dir.docker_host()
        );
    }
    ensure_base_images(root, dir)?;
    ensure_registry(dir)
}

/// The local registry beside the engine (see `registry`): installed from Debian's
/// `docker-registry` when missing, started when not running.
fn ensure_registry(dir: &EngineDir) -> anyhow::Result<()> {
    let registry = Registry::new(&dir.root)?;
    if registry.running_pid().is_some() && registry::answers(registry.addr) {
        return registry.up();
    }
    if which::which(registry::BINARY).is_err() {
        require_root("install the local registry (Debian's docker-registry)")?;
        install(&[registry::BINARY.to_string()])?;
    }
    registry.up()
}

pub fn docker_host_note() -> String {
    match std::env::var("DOCKER_HOST") {
        Ok(host) => format!(" at {host}"),
        Err(_) => String::new(),
    }
}

pub fn down(dir: &EngineDir) -> anyhow::Result<()> {
    Registry::new(&dir.root)?.down()?;
    stop_dockerd(dir);
    Ok(())
}

/// Stops the dockerd `dir`'s pid file names, if it is ours and alive (SIGTERM, SIGKILL after 30 s).
pub fn stop_dockerd(dir: &EngineDir) {
    let Some(pid) = dir.running_pid() else {
        eprintln!(
            "engine: no private dockerd of ours is running (pid file {})",
            dir.pidfile().display()
        );
        let _ = fs::remove_file(dir.pidfile());
        return;
    };
    send_signal(pid as i32, rustix::process::Signal::TERM);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    if Path::new(&format!("/proc/{pid}")).exists() {
        eprintln!("engine: dockerd {pid} ignored SIGTERM for 30 s, killing it");
        send_signal(pid as i32, rustix::process::Signal::KILL);
    }
    eprintln!("engine: private dockerd (pid {pid}) stopped");
}

/// The base images the Dockerfiles name by default.
pub fn base_images(root: &Path) -> anyhow::Result<Vec<String>> {
    let rust_version = crate::workspace::rust_version(root)?;
    Ok(vec![rust_image(&rust_version), RUNTIME_IMAGE.to_string()])
}

fn require_root(what: &str) -> anyhow::Result<()> {
    let euid = rustix::process::geteuid().as_raw();
    if euid != 0 {
        bail!("to {what} this must run as root (uid {euid}); run `sudo cargo xtask engine up`, or start Docker yourself and set DOCKER_HOST");
    }
    Ok(())
}

fn buildx_installed() -> bool {
    [
        "/usr/libexec/docker/cli-plugins/docker-buildx",
        "/usr/lib/docker/cli-plugins/docker-buildx",
        "/usr/local/lib/docker/cli-plugins/docker-buildx",
        "/usr/local/libexec/docker/cli-plugins/docker-buildx",
    ]
    .iter()
    .any(|p| Path::new(p).exists())
}

/// Installs dockerd, buildx and compose from Debian testing, pinned so that nothing else comes
/// from it, plus debootstrap from the default suite. Does nothing when all are present and the
/// dockerd is not older than [`ENGINE_MAJOR`]; an older one is upgraded with the other three.
fn install_packages() -> anyhow::Result<()> {
    let upgrade = installed_outdated();
    let mut wanted: Vec<String> = Vec::new();
    if upgrade || which::which("dockerd").is_err() {
        wanted.push(format!("docker.io/{ENGINE_SUITE}"));
    }
    if upgrade || !buildx_installed() {
        wanted.push(format!("docker-buildx/{ENGINE_SUITE}"));
    }
    if upgrade || !Path::new("/usr/libexec/docker/cli-plugins/docker-compose").exists() {
        wanted.push(format!("docker-compose/{ENGINE_SUITE}"));
    }
    if upgrade || which::which("docker").is_err() {
        wanted.push(format!("docker-cli/{ENGINE_SUITE}"));
    }
    if which::which("debootstrap").is_err() {
        wanted.push("debootstrap".into());
    }
    if wanted.is_empty() {
        return Ok(());
    }
    if which::which("apt-get").is_err() {
        bail!("cannot install {}: no apt-get on this machine (the private engine needs Debian's packages); install Docker with buildx yourself and set DOCKER_HOST", wanted.join(" "));
    }
    let mirror = debian_mirror()?;
    for old in OLD_APT_FILES {
        let _ = fs::remove_file(old);
    }
    write_if_changed(
        Path::new(APT_SOURCE),
        &format!(
            "# Added by `cargo xtask engine up`: Docker's packages from Debian {ENGINE_SUITE}, pinned low below.\n\
             Types: deb\nURIs: {mirror}\nSuites: {ENGINE_SUITE}\nComponents: main\n\
             Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        ),
    )?;
    write_if_changed(
        Path::new(APT_PIN),
        &format!("Package: *\nPin: release n={ENGINE_SUITE}\nPin-Priority: 100\n"),
    )?;
    eprintln!("engine: installing {} (from {mirror})", wanted.join(" "));
    match install(&wanted) {
        // an engine that runs keeps running when its upgrade cannot be installed
        Err(err) if upgrade && which::which("dockerd").is_ok() => {
            eprintln!("warning: engine: the upgrade to Docker {ENGINE_MAJOR} from Debian {ENGINE_SUITE} failed ({err:#}); the installed engine stays");
            Ok(())
        }
        other => other,
    }
}

/// `apt-get update` and `apt-get install` of `packages` (names, or `name/suite`).
fn install(packages: &[String]) -> anyhow::Result<()> {
    if which::which("apt-get").is_err() {
        bail!(
            "cannot install {}: no apt-get on this machine",
            packages.join(" ")
        );
    }
    run_checked(
        Command::new("apt-get").args(["update", "-q"]),
        "apt-get update",
    )?;
    let mut install = Command::new("apt-get");
    install
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(packages);
    run_checked(&mut install, "apt-get install")?;
    Ok(())
}

/// The Debian mirror of the machine's own apt sources (never written into the repository).
pub fn debian_mirror() -> anyhow::Result<String> {
    let mut texts = Vec::new();
    if let Ok(entries) = fs::read_dir("/etc/apt/sources.list.d") {
        for entry in entries.flatten() {
            let path = entry.path();
            if path
                .extension()
                .is_some_and(|e| e == "sources" || e == "list")
                && !path.to_string_lossy().contains("attune-engine")
            {
                texts.push(fs::read_to_string(&path).unwrap_or_default());
            }
        }
    }
    texts.push(fs::read_to_string("/etc/apt/sources.list").unwrap_or_default());
    texts
        .iter()
        .find_map(|text| mirror_from_sources(text))
        .context("no Debian mirror for bookworm found in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list")
}

/// The first URI serving the main Debian suite, from deb822 `.sources` or one-line `.list` text.
fn mirror_from_sources(text: &str) -> Option<String> {
    // deb822: paragraphs with URIs: and Suites:
    for paragraph in text.split("\n\n") {
        let field = |name: &str| {
            paragraph
                .lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        };
        if let (Some(uris), Some(suites)) = (field("URIs:"), field("Suites:")) {
            if suites.split_whitespace().any(|s| s == DEBIAN_SUITE) {
                return uris.split_whitespace().next().map(str::to_string);
            }
        }
    }
    // one-line format: deb [opts] URI suite components
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace().filter(|w| !w.starts_with('['));
        (words.next()? == "deb").then_some(())?;
        let uri = words.next()?;
        (words.next()? == DEBIAN_SUITE).then(|| uri.to_string())
    })
}

/// Starts a dockerd for `dir` (unless it already runs with this configuration and `store`), with
/// `extra` arguments after the directory's own (a second engine's bridge, for instance). `store`
/// none: the store its `daemon.json` names, else containerd's.
pub fn start_dockerd_with(
    dir: &EngineDir,
    extra: &[String],
    store: Option<ImageStore>,
) -> anyhow::Result<()> {
    let running = dir.running_store();
    let store = store
        .or(running)
        .or(dir.config().map(|c| c.store))
        .unwrap_or_default();
    if let Some(pid) = dir.running_pid() {
        if running == Some(store) {
            eprintln!(
                "engine: private dockerd already running (pid {pid}, {} image store)",
                store.name()
            );
            return wait_for_socket(dir);
        }
    }
    fs::create_dir_all(&dir.root)
        .with_context(|| format!("cannot create {}", dir.root.display()))?;
    // before any daemon stops: a disk whose size cannot be read leaves the running one alone
    let (config, text) = crate::engine_config::for_dir(&dir.root, store)?;
    if let Some(pid) = dir.running_pid() {
        match running {
            Some(other) => eprintln!(
                "engine: private dockerd (pid {pid}) uses the {} image store; restarting it with the {} one (each store keeps its own images and build cache; switch back to see them again)",
                other.name(),
                store.name()
            ),
            None => eprintln!("engine: private dockerd (pid {pid}) runs an older binary or configuration; restarting it"),
        }
        stop_dockerd(dir);
    }
    write_if_changed(&dir.config_file(), &text)?;
    eprintln!(
        "engine: {} image store; build cache: {} ({})",
        store.name(),
        config.gc,
        dir.config_file().display()
    );
    // a pid file or socket left by a daemon that was killed is stale
    let _ = fs::remove_file(dir.pidfile());
    let _ = fs::remove_file(dir.socket());
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.log())
        .with_context(|| format!("cannot open {}", dir.log().display()))?;
    let mut cmd = Command::new("dockerd");
    cmd.args(dir.dockerd_args())
        .args(extra)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // a daemon: Ctrl-C in the terminal that started it must not stop the engine
    let child = crate::proc::spawn_daemon(&mut cmd).context("cannot start dockerd")?;
    eprintln!(
        "engine: started dockerd (pid {}), log {}",
        child.id(),
        dir.log().display()
    );
    wait_for_socket(dir)
}

fn wait_for_socket(dir: &EngineDir) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ok = crate::proc::status(
            Command::new("docker")
                .args([
                    "--host",
                    &dir.docker_host(),
                    "version",
                    "--format",
                    "{{.Server.Version}}",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .is_ok_and(|s| s.success());
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "dockerd did not answer on {} within 60 s; see {}",
                dir.socket().display(),
                dir.log().display()
            );
        }
        thread::sleep(Duration::from_millis(250));
    }
}

/// Pulls the base images, or, when no registry answers, makes them locally.
fn ensure_base_images(root: &Path, dir: &EngineDir) -> anyhow::Result<()> {
    let rust_version = crate::workspace::rust_version(root)?;
    let rust = rust_image(&rust_version);
    let missing = missing_images(&[rust.clone(), RUNTIME_IMAGE.to_string()]);
    if missing.is_empty() {
        return Ok(());
    }
    let mut to_make = Vec::new();
    for image in missing {
        let pulled = capture_with_timeout(
            Command::new("docker").args(["pull", "--quiet", &image]),
            Duration::from_secs(60),
        );
        match pulled {
            Ok(_) => eprintln!("engine: pulled {image}"),
            Err(_) => to_make.push(image),
        }
    }
    if to_make.is_empty() {
        return Ok(());
    }
    require_root("create base images with debootstrap")?;
    if which::which("debootstrap").is_err() {
        bail!("no registry answers and debootstrap is missing: `apt-get install debootstrap`, then run `cargo xtask engine up` again");
    }
    let host_rust = capture_with_timeout(
        Command::new("rustc").arg("--version"),
        Duration::from_secs(10),
    )
    .context(
        "the local rust image is made from the host's toolchain, but `rustc --version` fails",
    )?;
    if !host_rust.contains(&format!(" {rust_version}.")) {
        eprintln!(
            "engine: warning: the host has {} but the workspace's rust-version is {rust_version}; the local {rust} carries the host's toolchain",
            host_rust.trim()
        );
    }
    let mirror = debian_mirror()?;
    let work = dir.root.join("rootfs");
    let _ = fs::remove_dir_all(&work);
    let jobs: Vec<(String, &str)> = to_make
        .iter()
        .map(|image| {
            let include = if *image == rust {
                "ca-certificates,gcc,libc6-dev"
            } else {
                "ca-certificates"
            };
            (image.clone(), include)
        })
        .collect();
    thread::scope(|s| -> anyhow::Result<()> {
        let handles: Vec<_> = jobs
            .iter()
            .map(|(image, include)| {
                let target = work.join(image.replace([':', '/'], "_"));
                let mirror = mirror.clone();
                let is_rust = *image == rust;
                s.spawn(move || make_base_image(image, include, &target, &mirror, is_rust))
            })
            .collect();
        for handle in handles {
            handle.join().expect("base image thread panicked")?;
        }
        Ok(())
    })?;
    let _ = fs::remove_dir_all(&work);
    Ok(())
}

fn make_base_image(
    image: &str,
    include: &str,
    rootfs: &Path,
    mirror: &str,
    with_rust: bool,
) -> anyhow::Result<()> {
    eprintln!(
        "engine: no registry answers; making {image} with debootstrap ({DEBIAN_SUITE}, minbase)"
    );
    fs::create_dir_all(rootfs)?;
    let log = rootfs.with_extension("debootstrap.log");
    let log_file = fs::File::create(&log)?;
    let status = crate::proc::status(
        Command::new("debootstrap")
            .args([
                "--variant=minbase",
                &format!("--include={include}"),
                DEBIAN_SUITE,
            ])
            .arg(rootfs)
            .arg(mirror)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file),
    )
    .context("cannot run debootstrap")?;
    if !status.success() {
        bail!("debootstrap for {image} failed; see {}", log.display());
    }
    // the machine may reach registries through an intercepting proxy whose CA only the host trusts
    let host_ca = Path::new("/etc/ssl/certs/ca-certificates.crt");
    if host_ca.exists() {
        fs::copy(host_ca, rootfs.join("etc/ssl/certs/ca-certificates.crt"))
            .context("cannot copy the host CA bundle into the image")?;
    }
    let mut changes =
        vec!["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()];
    if with_rust {
        let sysroot = capture_with_timeout(
            Command::new("rustc").args(["--print", "sysroot"]),
            Duration::from_secs(10),
        )?;
        let sysroot = PathBuf::from(sysroot.trim());
        let dest = rootfs.join("usr/local/rust");
        fs::create_dir_all(&dest)?;
        for part in ["bin", "lib", "libexec"] {
            if sysroot.join(part).exists() {
                run_checked(
                    Command::new("cp")
                        .arg("-a")
                        .arg(sysroot.join(part))
                        .arg(&dest),
                    "copy the host Rust toolchain",
                )?;
            }
        }
        changes = vec![
            "ENV PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            "ENV CARGO_HOME=/usr/local/cargo".into(),
        ];
    }
    let mut import = Command::new("docker");
    import.arg("import");
    for change in &changes {
        import.args(["--change", change]);
    }
    import.args(["-", image]);
    crate::proc::pipe(
        Command::new("tar").arg("-C").arg(rootfs).args(["-c", "."]),
        import.stdout(Stdio::null()),
        &format!("tar | docker import of {image}"),
    )?;
    eprintln!("engine: made {image} locally");
    Ok(())
}

fn write_if_changed(path: &Path, text: &str) -> anyhow::Result<()> {
    if fs::read_to_string(path).ok().as_deref() == Some(text) {
        return Ok(());
    }
    let mut file =
        fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_engine_the_user_named_is_reported() {
        assert_eq!(configured_engine(None, None, None), None);
        assert_eq!(
            configured_engine(Some("unix:///dead.sock"), Some("ctx"), None).as_deref(),
            Some("DOCKER_HOST=unix:///dead.sock")
        );
        assert_eq!(
            configured_engine(None, Some("remote"), None).as_deref(),
            Some("DOCKER_CONTEXT=remote")
        );
        assert_eq!(configured_engine(Some(""), Some("default"), None), None);
        assert_eq!(
            configured_engine(None, None, Some(r#"{"currentContext": "k8s"}"#)).as_deref(),
            Some("docker context `k8s` (the CLI's config.json)")
        );
        assert_eq!(
            configured_engine(None, None, Some(r#"{"currentContext": "default"}"#)),
            None
        );
    }

    #[test]
    fn docker_major_versions() {
        assert_eq!(
            docker_major("Docker version 26.1.5+dfsg1, build a72d7cd\n"),
            Some(26)
        );
        assert_eq!(
            docker_major("Docker version 28.5.2+dfsg4, build x"),
            Some(28)
        );
        assert_eq!(docker_major("dockerd: not found"), None);
        assert!(docker_major("Docker version 26.1.5").unwrap() < ENGINE_MAJOR);
    }

    #[test]
    fn mirror_from_deb822_sources() {
        let text = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n\
                    Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n";
        assert_eq!(
            mirror_from_sources(text).as_deref(),
            Some("http://mirror.example/debian")
        );
    }

    #[test]
    fn mirror_from_one_line_list() {
        let text = "# comment\ndeb [arch=amd64] http://m.example/debian bookworm main\n";
        assert_eq!(
            mirror_from_sources(text).as_deref(),
            Some("http://m.example/debian")
        );
        assert_eq!(
            mirror_from_sources("deb http://m.example/debian trixie main"),
            None
        );
    }

    #[test]
    fn rust_image_names() {
        assert_eq!(rust_image("1.95"), "rust:1.95-slim-bookworm");
    }
}
