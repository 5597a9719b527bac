//! `rollback-locked`, `restore-shared` and `lint-docker` run as the real binary on copies of the
//! project's Dockerfiles and of the fixtures, in temporary directories.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

const FIXTURES: &[&str] = &[
    "Dockerfile.continuations",
    "Dockerfile.heredoc",
    "Dockerfile.backtick",
    "Dockerfile.seed",
];
const PROJECT: &[&str] = &[
    "Dockerfile.optimized",
    "Dockerfile.worker.optimized",
    "Dockerfile.pack-binaries",
    "Dockerfile.workspace",
];

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("xtask-policy-{}-{n}", std::process::id()));
        fs::remove_dir_all(&dir).ok();
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        make_writable(&self.0);
        fs::remove_dir_all(&self.0).ok();
    }
}

fn make_writable(path: &Path) {
    if let Ok(meta) = fs::metadata(path) {
        let mut perms = meta.permissions();
        perms.set_mode(perms.mode() | 0o200);
        fs::set_permissions(path, perms).ok();
    }
    if path.is_dir() {
        for entry in fs::read_dir(path).into_iter().flatten().flatten() {
            make_writable(&entry.path());
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn xtask(args: &[&str], paths: &[PathBuf]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .args(paths)
        .current_dir(root())
        .output()
        .expect("the xtask binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Copies the project's Dockerfiles and the fixtures into `dir`; returns the copies.
fn copies(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for name in PROJECT {
        let to = dir.join(name);
        fs::copy(root().join("docker").join(name), &to).unwrap();
        out.push(to);
    }
    for name in FIXTURES {
        let to = dir.join(name);
        fs::copy(
            root().join("xtask/tests/fixtures/dockerfiles").join(name),
            &to,
        )
        .unwrap();
        out.push(to);
    }
    out
}

/// The names in a directory, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn read_all(paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .map(|p| fs::read_to_string(p).unwrap())
        .collect()
}

#[test]
fn rollback_then_restore_is_byte_identical() {
    let tmp = TempDir::new();
    let files = copies(tmp.path());
    let before = read_all(&files);

    let out = xtask(&["rollback-locked"], &files);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let locked = read_all(&files);
    for (i, name) in PROJECT.iter().enumerate() {
        assert_eq!(
            locked[i],
            before[i].replace("sharing=shared", "sharing=locked"),
            "{name}"
        );
    }
    let text = stdout(&out);
    assert!(
        text.contains("Dockerfile.optimized: 2 cache mounts -> locked"),
        "{text}"
    );
    assert!(
        text.contains("Dockerfile.backtick: 2 cache mounts -> locked"),
        "{text}"
    );

    let heredoc = &locked[PROJECT.len() + 1];
    for fake in [
        "/fake,sharing=shared",
        "/also-fake,sharing=shared",
        "/fake2,sharing=shared",
        "/fake3,sharing=shared",
        "/fake4,sharing=shared",
    ] {
        assert!(
            heredoc.contains(fake),
            "heredoc body changed: {fake}\n{heredoc}"
        );
    }
    assert!(
        heredoc.contains("/var/cache/apt,sharing=locked <<EOF"),
        "{heredoc}"
    );
    assert!(
        heredoc.contains("/root/.cache,sharing=locked <<-'ONE'"),
        "{heredoc}"
    );
    let continuations = &locked[PROJECT.len()];
    assert!(
        continuations.contains("sharing=\"locked\""),
        "{continuations}"
    );
    assert!(
        continuations.contains("sharing=locked,target=/var/cache/apt"),
        "{continuations}"
    );
    assert!(
        continuations.contains("mode=0755,ro echo ok"),
        "{continuations}"
    );
    assert!(
        continuations.contains("--mount=type=bind,source=Cargo.lock,target=/src/Cargo.lock \\"),
        "{continuations}"
    );

    let out = xtask(&["restore-shared"], &files);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let restored = read_all(&files);
    for (i, file) in files.iter().enumerate() {
        // the seed's two target caches without sharing= come back without one too
        assert_eq!(restored[i], before[i], "{}", file.display());
    }
    assert_eq!(names(tmp.path()).len(), files.len(), "records left behind");
}

#[test]
fn both_commands_are_idempotent() {
    let tmp = TempDir::new();
    let files = copies(tmp.path());
    let out = xtask(&["rollback-locked"], &files);
    assert!(out.status.success(), "{}", stderr(&out));
    let once = read_all(&files);
    let out = xtask(&["rollback-locked"], &files);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(read_all(&files), once);
    assert!(
        stdout(&out).contains("Dockerfile.optimized: already locked (2 cache mounts)"),
        "{}",
        stdout(&out)
    );

    let out = xtask(&["restore-shared"], &files);
    assert!(out.status.success(), "{}", stderr(&out));
    let restored = read_all(&files);
    let out = xtask(&["restore-shared"], &files);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(read_all(&files), restored);
    assert!(
        stdout(&out).contains("Dockerfile.optimized: nothing to restore"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn check_reports_the_mounts_not_in_the_mode_and_writes_nothing() {
    let tmp = TempDir::new();
    let files = copies(tmp.path());
    let before = read_all(&files);
    let out = xtask(&["restore-shared", "--check"], &files[..PROJECT.len()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );

    let out = xtask(&["rollback-locked", "--check"], &files);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    let name = files[0].display().to_string();
    assert!(
        text.contains(&format!(
            "{name}:34: cache mount /cargo-home has sharing=shared, not locked"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{name}:35: cache mount /build/target has sharing=shared, not locked"
        )),
        "{text}"
    );
    assert_eq!(read_all(&files), before);
}

#[test]
fn dry_run_prints_a_diff_and_writes_nothing() {
    let tmp = TempDir::new();
    let files = copies(tmp.path());
    let before = read_all(&files);
    let out = xtask(&["rollback-locked", "--dry-run"], &files[..1]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(
            "-RUN --mount=type=cache,target=/cargo-home,id=cargo-home,sharing=shared \\\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "+RUN --mount=type=cache,target=/cargo-home,id=cargo-home,sharing=locked \\\n"
        ),
        "{text}"
    );
    assert!(text.contains("@@ -31,"), "{text}");
    assert!(
        text.contains("2 cache mounts -> locked (dry run, nothing written)"),
        "{text}"
    );
    assert_eq!(read_all(&files), before);
}

#[test]
fn a_bad_file_stops_everything_with_file_and_line() {
    let tmp = TempDir::new();
    let good = tmp.path().join("Dockerfile.good");
    fs::copy(root().join("docker/Dockerfile.optimized"), &good).unwrap();
    let good_text = fs::read_to_string(&good).unwrap();
    let cases = [
        ("FROM a\nRUN --mount=type=cache,target='/x \\\n    true\n", 2, "unterminated quote"),
        ("FROM a\n\nRUN --mount=type=cache,target=/x,ro,cache true\n", 3, "invalid mount option `cache`"),
        ("FROM a\nRUN true\nRUN --mount=type=cache,target=/x \\\n  --mount=type=cache,target=/y,sharing=exclusive true\n", 4, "unknown sharing value `exclusive`"),
        ("FROM a\nRUN <<EOF\necho\n", 2, "unterminated heredoc"),
    ];
    for (text, line, message) in cases {
        let bad = tmp.path().join("Dockerfile.bad");
        fs::write(&bad, text).unwrap();
        for cmd in ["rollback-locked", "restore-shared"] {
            let out = xtask(&[cmd], &[good.clone(), bad.clone()]);
            assert_eq!(out.status.code(), Some(1), "{cmd}: {}", stderr(&out));
            let err = stderr(&out);
            assert!(
                err.contains(&format!("{}:{line}: {message}", bad.display())),
                "{cmd}: {err}"
            );
            assert!(err.contains("no file was changed"), "{err}");
            assert_eq!(fs::read_to_string(&good).unwrap(), good_text);
            assert_eq!(fs::read_to_string(&bad).unwrap(), text);
        }
    }
}

#[test]
fn missing_paths_are_usage_errors_and_change_nothing() {
    let tmp = TempDir::new();
    let good = tmp.path().join("Dockerfile.good");
    fs::copy(root().join("docker/Dockerfile.optimized"), &good).unwrap();
    let good_text = fs::read_to_string(&good).unwrap();
    let missing = tmp.path().join("Dockerfile.missing");
    let out = xtask(&["rollback-locked"], &[good.clone(), missing.clone()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("{}: no such file or directory", missing.display())),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs::read_to_string(&good).unwrap(), good_text);
}

#[test]
fn read_only_files_and_directories_change_nothing() {
    let tmp = TempDir::new();
    let good = tmp.path().join("Dockerfile.good");
    fs::copy(root().join("docker/Dockerfile.optimized"), &good).unwrap();
    let good_text = fs::read_to_string(&good).unwrap();
    let ro_dir = tmp.path().join("ro");
    fs::create_dir(&ro_dir).unwrap();
    let in_ro_dir = ro_dir.join("Dockerfile");
    fs::copy(root().join("docker/Dockerfile.pack-binaries"), &in_ro_dir).unwrap();
    fs::set_permissions(&ro_dir, fs::Permissions::from_mode(0o555)).unwrap();
    let out = xtask(&["rollback-locked"], &[good.clone(), in_ro_dir.clone()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("is read-only"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no file was changed"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs::read_to_string(&good).unwrap(), good_text);
    fs::set_permissions(&ro_dir, fs::Permissions::from_mode(0o755)).unwrap();

    let ro_file = tmp.path().join("Dockerfile.ro");
    fs::copy(root().join("docker/Dockerfile.pack-binaries"), &ro_file).unwrap();
    fs::set_permissions(&ro_file, fs::Permissions::from_mode(0o444)).unwrap();
    let out = xtask(&["rollback-locked"], &[good.clone(), ro_file.clone()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("{}: the file is read-only", ro_file.display())),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs::read_to_string(&good).unwrap(), good_text);
    let leftovers: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
}

#[test]
fn writes_keep_the_files_permissions_and_leave_no_temp_file() {
    let tmp = TempDir::new();
    let file = tmp.path().join("Dockerfile");
    fs::copy(root().join("docker/Dockerfile.worker.optimized"), &file).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
    let out = xtask(&["rollback-locked"], std::slice::from_ref(&file));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fs::metadata(&file).unwrap().permissions().mode() & 0o7777,
        0o640
    );
    assert!(fs::read_to_string(&file)
        .unwrap()
        .contains("sharing=locked"));
    assert_eq!(
        names(tmp.path()),
        [".Dockerfile.xtask-rollback.json", "Dockerfile"]
    );
}

#[test]
fn a_directory_argument_means_its_dockerfiles() {
    let tmp = TempDir::new();
    copies(tmp.path());
    fs::write(
        tmp.path().join("Dockerfile.optimized.dockerignore"),
        "target\n",
    )
    .unwrap();
    fs::write(
        tmp.path().join("README.md"),
        "--mount=type=cache,target=/x\n",
    )
    .unwrap();
    let out = xtask(
        &["rollback-locked", "--dry-run"],
        &[tmp.path().to_path_buf()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(
        text.matches("(dry run, nothing written)").count(),
        PROJECT.len() + FIXTURES.len(),
        "{text}"
    );
    assert!(
        !text.contains("dockerignore") && !text.contains("README"),
        "{text}"
    );
}

#[test]
fn lint_passes_on_the_project_and_fails_on_the_seed() {
    let out = xtask(&["lint-docker"], &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains("no findings"), "{}", stdout(&out));

    let seed = root().join("xtask/tests/fixtures/dockerfiles/Dockerfile.seed");
    let out = xtask(&["lint-docker"], std::slice::from_ref(&seed));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("xtask/tests/fixtures/dockerfiles/Dockerfile.seed:7: cache-registry-race: "),
        "{text}"
    );
    assert!(text.contains("\n  fix: "), "{text}");

    let out = xtask(&["lint-docker", "--json"], &[seed]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    let found: Vec<(String, u64)> = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            assert_eq!(
                f["file"],
                "xtask/tests/fixtures/dockerfiles/Dockerfile.seed"
            );
            assert!(f["message"].as_str().is_some_and(|m| !m.is_empty()));
            assert!(f["fix"].as_str().is_some_and(|m| !m.is_empty()));
            (
                f["id"].as_str().unwrap().to_string(),
                f["line"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected = [
        ("cache-registry-race", 7),
        ("cache-registry-race", 8),
        ("cache-mount-implicit-sharing", 9),
        ("target-cache-never-read", 9),
        ("target-cache-without-platform", 9),
        ("cargo-failure-ignored", 10),
        ("cache-registry-race", 16),
        ("cache-registry-race", 17),
        ("cache-mount-implicit-sharing", 18),
        ("target-cache-without-platform", 18),
        ("binary-from-cache-mount", 23),
    ];
    let expected: Vec<(String, u64)> = expected
        .iter()
        .map(|(id, line)| (id.to_string(), *line))
        .collect();
    assert_eq!(found, expected);
}

#[test]
fn lint_parse_errors_name_file_and_line() {
    let tmp = TempDir::new();
    let bad = tmp.path().join("Dockerfile");
    fs::write(
        &bad,
        "FROM a\nRUN --mount=type=cache,target=/x,sharing=maybe true\n",
    )
    .unwrap();
    let out = xtask(&["lint-docker"], std::slice::from_ref(&bad));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(
            "{}:2: unknown sharing value `maybe`",
            bad.display()
        )),
        "{}",
        stderr(&out)
    );
}

const CORPUS: &str = "xtask/tests/fixtures/dockerfiles/corpus";

/// Copies the corpus (the Dockerfiles only) into `dir`; returns the copies, sorted.
fn corpus(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(root().join(CORPUS)).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("Dockerfile") {
            let to = dir.join(&name);
            fs::copy(entry.path(), &to).unwrap();
            out.push(to);
        }
    }
    out.sort();
    out
}

/// Runs the xtask, killed after 20 s if it has not finished (a hang is a failure, not a wait).
fn xtask_with_deadline(args: &[&str], paths: &[PathBuf]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .args(paths)
        .current_dir(root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child.kill().ok();
    panic!("xtask {args:?} did not finish in 20 s");
}

#[test]
fn the_corpus_round_trips_byte_for_byte() {
    let tmp = TempDir::new();
    let files = corpus(tmp.path());
    assert!(files.len() >= 15, "{files:?}");
    let before: Vec<Vec<u8>> = files.iter().map(|p| fs::read(p).unwrap()).collect();
    let dir = [tmp.path().to_path_buf()];

    let out = xtask(&["rollback-locked"], &dir);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let out = xtask(&["rollback-locked", "--check"], &dir);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let onbuild = fs::read_to_string(tmp.path().join("Dockerfile.onbuild")).unwrap();
    assert!(
        onbuild.contains("ONBUILD RUN --mount=type=cache,target=/root/.m2,sharing=locked mvn"),
        "{onbuild}"
    );
    let out = xtask(&["restore-shared", "--check"], &dir);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));

    let out = xtask(&["restore-shared"], &dir);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    for (file, before) in files.iter().zip(&before) {
        let after = fs::read(file).unwrap();
        assert!(
            &after == before,
            "{} changed:\n{}",
            file.display(),
            String::from_utf8_lossy(&after)
        );
    }
    assert_eq!(names(tmp.path()).len(), files.len(), "records left behind");
    let crlf = fs::read_to_string(tmp.path().join("Dockerfile.crlf")).unwrap();
    assert!(crlf.contains("sharing=private true\r\n"), "{crlf:?}");

    let out = xtask(&["lint-docker", "--json"], &dir);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert_eq!(json["errors"], serde_json::json!([]), "{json}");
    assert_eq!(json["files"].as_array().unwrap().len(), files.len());
}

#[test]
fn restore_without_a_record_refuses_to_guess() {
    let tmp = TempDir::new();
    let file = tmp.path().join("Dockerfile");
    let text = "FROM a\nRUN --mount=type=cache,target=/x,sharing=locked true\n";
    fs::write(&file, text).unwrap();
    for args in [&["restore-shared"][..], &["restore-shared", "--check"]] {
        let out = xtask(args, std::slice::from_ref(&file));
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let all = stdout(&out) + &stderr(&out);
        assert!(
            all.contains(&format!(
                "{}:2: cache mount /x is sharing=locked and no rollback record",
                file.display()
            )) && all.contains("does not guess"),
            "{all}"
        );
        assert_eq!(fs::read_to_string(&file).unwrap(), text);
    }
}

#[test]
fn restore_keeps_other_edits_and_refuses_an_edited_mount() {
    let tmp = TempDir::new();
    let file = tmp.path().join("Dockerfile");
    let text = "FROM a\nRUN --mount=type=cache,target=/x \\\n  --mount=type=cache,target=/y,sharing=private true\n";
    fs::write(&file, text).unwrap();
    let one = std::slice::from_ref(&file);
    assert!(xtask(&["rollback-locked"], one).status.success());
    let locked = fs::read_to_string(&file).unwrap();
    fs::write(&file, format!("{locked}USER nobody\n")).unwrap();
    let out = xtask(&["restore-shared"], one);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        format!("{text}USER nobody\n")
    );

    assert!(xtask(&["rollback-locked"], one).status.success());
    let edited = fs::read_to_string(&file)
        .unwrap()
        .replace("/y,sharing=locked", "/y,sharing=shared");
    fs::write(&file, &edited).unwrap();
    let out = xtask(&["restore-shared"], one);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "{}:3: cache mount #2 (/y) changed since rollback-locked",
            file.display()
        )),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs::read_to_string(&file).unwrap(), edited);
}

#[test]
fn an_immutable_file_is_found_before_anything_is_written() {
    let tmp = TempDir::new();
    let (first, second) = (
        tmp.path().join("Dockerfile.a"),
        tmp.path().join("Dockerfile.b"),
    );
    fs::copy(root().join("docker/Dockerfile.optimized"), &first).unwrap();
    fs::copy(root().join("docker/Dockerfile.optimized"), &second).unwrap();
    let text = fs::read_to_string(&first).unwrap();
    let chattr = Command::new("chattr").arg("+i").arg(&second).output();
    if !chattr.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: this filesystem or user cannot chattr +i ({chattr:?})");
        return;
    }
    let out = xtask(&["rollback-locked"], &[first.clone(), second.clone()]);
    Command::new("chattr")
        .arg("-i")
        .arg(&second)
        .status()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{}: cannot be opened for writing",
            second.display()
        )) && err.contains("no file was changed"),
        "{err}"
    );
    assert_eq!(fs::read_to_string(&first).unwrap(), text);
    assert_eq!(names(tmp.path()), ["Dockerfile.a", "Dockerfile.b"]);
}

#[test]
fn a_failed_rename_puts_back_the_files_already_replaced() {
    let tmp = TempDir::new();
    let (first, second) = (
        tmp.path().join("Dockerfile.a"),
        tmp.path().join("Dockerfile.b"),
    );
    fs::copy(root().join("docker/Dockerfile.optimized"), &first).unwrap();
    fs::copy(root().join("docker/Dockerfile.workspace"), &second).unwrap();
    let before = read_all(&[first.clone(), second.clone()]);
    // the writes: a, a's record, b, b's record; the third fails
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["rollback-locked"])
        .args([&first, &second])
        .env("XTASK_TEST_FAIL_RENAME", "3")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{}: cannot replace it", second.display()))
            && err.contains("the files already replaced were put back (")
            && err.contains("no file was changed"),
        "{err}"
    );
    assert_eq!(read_all(&[first, second]), before);
    assert_eq!(names(tmp.path()), ["Dockerfile.a", "Dockerfile.b"]);
}

