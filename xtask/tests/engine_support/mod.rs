//! What the tests on the real engine share (engine_guards.rs, cache_flow.rs): the gate, the
//! xtask binary run as a user would, `docker` pointed at the engine the xtask uses, and a
//! temporary copy of the workspace.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
};

pub fn enabled(test: &str) -> bool {
    let on = std::env::var_os("ATTUNE_ENGINE_TESTS").is_some_and(|v| v == "1");
    if !on {
        eprintln!(
            "{test}: needs the real engine; `cargo xtask ci` runs it (ATTUNE_ENGINE_TESTS=1)"
        );
    }
    on
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The real xtask binary, run in `dir` as a user would (no cargo variables pointing elsewhere).
pub fn xtask(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("CARGO_MANIFEST_DIR")
        .env("CI", "true");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("cannot run the xtask binary");
    eprintln!(
        "$ xtask {}\nexit {:?}\n{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `docker` pointed at the engine the xtask uses (it finds the private engine by itself; a bare
/// `docker` would not when `DOCKER_HOST` is unset).
pub fn docker(args: &[&str]) -> Output {
    static HOST: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let host = HOST.get_or_init(|| {
        let out = xtask(&workspace_root(), &["engine", "status", "--json"], &[]);
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        status["docker_host"].as_str().map(String::from)
    });
    let mut cmd = Command::new("docker");
    if let Some(host) = host {
        cmd.env("DOCKER_HOST", host);
    }
    cmd.args(args).output().expect("cannot run docker")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Copies the files git tracks (plus the working tree's changes) into `dst`.
pub fn copy_workspace(src: &Path, dst: &Path) {
    let files = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(src)
        .output()
        .expect("git ls-files");
    assert!(files.status.success());
    for name in files.stdout.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let rel = Path::new(std::str::from_utf8(name).unwrap());
        let from = src.join(rel);
        if !from.is_file() {
            continue; // deleted in the working tree
        }
        let to = dst.join(rel);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(&from, &to).unwrap();
    }
}
