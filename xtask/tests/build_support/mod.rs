//! The harness of `build_cli.rs`: a builder that runs the real xtask binary with the fake docker
//! (`src/bin/fake-docker.rs`) first on PATH, in an environment that can never reach a real engine,
//! and a temporary copy of the workspace for runs that write outputs.

use std::{
    collections::BTreeSet,
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

/// The workspace the tests belong to.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ has a parent")
        .to_path_buf()
}

/// The project's declaration (`[workspace.metadata.attune]`), read once through `cargo metadata`:
/// tests take image names and counts from it, so adding a service breaks none of them.
pub fn declaration() -> &'static Value {
    static DECL: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    DECL.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args([
                "metadata",
                "--no-deps",
                "--offline",
                "--format-version",
                "1",
            ])
            .arg("--manifest-path")
            .arg(root().join("Cargo.toml"))
            .output()
            .expect("cargo metadata runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let metadata: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata's JSON");
        metadata["metadata"]["attune"].clone()
    })
}

/// The project's images, in declaration order.
pub fn all_images() -> Vec<&'static str> {
    declaration()["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|i| i["name"].as_str().expect("an image name"))
        .collect()
}

/// One image of each kind, the first of the declaration's: a service (it has a `service`), an
/// image of its own Dockerfile and no service (a worker), a local output. What the dry-run
/// snapshots render: adding a service changes none of them.
pub fn one_of_each_kind() -> Vec<&'static str> {
    let images = declaration()["images"].as_array().expect("images");
    let first = |kind: &dyn Fn(&Value) -> bool| {
        (images.iter())
            .find(|i| kind(i))
            .and_then(|i| i["name"].as_str())
    };
    [
        first(&|i| i["service"].is_string()),
        first(&|i| !i["service"].is_string() && i["output"].is_null()),
        first(&|i| i["output"].is_string()),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The images of a declared group, in the group's order.
pub fn group(name: &str) -> Vec<&'static str> {
    declaration()["groups"][name]
        .as_array()
        .unwrap_or_else(|| panic!("no group {name}"))
        .iter()
        .map(|i| i.as_str().expect("an image name"))
        .collect()
}

/// One run of `xtask`, like just's `Test`: `Test::new().args([..]).env(..).run()`.
///
/// The child's environment is cleared and rebuilt: PATH holds the fake docker's directory (unless
/// [`Test::no_docker`]) and the toolchain's (for `cargo metadata`), `ATTUNE_ENGINE=external` (never
/// the private engine), and `DOCKER_HOST` names a socket that does not exist.
pub struct Test {
    /// Holds `bin/docker`, `logs/`, the fake's argv and time logs and its pid directory.
    pub tmp: tempfile::TempDir,
    args: Vec<OsString>,
    env: Vec<(String, OsString)>,
    cwd: PathBuf,
    docker_on_path: bool,
}

/// What a finished run printed, and its exit code.
#[derive(Debug)]
pub struct Outcome {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// Panics with the whole output unless the exit code is `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Outcome {
        assert_eq!(
            self.code,
            Some(code),
            "exit code; stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

impl Test {
    pub fn new() -> Test {
        let tmp = tempfile::Builder::new()
            .prefix("xtask-build-")
            .tempdir()
            .expect("a temporary directory");
        let bin = tmp.path().join("bin");
        fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_fake-docker"), bin.join("docker"))
            .expect("link the fake docker");
        fs::create_dir_all(tmp.path().join("pids")).unwrap();
        Test {
            tmp,
            args: Vec::new(),
            env: Vec::new(),
            cwd: root(),
            docker_on_path: true,
        }
    }

    /// `docker-build --log-dir <tmp>/logs` followed by `args`.
    pub fn docker_build<I, S>(args: I) -> Test
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let test = Test::new();
        let logs = test.log_dir();
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        // the per-service strategy exercises the most: a Dockerfile and stage per kind of image,
        // the SERVICE build argument; tests of other strategies say so
        let strategy: &[&str] = if args.iter().any(|a| a == "--strategy") {
            &[]
        } else {
            &["--strategy", "per-service"]
        };
        test.args(["docker-build"])
            .args([OsString::from("--log-dir"), logs.into_os_string()])
            .args(strategy)
            .args(args)
    }

    pub fn args<I, S>(mut self, args: I) -> Test
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: &str, value: impl Into<OsString>) -> Test {
        self.env.push((key.to_string(), value.into()));
        self
    }

    pub fn cwd(mut self, dir: &Path) -> Test {
        self.cwd = dir.to_path_buf();
        self
    }

    /// No `docker` at all on PATH.
    pub fn no_docker(mut self) -> Test {
        self.docker_on_path = false;
        self
    }

