//! `cargo xtask cache` and `docker-build --cache` as the real binary against the fake docker
//! (src/bin/fake-docker.rs), in a temporary copy of the workspace: argv, the entry written, and
//! the error paths (missing location, damaged archive, strict mode).

#[allow(dead_code)] // the harness is shared with build_cli.rs
mod build_support;

use std::{fs, path::PathBuf};

use build_support::{arg_after, Outcome, TempWorkspace, Test};

fn cache(ws: &TempWorkspace, args: &[&str]) -> (Test, Outcome) {
    let t = Test::new()
        .args(["cache"])
        .args(args.iter().copied())
        .args(["--log-dir".into(), t_log(ws)])
        .cwd(ws.path());
    let out = t.run();
    (t, out)
}

fn t_log(ws: &TempWorkspace) -> String {
    ws.path().join("target/logs").display().to_string()
}

/// The one entry at `location`.
fn entry(location: &std::path::Path) -> PathBuf {
    let entries: Vec<PathBuf> = fs::read_dir(location)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    entries[0].clone()
}

fn helper_builds(t: &Test, kind: &str) -> Vec<Vec<String>> {
    t.builds()
        .into_iter()
        .filter(|argv| {
            arg_after(argv, "--file") == [format!("target/xtask/cache/{kind}.Dockerfile")]
        })
        .collect()
}

#[test]
fn export_then_import_round_trip() {
    let ws = TempWorkspace::new();
    let loc = ws.path().join("ci-cache");
    let loc_arg = loc.display().to_string();
    let (t, out) = cache(&ws, &["export", "--to", &loc_arg, "api", "worker-shell"]);
    out.expect_code(0);
    assert!(
        out.stdout
            .contains("cache: exported workspace-linux-amd64-"),
        "{}",
        out.stdout
    );
    // the builds export their layer cache, a directory per image
    let builds: Vec<Vec<String>> = t
        .builds()
        .into_iter()
        .filter(|a| arg_after(a, "--file") == ["docker/Dockerfile.workspace"])
        .collect();
    assert_eq!(builds.len(), 2);
    // (the builds run at once: the order they reach the fake docker is not fixed)
    let api = builds
        .iter()
        .find(|a| arg_after(a, "--target") == ["api"])
        .expect("the api build");
    assert_eq!(
        arg_after(api, "--cache-to"),
        ["type=local,dest=target/xtask/cache/layers-out/api,mode=max,tag=api"]
    );
    let export = helper_builds(&t, "export");
    assert_eq!(export.len(), 1);
    assert!(arg_after(&export[0], "--build-arg")[0].starts_with("ATTUNE_CACHE_NONCE="));
    let dir = entry(&loc);
    let manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let ids: Vec<&str> = manifest["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["cargo-home", "target-workspace"]);
    assert_eq!(
        manifest["layers"]["tags"],
        serde_json::json!(["api", "worker-shell"])
    );
    assert!(dir.join("mounts/cargo-home.tar.zst").is_file());
    let names: Vec<String> = fs::read_dir(&loc)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.starts_with('.')), "{names:?}");

    let (t, out) = cache(&ws, &["import", "--from", &loc_arg, "api", "worker-shell"]);
    out.expect_code(0);
    assert!(
        out.stdout
            .contains("cache: imported workspace-linux-amd64-"),
        "{}",
        out.stdout
    );
    let import = helper_builds(&t, "import");
    assert_eq!(import.len(), 1);
    assert_eq!(
        arg_after(&import[0], "--build-context"),
        ["attune-cache-archives=target/xtask/cache/import-in"]
    );
    assert!(ws
        .path()
        .join("target/xtask/cache/layers-in/index.json")
        .is_file());
}

