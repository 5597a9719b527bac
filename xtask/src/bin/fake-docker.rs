//! A fake `docker` CLI for the xtask's integration tests (`xtask/tests/build_cli.rs`).
//!
//! The tests put a link named `docker` to this binary first on PATH; environment variables choose
//! what it does. It never talks to an engine.
//!
//! - `FAKE_DOCKER_LOG=FILE`: append each invocation's argv (`["docker", ...]`, one JSON array a
//!   line) to FILE.
//! - `FAKE_DOCKER_TIMES=FILE`: append, for each `buildx build`, one JSON object a line with its
//!   `--target`, `SERVICE`, `--file` and the start and end of its cargo step (seconds since the
//!   epoch).
//! - `FAKE_DOCKER_NO_DAEMON=1`: `docker version` fails as without a reachable daemon.
//! - `FAKE_DOCKER_NO_BUILDX=1`: every `docker buildx ...` fails as without the plugin.
//! - `docker buildx build`: prints BuildKit `--progress=rawjson` events on stderr for a few steps,
//!   one of them the `[builder 7/7] RUN ... cargo build ...` step, then writes the
//!   `--metadata-file` and the `--output type=local,dest=D` directory (for `--target timings`,
//!   a small `cargo-timing.html` naming tokio, serde_derive and attune-common).
//!   - `FAKE_DOCKER_SLOW_MS=N`: the cargo step takes N ms.
//!   - `FAKE_DOCKER_FAIL=A|B`: when an argument contains A or B, the cargo step fails (exit 1,
//!     with buildx's trailing `ERROR: failed to solve: ...` line).
//!   - `FAKE_DOCKER_HANG=A|B`: when an argument contains A or B, the cargo step never ends: it
//!     starts a child process (as docker starts its buildx plugin), writes `PID CHILD_PID` to
//!     `$FAKE_DOCKER_PIDS/<pid>` (a directory) and sleeps until killed.
//!   - `FAKE_DOCKER_IGNORE_SIGTERM=1`: the hanging fake and its child ignore SIGTERM (only
//!     SIGKILL stops them).
//!   - `FAKE_DOCKER_CACHED=1`: every step comes from the cache.
//!   - The cache import helper, when its RUN prints that it holds the target caches' locks
//!     (`printf`), prints that line with its nonce, then takes `FAKE_DOCKER_IMPORT_MS=N` ms.
//! - `docker image inspect --format F IMAGE...`: for each image, `sha256:fake 1234567` when F asks
//!   for the size, else `sha256:fake`; with `FAKE_DOCKER_MISSING_IMAGES=A|B`, the images that
//!   contain A or B are missing (`No such image` on stderr, exit 1).
//! - `docker version --format` with `{{.Server.Os}}`: prints `linux/amd64`.
//! - Cache helper builds (`cargo xtask cache`): an export helper (its Dockerfile says `attune cache
//!   export helper`) writes a tar of 20 KiB of zeros per `tar -cf /out/<name>` of its RUN (a
//!   stable one and one of the rest per cache mount), `1` per `echo $count > /out/<name>` (the
//!   stable files) and a digest per `echo $list > /out/<name>` into its `--output` directory; with `FAKE_DOCKER_REUSE=1` it writes
//!   `<name>.reused` for every stable part its RUN is offered, and no stable tar for it (with
//!   `FAKE_DOCKER_REUSE=stale`, naming another id for every cache but the first);
//!   `--cache-to type=local,dest=D,...,tag=T` writes a one-blob OCI layout with tag T to D.
//! - `docker buildx du --verbose`: canned records (see `DU`).
//! - `docker compose [--project-name P] [--file F] up|ps|logs|down ...`:
//!   - `up`: with `FAKE_DOCKER_COMPOSE_UP_FAIL=MESSAGE`, prints MESSAGE on stderr and exits 1.
//!   - `ps`: prints `FAKE_DOCKER_COMPOSE_PS` (JSON lines, as compose does).
//!   - `logs`: prints `FAKE_DOCKER_COMPOSE_LOGS`.
//!   - anything else (`down`): exit 0.
//! - Anything else: exit 0 silently.