    pub fn log_dir(&self) -> PathBuf {
        self.tmp.path().join("logs")
    }

    pub fn pid_dir(&self) -> PathBuf {
        self.tmp.path().join("pids")
    }

    fn argv_log(&self) -> PathBuf {
        self.tmp.path().join("docker-argv.jsonl")
    }

    fn times_log(&self) -> PathBuf {
        self.tmp.path().join("docker-times.jsonl")
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
        cmd.args(&self.args).current_dir(&self.cwd).env_clear();
        // what cargo and rustup need to run `cargo metadata`; nothing Docker-related
        for key in [
            "HOME",
            "CARGO",
            "CARGO_HOME",
            "RUSTUP_HOME",
            "RUSTUP_TOOLCHAIN",
            "TMPDIR",
        ] {
            if let Some(value) = std::env::var_os(key) {
                cmd.env(key, value);
            }
        }
        let mut path = Vec::new();
        if self.docker_on_path {
            path.push(self.tmp.path().join("bin"));
        }
        path.push(toolchain_bin());
        cmd.env("PATH", std::env::join_paths(path).unwrap())
            .env("ATTUNE_ENGINE", "external")
            .env("ATTUNE_ENGINE_DIR", self.tmp.path().join("no-engine"))
            .env("DOCKER_HOST", "unix:///nonexistent/fake.sock")
            .env("FAKE_DOCKER_LOG", self.argv_log())
            .env("FAKE_DOCKER_TIMES", self.times_log())
            .env("FAKE_DOCKER_PIDS", self.pid_dir())
            // fake runs never go into the repository's own build history
            .env(
                "ATTUNE_HISTORY",
                if self.cwd == root() { "off" } else { "on" },
            );
        for (key, value) in &self.env {
            cmd.env(key, value);
        }
        cmd
    }

    pub fn run(&self) -> Outcome {
        let out = self
            .command()
            .stdin(Stdio::null())
            .output()
            .expect("the xtask binary runs");
        Outcome {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Starts xtask with its output captured; finish with [`wait_with_timeout`].
    pub fn spawn(&self) -> Child {
        self.command()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the xtask binary starts")
    }

    /// Every invocation of the fake docker, in order.
    pub fn docker_calls(&self) -> Vec<Vec<String>> {
        read_lines(&self.argv_log())
            .iter()
            .map(|l| serde_json::from_str(l).expect("the fake logs JSON arrays"))
            .collect()
    }

    /// The `docker buildx build` invocations.
    pub fn builds(&self) -> Vec<Vec<String>> {
        self.docker_calls()
            .into_iter()
            .filter(|argv| argv.get(1..3) == Some(&["buildx".to_string(), "build".to_string()]))
            .collect()
    }

    /// The (start, end) of each fake build's cargo step.
    pub fn cargo_intervals(&self) -> Vec<(f64, f64)> {
        read_lines(&self.times_log())
            .iter()
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("the fake logs JSON objects");
                (v["start"].as_f64().unwrap(), v["end"].as_f64().unwrap())
            })
            .collect()
    }

    /// The pids (the fake docker and its plugin child) that hanging builds wrote.
    pub fn hung_pids(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        for entry in fs::read_dir(self.pid_dir()).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let text = fs::read_to_string(entry.path()).unwrap_or_default();
            pids.extend(text.split_whitespace().map(|p| p.parse::<u32>().unwrap()));
        }
        pids
    }

    pub fn log(&self, image: &str) -> String {
        let path = self.log_dir().join(format!("{image}.log"));
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }
}

fn read_lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// The directory of the cargo running the tests (the toolchain's, which has no docker).
fn toolchain_bin() -> PathBuf {
    let cargo = std::env::var_os("CARGO").map(PathBuf::from);
    let dir = cargo
        .as_deref()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/usr/bin"));
    assert!(
        !dir.join("docker").exists(),
        "{} has a docker: the tests could reach a real engine",
        dir.display()
    );
    dir
}

/// Waits for `child` (started by [`Test::spawn`]) to exit, up to `limit`, reading its output
/// meanwhile; kills it and panics when it does not exit.
pub fn wait_with_timeout(mut child: Child, limit: Duration) -> Outcome {
    fn drain(pipe: Option<impl std::io::Read + Send + 'static>) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                text = String::from_utf8_lossy(&bytes).into_owned();
            }
            text
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    let Some(status) = status else {
        panic!("xtask did not exit within {limit:?}; stdout:\n{stdout}\nstderr:\n{stderr}");
    };
    Outcome {
        code: status.code(),
        stdout,
        stderr,
    }
}

/// Polls `cond` every 50 ms until it holds; panics with `what` after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether a process is alive: its /proc entry exists and it is not a zombie (an exited child
/// that nobody reaped yet, as a plugin orphaned to an init that does not reap is).
pub fn alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or("");
    !matches!(state, "Z" | "X" | "x")
}