#[test]
fn missing_location_is_a_warning_or_with_strict_an_error() {
    let ws = TempWorkspace::new();
    let loc = ws.path().join("nowhere").display().to_string();
    let (t, out) = cache(&ws, &["import", "--from", &loc]);
    out.expect_code(0);
    assert!(
        out.stderr.contains(&format!(
            "warning: cache: cache location {loc} does not exist"
        )),
        "{}",
        out.stderr
    );
    assert!(t.builds().is_empty());
    let (_, out) = cache(&ws, &["import", "--from", &loc, "--cache-strict"]);
    out.expect_code(1);
    assert!(
        out.stderr.contains("error: cache: cache location"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_damaged_archive_is_named_and_nothing_is_imported() {
    let ws = TempWorkspace::new();
    let loc = ws.path().join("ci-cache");
    let loc_arg = loc.display().to_string();
    cache(&ws, &["export", "--to", &loc_arg, "api"])
        .1
        .expect_code(0);
    let archive = entry(&loc).join("mounts/cargo-home.tar.zst");
    let bytes = fs::read(&archive).unwrap();
    fs::write(&archive, &bytes[..bytes.len() / 2]).unwrap();
    let (t, out) = cache(&ws, &["import", "--from", &loc_arg, "api"]);
    out.expect_code(0);
    assert!(
        out.stderr
            .contains("mounts/cargo-home.tar.zst is truncated or corrupt"),
        "{}",
        out.stderr
    );
    assert!(helper_builds(&t, "import").is_empty());
    let (_, out) = cache(
        &ws,
        &["import", "--from", &loc_arg, "api", "--cache-strict"],
    );
    out.expect_code(1);
}

#[test]
fn registry_locations_unreachable_is_a_warning_or_with_strict_an_error() {
    let ws = TempWorkspace::new();
    // nothing listens on port 1
    let (t, out) = cache(
        &ws,
        &["import", "--from", "registry://127.0.0.1:1/c", "api"],
    );
    out.expect_code(0);
    assert!(
        out.stderr
            .contains("warning: cache: cache registry 127.0.0.1:1 is unreachable ("),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.matches("warning: cache:").count(), 1);
    assert!(t.builds().is_empty());
    let (_, out) = cache(
        &ws,
        &[
            "import",
            "--from",
            "registry://127.0.0.1:1/c",
            "--cache-strict",
            "api",
        ],
    );
    out.expect_code(1);
    let (_, out) = cache(&ws, &["export", "--to", "registry://127.0.0.1/c"]);
    out.expect_code(2);
    assert!(out.stderr.contains("a port is needed"), "{}", out.stderr);
}

#[test]
fn export_to_a_registry_pushes_one_image_and_the_layer_tags() {
    let ws = TempWorkspace::new();
    let (t, out) = cache(
        &ws,
        &[
            "export",
            "--to",
            "registry://127.0.0.1:1/c",
            "api",
            "worker-shell",
        ],
    );
    out.expect_code(0);
    assert!(
        out.stdout.contains("to registry://127.0.0.1:1/c: "),
        "{}",
        out.stdout
    );
    let api = t
        .builds()
        .into_iter()
        .find(|a| arg_after(a, "--target") == ["api"])
        .expect("the api build");
    let to = arg_after(&api, "--cache-to");
    assert!(
        to[0].starts_with("type=registry,ref=127.0.0.1:1/c:workspace-linux-amd64-")
            && to[0].ends_with("-layers-api,mode=max"),
        "{to:?}"
    );
    let push = helper_builds(&t, "push");
    assert_eq!(push.len(), 1);
    let output = arg_after(&push[0], "--output");
    assert!(
        output[0].starts_with("type=registry,name=127.0.0.1:1/c:workspace-linux-amd64-")
            && output[0].ends_with(",compression=uncompressed"),
        "{output:?}"
    );
    let label = arg_after(&push[0], "--label");
    let manifest = label[0]
        .strip_prefix("org.attune.cache.manifest=")
        .expect("the manifest label");
    let manifest: serde_json::Value = serde_json::from_str(manifest).unwrap();
    assert_eq!(manifest["layers"]["kind"], "registry");
    // the staged entry is gone once pushed
    let push_dir = ws.path().join("target/xtask/cache/push");
    assert_eq!(fs::read_dir(push_dir).unwrap().count(), 0);
}

#[test]
fn docker_build_cache_imports_builds_and_exports_when_cargo_ran() {
    let ws = TempWorkspace::new();
    let loc = ws.path().join("ci-cache").display().to_string();
    let t = Test::docker_build(["--strategy", "workspace", "--cache", &loc, "api"]).cwd(ws.path());
    let out = t.run();
    out.expect_code(0);
    assert!(
        out.stderr.contains("does not exist; building cold"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.contains("cache: exported "), "{}", out.stdout);
    assert_eq!(helper_builds(&t, "export").len(), 1);

    // a second run imports, and with every step cached exports nothing
    let t = Test::docker_build(["--strategy", "workspace", "--cache", &loc, "api"])
        .cwd(ws.path())
        .env("FAKE_DOCKER_CACHED", "1");
    let out = t.run();
    out.expect_code(0);
    assert!(out.stdout.contains("cache: imported "), "{}", out.stdout);
    let api = t
        .builds()
        .into_iter()
        .find(|a| arg_after(a, "--target") == ["api"])
        .unwrap();
    assert_eq!(
        arg_after(&api, "--cache-from"),
        ["type=local,src=target/xtask/cache/layers-in,tag=api"]
    );
    assert!(
        out.stderr.contains("cache: no cargo step ran"),
        "{}",
        out.stderr
    );
    assert!(helper_builds(&t, "export").is_empty());
}

#[test]
fn docker_build_cache_dry_run_shows_the_helper_builds() {
    let out = Test::docker_build([
        "--strategy",
        "workspace",
        "--cache",
        "ci-cache",
        "--dry-run",
        "api",
    ])
    .no_docker()
    .run();
    out.expect_code(0);
    let commands: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("docker buildx build"))
        .collect();
    assert_eq!(commands.len(), 3, "{}", out.stdout);
    assert!(commands[0].contains("--file target/xtask/cache/import.Dockerfile"));
    assert!(
        commands[1].contains("--cache-from type=local,src=target/xtask/cache/layers-in,tag=api")
    );
    assert!(commands[2].contains("--file target/xtask/cache/export.Dockerfile"));
}