use std::{
    env, fs,
    hash::{Hash, Hasher},
    io::Write,
    path::Path,
    process::{self, Command, Stdio},
    thread,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::{json, Value};

/// What `buildx du --verbose` prints: this workspace's cargo-home, target-workspace (for
/// linux/amd64) and a namespaced target-builder-api copy, another project's cache mount, and a
/// layer.
const DU: &str = "ID:\t\tfake-home\nSize:\t\t1.5GB\nDescription:\tcached mount /cargo-home from exec /bin/sh -c cargo build\nLast used:\t2 days ago\nType:\t\texec.cachemount\n\n\
ID:\t\tfake-ws\nSize:\t\t800MB\nDescription:\tcached mount /build/target from exec /bin/sh -c cargo build with id \"/target-workspace-linux/amd64\"\nLast used:\t10 minutes ago\nType:\t\texec.cachemount\n\n\
ID:\t\tfake-api\nSize:\t\t300MB\nDescription:\tcached mount /build/target from exec x with id \"/target-builder-api-linux/amd64-verify-1\"\nLast used:\t3 weeks ago\nType:\t\texec.cachemount\n\n\
ID:\t\tfake-other\nSize:\t\t5GB\nDescription:\tcached mount /root/.m2 from exec mvn with id \"/other-project\"\nLast used:\t9 weeks ago\nType:\t\texec.cachemount\n\n\
ID:\t\tfake-layer\nSize:\t\t44.52MB\nDescription:\tmount / from exec /bin/sh -c apt-get\nLast used:\t5 minutes ago\nType:\t\tregular\n\n\
Shared:\t\t1.374GB\nPrivate:\t44.52MB\nReclaimable:\t866MB\nTotal:\t\t7.9GB\n";

/// The argument with which the fake re-runs itself as its "buildx plugin" child during a hang.
const PLUGIN: &str = "__fake-buildx-plugin";

fn main() {
    let args: Vec<String> = env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(PLUGIN) {
        sleep_forever();
    }
    if let Some(file) = env::var_os("FAKE_DOCKER_LOG") {
        let mut argv = vec!["docker".to_string()];
        argv.extend(args.iter().cloned());
        append(Path::new(&file), &Value::from(argv).to_string());
    }
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let code = match words.as_slice() {
        ["version", "--format", f] if f.contains("{{.Server.Os}}") => {
            println!("linux/amd64");
            0
        }
        ["version", ..] => version(),
        ["buildx", ..] if flag("FAKE_DOCKER_NO_BUILDX") => {
            eprintln!("docker: 'buildx' is not a docker command.\nSee 'docker --help'");
            1
        }
        ["buildx", "version", ..] => {
            println!("github.com/docker/buildx 0.13.1 fake");
            0
        }
        ["buildx", "build", ..] => build(&args[2..]),
        ["image", "inspect", rest @ ..] => inspect(rest),
        ["buildx", "du", ..] => {
            print!("{DU}");
            0
        }
        ["compose", rest @ ..] => compose(rest),
        _ => 0,
    };
    process::exit(code);
}

fn version() -> i32 {
    if flag("FAKE_DOCKER_NO_DAEMON") {
        eprintln!("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?");
        return 1;
    }
    println!("26.1.5");
    0
}

/// One line per reference, like docker; the references `FAKE_DOCKER_MISSING_IMAGES` names are
/// missing (an error on stderr, exit 1, as docker does when any is missing).
fn inspect(args: &[&str]) -> i32 {
    let format = value_of(args, "--format").unwrap_or("");
    let mut references = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if *arg == "--format" || *arg == "-f" {
            rest.next();
        } else if !arg.starts_with('-') {
            references.push(arg.to_string());
        }
    }
    let mut code = 0;
    for reference in &references {
        if matches(
            std::slice::from_ref(reference),
            "FAKE_DOCKER_MISSING_IMAGES",
        ) {
            eprintln!("Error response from daemon: No such image: {reference}");
            code = 1;
        } else if format.contains("{{.Size}}") {
            println!("sha256:fake 1234567");
        } else {
            println!("sha256:fake");
        }
    }
    code
}