#[test]
fn one_file_named_several_ways_is_written_once() {
    let tmp = TempDir::new();
    let file = tmp.path().join("Dockerfile");
    fs::copy(root().join("docker/Dockerfile.optimized"), &file).unwrap();
    let text = fs::read_to_string(&file).unwrap();
    let alias = tmp.path().join("Dockerfile.alias");
    std::os::unix::fs::symlink("Dockerfile", &alias).unwrap();
    let paths = [file.clone(), file.clone(), tmp.path().to_path_buf(), alias];
    let out = xtask(&["rollback-locked"], &paths);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).matches("cache mounts -> locked").count(), 1);
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        text.replace("sharing=shared", "sharing=locked")
    );
    let out = xtask(&["restore-shared"], &paths);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fs::read_to_string(&file).unwrap(), text);
}

#[test]
fn temp_files_of_a_killed_run_are_removed_by_the_next() {
    let tmp = TempDir::new();
    let file = tmp.path().join("Dockerfile");
    fs::copy(root().join("docker/Dockerfile.optimized"), &file).unwrap();
    let mut dead = Command::new("true").spawn().unwrap();
    let pid = dead.id();
    dead.wait().unwrap();
    let leftover = tmp.path().join(format!(".Dockerfile.xtask-{pid}.tmp"));
    fs::write(&leftover, "FROM half-writ").unwrap();
    let out = xtask(&["rollback-locked"], std::slice::from_ref(&file));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("removed {}", leftover.display())),
        "{}",
        stdout(&out)
    );
    assert!(!leftover.exists());
}

