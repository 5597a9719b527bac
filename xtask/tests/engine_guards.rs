//! Guards that need the real engine (issue 12, items 1, 4 and 5), run by `cargo xtask ci`'s
//! `engine-guards` step with `ATTUNE_ENGINE_TESTS=1`. Without that variable each test says so
//! and returns: plain `cargo test` never talks to the engine (ARCHITECTURE.md's invariant);
//! with it, a missing engine fails them.
//!
//! - a build argument the declaration owns is refused before anything runs (item 1);
//! - a `DOCKER_HOST` the user named is never replaced by the private engine (item 4);
//! - adding a service as AGENTS.md says works: docker-build names the missing Dockerfile stage
//!   before any build, and with that line added the new image builds and runs (item 5).

#[allow(dead_code)] // shared with cache_flow.rs
mod engine_support;

use std::fs;

use engine_support::{copy_workspace, docker, enabled, stderr, workspace_root, xtask};

#[test]
fn a_build_arg_the_declaration_owns_is_refused_before_any_build() {
    if !enabled("owned build arg") {
        return;
    }
    let root = workspace_root();
    let out = xtask(
        &root,
        &[
            "docker-build",
            "--strategy",
            "per-service",
            "--build-arg",
            "SERVICE=executor",
            "--tag",
            "guard-owned-arg",
            "api",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("SERVICE is set per image by the declaration"),
        "{}",
        stderr(&out)
    );
    // nothing was built under that tag
    let inspect = docker(&["image", "inspect", "attune-api:guard-owned-arg"]);
    assert!(!inspect.status.success());
}

#[test]
fn a_docker_host_the_user_named_is_never_replaced() {
    if !enabled("explicit DOCKER_HOST") {
        return;
    }
    let root = workspace_root();
    // the private engine answers (CI started it), yet the named engine is the one used
    let out = xtask(
        &root,
        &["docker-build", "api"],
        &[("DOCKER_HOST", "unix:///nonexistent/attune-guard.sock")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("DOCKER_HOST=unix:///nonexistent/attune-guard.sock"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn adding_a_service_as_agents_md_says_builds_and_runs() {
    if !enabled("adding a service") {
        return;
    }
    let root = workspace_root();
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    copy_workspace(&root, ws);

    // AGENTS.md, "Adding a service": the crate with its [[bin]], one image entry...
    let name = "guarddemo";
    fs::create_dir_all(ws.join(format!("crates/{name}/src"))).unwrap();
    fs::write(
        ws.join(format!("crates/{name}/Cargo.toml")),
        format!(
            "[package]\nname = \"attune-{name}\"\nversion.workspace = true\nedition.workspace = true\n\
             rust-version.workspace = true\npublish = false\n\n[[bin]]\nname = \"attune-{name}\"\n\
             path = \"src/main.rs\"\n"
        ),
    )
    .unwrap();
    fs::write(
        ws.join(format!("crates/{name}/src/main.rs")),
        format!("fn main() {{\n    println!(\"attune-{name} ok\");\n}}\n"),
    )
    .unwrap();
    let mut manifest = fs::read_to_string(ws.join("Cargo.toml")).unwrap();
    manifest.push_str(&format!(
        "\n[[workspace.metadata.attune.images]]\nname = \"{name}\"\nbinary = \"attune-{name}\"\n\
         dockerfile = \"docker/Dockerfile.optimized\"\ntarget = \"runtime\"\nservice = \"{name}\"\n\
         smoke = [[\"--version\"]]\n"
    ));
    fs::write(ws.join("Cargo.toml"), manifest).unwrap();

    // ...without the stage: reported before any build, with the line to add
    let tag = format!("guard-{}", std::process::id());
    let out = xtask(ws, &["docker-build", "--tag", &tag, name], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let line = format!("FROM service AS {name}");
    assert!(stderr(&out).contains(&line), "{}", stderr(&out));
    assert!(
        !ws.join(format!("target/xtask/logs/{name}.log")).exists(),
        "a build ran although the stage was missing"
    );

    // ...and with the line the hint names, the image builds and its binary runs
    let dockerfile = ws.join("docker/Dockerfile.workspace");
    let mut text = fs::read_to_string(&dockerfile).unwrap();
    text.push_str(&format!("\n{line}\n"));
    fs::write(&dockerfile, text).unwrap();
    let out = xtask(ws, &["docker-build", "--tag", &tag, name], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let image = format!("attune-{name}:{tag}");
    let run = docker(&["run", "--rm", &image]);
    let _ = docker(&["image", "rm", &image]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&run.stdout).trim(),
        format!("attune-{name} ok")
    );
}