/// `docker compose`: the subcommand is the first word after the global flags.
fn compose(args: &[&str]) -> i32 {
    let mut words = args.iter();
    let mut command = None;
    while let Some(word) = words.next() {
        match *word {
            "--project-name" | "-p" | "--file" | "-f" => {
                words.next();
            }
            w if w.starts_with('-') => {}
            w => {
                command = Some(w);
                break;
            }
        }
    }
    let print = |var: &str| {
        if let Ok(text) = env::var(var) {
            print!("{text}");
        }
    };
    match command {
        Some("up") => match env::var("FAKE_DOCKER_COMPOSE_UP_FAIL") {
            Ok(message) => {
                eprintln!("{message}");
                1
            }
            Err(_) => 0,
        },
        Some("ps") => {
            print("FAKE_DOCKER_COMPOSE_PS");
            0
        }
        Some("logs") => {
            print("FAKE_DOCKER_COMPOSE_LOGS");
            0
        }
        _ => 0,
    }
}

/// What one `buildx build` was asked for.
struct Build {
    target: String,
    service: Option<String>,
    dockerfile: String,
    output_dest: Option<String>,
    metadata_file: Option<String>,
    tag: Option<String>,
}

impl Build {
    fn parse(args: &[String]) -> Build {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let service = args
            .windows(2)
            .filter(|w| w[0] == "--build-arg")
            .find_map(|w| w[1].strip_prefix("SERVICE="))
            .map(str::to_string);
        let output_dest = value_of(&args, "--output").and_then(|o| {
            o.split(',')
                .find_map(|kv| kv.strip_prefix("dest="))
                .map(str::to_string)
        });
        Build {
            target: value_of(&args, "--target").unwrap_or("default").into(),
            service,
            dockerfile: value_of(&args, "--file").unwrap_or("Dockerfile").into(),
            output_dest,
            metadata_file: value_of(&args, "--metadata-file").map(str::to_string),
            tag: value_of(&args, "--tag").map(str::to_string),
        }
    }

    /// The crate the build compiles, for plausible step names.
    fn crate_name(&self) -> String {
        match &self.service {
            Some(service) => service.clone(),
            None if self.output_dest.is_some() => "core-timer-sensor".into(),
            None => "worker".into(),
        }
    }

    fn digest(&self, step: usize) -> String {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (&self.dockerfile, &self.target, &self.service, step).hash(&mut hasher);
        let h = hasher.finish();
        format!("sha256:{h:016x}{h:016x}{h:016x}{h:016x}")
    }
}