#[test]
fn empty_directories_and_fifos_are_usage_errors() {
    let tmp = TempDir::new();
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    for args in [&["restore-shared", "--check"][..], &["lint-docker"]] {
        let out = xtask(args, std::slice::from_ref(&empty));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stdout(&out));
        assert!(
            stderr(&out).contains(&format!("{}: no Dockerfile* files", empty.display())),
            "{}",
            stderr(&out)
        );
    }
    let fifo = tmp.path().join("Dockerfile.fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    for args in [&["lint-docker"][..], &["rollback-locked"]] {
        let out = xtask_with_deadline(args, std::slice::from_ref(&fifo));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("{}: not a regular file", fifo.display())),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn lint_json_reports_a_file_it_cannot_read() {
    let tmp = TempDir::new();
    let bad = tmp.path().join("Dockerfile.bad");
    fs::write(&bad, b"FROM a\n\xff\xfe\n").unwrap();
    let good = tmp.path().join("Dockerfile.good");
    fs::copy(root().join("docker/Dockerfile.optimized"), &good).unwrap();
    let out = xtask(&["lint-docker", "--json"], &[good, bad.clone()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    let errors = json["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{json}");
    assert_eq!(errors[0]["file"], bad.display().to_string());
    assert!(
        errors[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot read")),
        "{json}"
    );
}

#[test]
fn lint_compares_rust_version_with_the_dockerfiles_own_workspace() {
    let tmp = TempDir::new();
    fs::write(
        tmp.path().join("Cargo.toml"),
        "[workspace]\nmembers = []\n\n[workspace.package]\nrust-version = \"1.80\"\n",
    )
    .unwrap();
    let docker = tmp.path().join("docker");
    fs::create_dir(&docker).unwrap();
    let file = docker.join("Dockerfile");
    fs::write(
        &file,
        "ARG RUST_VERSION=1.80\nFROM rust:${RUST_VERSION}\nRUN true\n",
    )
    .unwrap();
    let out = xtask(&["lint-docker"], std::slice::from_ref(&file));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    fs::write(
        &file,
        "ARG RUST_VERSION=1.95\nFROM rust:${RUST_VERSION}\nRUN true\n",
    )
    .unwrap();
    let out = xtask(&["lint-docker"], std::slice::from_ref(&file));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("differs from the workspace's rust-version 1.80"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn lint_reads_onbuild_run_mounts() {
    let tmp = TempDir::new();
    let file = tmp.path().join("Dockerfile");
    fs::write(
        &file,
        "FROM a\nONBUILD RUN --mount=type=cache,target=/x true\n",
    )
    .unwrap();
    let out = xtask(&["lint-docker"], std::slice::from_ref(&file));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!(
            "{}:2: cache-mount-implicit-sharing",
            file.display()
        )),
        "{}",
        stdout(&out)
    );
}