/// A copy of the workspace's manifests, crates and Dockerfiles in a temporary directory, so that
/// runs write their outputs (`target/pack-binaries`) there, and files can be removed.
pub struct TempWorkspace {
    pub dir: tempfile::TempDir,
}

impl TempWorkspace {
    pub fn new() -> TempWorkspace {
        let dir = tempfile::Builder::new()
            .prefix("xtask-workspace-")
            .tempdir()
            .expect("a temporary directory");
        let root = root();
        for file in ["Cargo.toml", "Cargo.lock", ".dockerignore"] {
            if root.join(file).exists() {
                fs::copy(root.join(file), dir.path().join(file)).unwrap();
            }
        }
        copy_tree(&root.join("docker"), &dir.path().join("docker"));
        for entry in fs::read_dir(root.join("crates")).unwrap().flatten() {
            let name = entry.file_name();
            let to = dir.path().join("crates").join(&name);
            copy_tree(&entry.path(), &to);
        }
        // the xtask package itself: a stub is enough for `cargo metadata --no-deps`
        let xtask = dir.path().join("xtask");
        fs::create_dir_all(xtask.join("src")).unwrap();
        fs::write(
            xtask.join("Cargo.toml"),
            "[package]\nname = \"xtask\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n",
        )
        .unwrap();
        fs::write(xtask.join("src/main.rs"), "fn main() {}\n").unwrap();
        TempWorkspace { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Copies a directory tree, skipping `target/` directories.
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap().flatten() {
        let path = entry.path();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            if entry.file_name() != "target" {
                copy_tree(&path, &to.join(entry.file_name()));
            }
        } else if kind.is_file() {
            fs::copy(&path, to.join(entry.file_name())).unwrap();
        }
    }
}

/// The images a `--dry-run` lists, from its `# <image> -> <log>` comments.
pub fn dry_run_images(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| l.split_once("   # "))
        .filter_map(|(_, c)| c.split_once(" -> "))
        .map(|(image, _)| image.to_string())
        .collect()
}

/// The summary table's rows: image -> the rest of the row (the first line naming each image).
pub fn summary_rows(stdout: &str) -> std::collections::BTreeMap<String, String> {
    let names: BTreeSet<&str> = all_images().into_iter().collect();
    let mut rows = std::collections::BTreeMap::new();
    for line in stdout.lines() {
        if let Some((first, rest)) = line.split_once(' ') {
            if names.contains(first) {
                rows.entry(first.to_string())
                    .or_insert_with(|| rest.trim().to_string());
            }
        }
    }
    rows
}

/// The value after `flag` in an argv.
pub fn arg_after<'a>(argv: &'a [String], flag: &str) -> Vec<&'a str> {
    argv.windows(2)
        .filter(|w| w[0] == flag)
        .map(|w| w[1].as_str())
        .collect()
}

/// A process that passes for the private dockerd of its engine directory (its command line names
/// dockerd, the directory's socket and `--config-file=<dir>/daemon.json`, as `engine up` starts
/// it), behind the directory's pid file, with a `daemon.json` naming `store`. Runs given
/// `ATTUNE_ENGINE_DIR` = [`FakeDockerd::dir`] and `DOCKER_HOST` = [`FakeDockerd::host`] take it for
/// the private engine in use. Killed when dropped.
#[allow(dead_code)] // pipeline_matrix.rs and engine_cli.rs use it, build_cli.rs does not
pub struct FakeDockerd {
    pub dir: tempfile::TempDir,
    child: Child,
}

#[allow(dead_code)]
impl FakeDockerd {
    pub fn start(store: xtask::engine_config::ImageStore) -> FakeDockerd {
        use xtask::engine_config::{cache_gc, daemon_json, Config};
        let dir = tempfile::Builder::new()
            .prefix("xtask-engine-")
            .tempdir()
            .expect("a temporary directory");
        let config = dir.path().join("daemon.json");
        let gc = cache_gc(100 << 30);
        fs::write(&config, daemon_json(Config { store, gc })).unwrap();
        let socket = dir.path().join("docker.sock");
        let child = Command::new("sh")
            .args(["-c", "sleep 60", "dockerd"])
            .arg(format!("--host=unix://{}", socket.display()))
            .arg(format!("--config-file={}", config.display()))
            .spawn()
            .expect("sh runs");
        fs::write(dir.path().join("docker.pid"), child.id().to_string()).unwrap();
        FakeDockerd { dir, child }
    }

    pub fn host(&self) -> String {
        format!("unix://{}", self.dir.path().join("docker.sock").display())
    }
}

impl Drop for FakeDockerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