fn build(args: &[String]) -> i32 {
    let b = Build::parse(args);
    let cached = flag("FAKE_DOCKER_CACHED");
    let fail = matches(args, "FAKE_DOCKER_FAIL");
    let hang = matches(args, "FAKE_DOCKER_HANG");
    let slow = env::var("FAKE_DOCKER_SLOW_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0u64);
    let krate = b.crate_name();
    let file_name = Path::new(&b.dockerfile)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cargo_step = format!(
        "[builder 7/7] RUN --mount=type=cache,target=/cargo-home,id=cargo-home,sharing=shared \
         --mount=type=cache,target=/build/target,id=target-builder-{krate}-linux/amd64,sharing=shared \
         CARGO_HOME=/cargo-home cargo build --release --package attune-{krate}"
    );
    let (last_stage, export) = if b.output_dest.is_some() {
        (
            "[pack-binaries 1/1] COPY --from=builder /out/bin/ /".to_string(),
            "exporting to client directory",
        )
    } else {
        (
            "[runtime 3/3] COPY --from=builder /out/bin/ /usr/local/bin/".to_string(),
            "exporting to image",
        )
    };
    let before = [
        format!("[internal] load build definition from {file_name}"),
        "[internal] load metadata for docker.io/library/rust:1.95-slim-bookworm".to_string(),
        "[builder 1/7] FROM docker.io/library/rust:1.95-slim-bookworm".to_string(),
        format!("[builder 6/7] COPY crates/{krate} crates/{krate}"),
    ];
    let mut step = 0;
    for name in &before {
        simple_step(&b, step, name, cached);
        step += 1;
    }

    // the cargo step
    let digest = b.digest(step);
    step += 1;
    let started = now();
    if cached {
        emit(
            json!({"vertexes": [{"digest": digest, "name": cargo_step, "started": rfc3339(started),
            "completed": rfc3339(started), "cached": true}]}),
        );
    } else {
        emit(
            json!({"vertexes": [{"digest": digest, "name": cargo_step, "started": rfc3339(started)}]}),
        );
        let dockerfile = fs::read_to_string(&b.dockerfile).unwrap_or_default();
        if dockerfile.contains("attune cache import helper") && dockerfile.contains("printf") {
            // what the import helper's RUN prints once it holds the target caches' locks
            let nonce = arg_value(args, "ATTUNE_CACHE_NONCE").unwrap_or_default();
            log_line(
                &digest,
                &format!("attune-cache-import: target caches locked for import-{nonce}\n"),
            );
            let ms = env::var("FAKE_DOCKER_IMPORT_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0u64);
            thread::sleep(Duration::from_millis(ms));
        }
        log_line(
            &digest,
            "   Compiling attune-common v0.1.0 (/build/crates/common)\n",
        );
        log_line(
            &digest,
            &format!("   Compiling attune-{krate} v0.1.0 (/build/crates/{krate})\n"),
        );
        if hang {
            hang_forever();
        }
        thread::sleep(Duration::from_millis(slow));
    }
    let ended = now();
    record_times(&b, started, ended);
    if fail && !cached {
        log_line(
            &digest,
            "error[E0425]: cannot find value `x` in this scope\nerror: could not compile `attune` due to 1 previous error\n",
        );
        emit(
            json!({"vertexes": [{"digest": digest, "name": cargo_step, "started": rfc3339(started),
            "completed": rfc3339(ended),
            "error": "process \"/bin/sh -c cargo build --release\" did not complete successfully: exit code: 101"}]}),
        );
        eprintln!("ERROR: failed to solve: process \"/bin/sh -c cargo build --release\" did not complete successfully: exit code: 101");
        return 1;
    }
    if !cached {
        log_line(
            &digest,
            &format!(
                "    Finished `release` profile [optimized] target(s) in {:.2}s\n",
                ended - started
            ),
        );
        emit(
            json!({"vertexes": [{"digest": digest, "name": cargo_step, "started": rfc3339(started),
            "completed": rfc3339(ended)}]}),
        );
    }
    simple_step(&b, step, &last_stage, cached);
    simple_step(&b, step + 1, export, false);

    cache_outputs(args);
    if let Some(dest) = &b.output_dest {
        let dir = Path::new(dest);
        fs::create_dir_all(dir).expect("create the --output directory");
        let helper = fs::read_to_string(&b.dockerfile).unwrap_or_default();
        if helper.contains("attune cache export helper") {
            // FAKE_DOCKER_REUSE=1: every offered stable part (`echo <id> > /out/<n>.reused`) is
            // what the cache still holds
            let mut reused = Vec::new();
            let mode = env::var("FAKE_DOCKER_REUSE").unwrap_or_default();
            if mode == "1" || mode == "stale" {
                for offer in helper.split("; then echo ").skip(1) {
                    let mut words = offer.split(' ');
                    let (id, to) = (words.next().unwrap_or("-"), words.nth(1).unwrap_or(""));
                    if let (true, Some(name)) = (id != "-", to.strip_prefix("/out/")) {
                        let name = name.trim_end_matches(';');
                        // `stale`: it says it kept, for every cache but the first, an entry the
                        // location no longer has
                        let id = if mode == "stale" && !reused.is_empty() {
                            "ffff"
                        } else {
                            id
                        };
                        fs::write(dir.join(name), format!("{id}\n")).expect("write reused");
                        reused.push(name.replace(".reused", ".stable.tar"));
                    }
                }
            }
            for tar in helper.split("tar -cf /out/").skip(1) {
                let name = tar.split(' ').next().unwrap_or("");
                if !reused.iter().any(|r| r == name) {
                    fs::write(dir.join(name), [0u8; 20480]).expect("write a tar");
                }
            }
            for count in helper.split("echo $count > /out/").skip(1) {
                let name = count.split(' ').next().unwrap_or("");
                fs::write(dir.join(name), "1\n").expect("write a count");
            }
            for list in helper.split("echo $list > /out/").skip(1) {
                let name = list.split(' ').next().unwrap_or("");
                fs::write(dir.join(name), format!("{}\n", "1e".repeat(32))).expect("write a list");
            }
            return 0;
        }
        if b.target == "timings" {
            fs::write(dir.join("cargo-timing.html"), TIMING_HTML).expect("write the report");
            return 0;
        }
        fs::write(
            dir.join("attune-core-timer-sensor"),
            "#!/bin/sh\necho fake attune-core-timer-sensor\n",
        )
        .expect("write the --output binary");
    }
    if let Some(file) = &b.metadata_file {
        let mut metadata = json!({"buildx.build.ref": "fake/fake/0123456789"});
        if let Some(tag) = &b.tag {
            metadata["image.name"] = Value::from(format!("docker.io/library/{tag}"));
            metadata["containerimage.digest"] = Value::from("sha256:fake");
        }
        let _ = fs::write(
            file,
            serde_json::to_string_pretty(&metadata).expect("json") + "\n",
        );
    }
    0
}

/// What `--target timings` exports: cargo's timing report, its units cut down to three crates.
const TIMING_HTML: &str = r#"<html><script>
DURATION = 30;
const UNIT_DATA = [
  {"i": 0, "name": "tokio", "version": "1.0.0", "target": "", "start": 0.1, "duration": 12.3},
  {"i": 1, "name": "serde_derive", "version": "1.0.0", "target": "", "start": 0.1, "duration": 8.1},
  {"i": 2, "name": "attune-common", "version": "0.1.0", "target": "", "start": 12.5, "duration": 4.0}
];
const CONCURRENCY_DATA = [];
</script></html>
"#;

/// `--cache-to type=local,dest=D,...,tag=T`: a one-blob OCI layout in D, tagged T.
fn cache_outputs(args: &[String]) {
    use sha2::Digest;
    for w in args.windows(2).filter(|w| w[0] == "--cache-to") {
        let opts: Vec<(&str, &str)> = w[1]
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let get = |k: &str| opts.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
        let (Some("local"), Some(dest)) = (get("type"), get("dest")) else {
            continue;
        };
        let tag = get("tag").unwrap_or("latest");
        let blob = format!("fake layer cache of {tag}");
        let digest: String = sha2::Sha256::digest(blob.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let blobs = Path::new(dest).join("blobs/sha256");
        fs::create_dir_all(&blobs).expect("create the cache directory");
        fs::write(blobs.join(&digest), &blob).expect("write a blob");
        let index = json!({"schemaVersion": 2, "manifests": [{"digest": format!("sha256:{digest}"),
            "size": blob.len(), "annotations": {"org.opencontainers.image.ref.name": tag}}]});
        fs::write(Path::new(dest).join("index.json"), index.to_string()).expect("write index.json");
    }
}

/// A step that starts and completes (or comes from the cache) at once.
fn simple_step(b: &Build, step: usize, name: &str, cached: bool) {
    let digest = b.digest(step);
    let t = rfc3339(now());
    if cached {
        emit(
            json!({"vertexes": [{"digest": digest, "name": name, "started": t, "completed": t, "cached": true}]}),
        );
    } else {
        emit(json!({"vertexes": [{"digest": digest, "name": name, "started": t}]}));
        emit(
            json!({"vertexes": [{"digest": digest, "name": name, "started": t, "completed": rfc3339(now())}]}),
        );
    }
}

fn log_line(digest: &str, text: &str) {
    emit(
        json!({"logs": [{"vertex": digest, "stream": 1, "data": base64(text.as_bytes()),
        "timestamp": rfc3339(now())}]}),
    );
}

/// One status update, as buildx prints it: pretty-printed, `{` and `}` alone on their lines.
fn emit(status: Value) {
    let text = serde_json::to_string_pretty(&status).expect("json") + "\n";
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(text.as_bytes());
    let _ = stderr.flush();
}

/// Starts the "buildx plugin" child, says both pids, and waits to be killed.
#[allow(clippy::zombie_processes)] // never returns: the fake and its child are killed together
fn hang_forever() -> ! {
    if flag("FAKE_DOCKER_IGNORE_SIGTERM") {
        // SAFETY: setting a signal's disposition to SIG_IGN has no memory-safety preconditions;
        // the child inherits it across exec
        unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    }
    let exe = env::current_exe().expect("the fake's own path");
    let child = Command::new(exe)
        .arg(PLUGIN)
        .stdin(Stdio::null())
        .spawn()
        .expect("start the fake buildx plugin");
    if let Some(dir) = env::var_os("FAKE_DOCKER_PIDS") {
        let dir = Path::new(&dir);
        let _ = fs::create_dir_all(dir);
        let me = process::id();
        let tmp = dir.join(format!(".{me}.tmp"));
        fs::write(&tmp, format!("{me} {}\n", child.id())).expect("write the pid file");
        fs::rename(&tmp, dir.join(me.to_string())).expect("publish the pid file");
    }
    sleep_forever()
}

fn sleep_forever() -> ! {
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}

fn record_times(b: &Build, start: f64, end: f64) {
    if let Some(file) = env::var_os("FAKE_DOCKER_TIMES") {
        let line = json!({"target": b.target, "service": b.service, "tag": b.tag,
            "file": b.dockerfile, "start": start, "end": end});
        append(Path::new(&file), &line.to_string());
    }
}

/// Appends one line with a single write to a file opened with O_APPEND, so that concurrent
/// invocations do not interleave.
fn append(path: &Path, line: &str) {
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    file.write_all(format!("{line}\n").as_bytes())
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// The value of `--build-arg NAME=VALUE`.
fn arg_value(args: &[String], name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    args.windows(2)
        .filter(|w| w[0] == "--build-arg")
        .find_map(|w| w[1].strip_prefix(&prefix).map(str::to_string))
}

fn flag(name: &str) -> bool {
    env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Whether any argument contains one of the `|`-separated substrings in the variable `name`.
fn matches(args: &[String], name: &str) -> bool {
    let Ok(patterns) = env::var(name) else {
        return false;
    };
    patterns
        .split('|')
        .filter(|p| !p.is_empty())
        .any(|p| args.iter().any(|a| a.contains(p)))
}

fn value_of<'a>(args: &[&'a str], flag: &str) -> Option<&'a str> {
    args.windows(2).find(|w| w[0] == flag).map(|w| w[1])
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `2026-11-29T12:26:44.046860576Z` for seconds since the epoch.
fn rfc3339(t: f64) -> String {
    let nanos = (t * 1e9) as i128;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .expect("a time after the epoch")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formattable")
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
