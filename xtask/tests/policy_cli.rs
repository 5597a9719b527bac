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
            "{name}:26: cache mount /cargo-home has sharing=shared, not locked"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{name}:27: cache mount /build/target has sharing=shared, not locked"
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
    assert!(text.contains("@@ -23,"), "{text}");
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
        ("cargo-failure-ignored", 10),
        ("cache-registry-race", 16),
        ("cache-registry-race", 17),
        ("cache-mount-implicit-sharing", 18),
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
