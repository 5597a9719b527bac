//! `cargo xtask cache` and `docker-build --cache` as the real binary against the fake docker
//! (src/bin/fake-docker.rs), in a temporary copy of the workspace: argv, the entry written, and
//! the error paths (missing location, damaged archive, strict mode), Ctrl-C during a helper
//! build, and two exports to one directory at once.

#[allow(dead_code)] // the harness is shared with build_cli.rs
mod build_support;

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use build_support::{
    alive, arg_after, wait_until, wait_with_timeout, Outcome, TempWorkspace, Test,
};
use sha2::{Digest, Sha256};

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

/// A temporary workspace with an entry of `api` exported to its `ci-cache` (the location, and
/// the location as an argument).
fn with_entry() -> (TempWorkspace, PathBuf, String) {
    let ws = TempWorkspace::new();
    let loc = ws.path().join("ci-cache");
    let loc_arg = loc.display().to_string();
    cache(&ws, &["export", "--to", &loc_arg, "api"])
        .1
        .expect_code(0);
    (ws, loc, loc_arg)
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
    // the default, as for docker-build --cache: the cache mounts only, no layer cache
    let mounts_only = ws.path().join("mounts-only");
    let (t, out) = cache(
        &ws,
        &["export", "--to", &mounts_only.display().to_string(), "api"],
    );
    out.expect_code(0);
    for build in t.builds() {
        assert!(arg_after(&build, "--cache-to").is_empty(), "{build:?}");
    }
    let manifest = fs::read_to_string(entry(&mounts_only).join("manifest.json")).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    assert!(manifest["layers"].is_null(), "{manifest:#}");
    assert!(!entry(&mounts_only).join("layers").exists());

    let (t, out) = cache(
        &ws,
        &[
            "export",
            "--to",
            &loc_arg,
            "--cache-layers",
            "api",
            "worker-shell",
        ],
    );
    out.expect_code(0);
    assert!(
        out.stdout
            .contains("cache: exported workspace-linux-amd64-"),
        "{}",
        out.stdout
    );
    // with --cache-layers the builds export their layer cache, a directory per image
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
    // the target cache's id carries the engine's platform (the fake engine's linux/amd64)
    assert_eq!(ids, ["cargo-home", "target-workspace-linux/amd64"]);
    assert_eq!(
        manifest["layers"]["tags"],
        serde_json::json!(["api", "worker-shell"])
    );
    assert!(dir.join("mounts/cargo-home.tar.zst").is_file());
    assert!(dir
        .join("mounts/target-workspace-linux_amd64.tar.zst")
        .is_file());
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
    // the archives, compressed, are the helper's build context (BuildKit's ADD unpacks them)
    assert_eq!(
        import[0].last().map(String::as_str),
        Some("target/xtask/cache/import-in")
    );
    assert!(arg_after(&import[0], "--build-context").is_empty());
    assert!(ws
        .path()
        .join("target/xtask/cache/layers-in/index.json")
        .is_file());
}

/// A second export whose helper finds the stable parts unchanged links the entry's stable
/// archives into the new entry (same files, same sha256) and compresses only the rest; when the
/// entry at the location no longer has what was offered, the helper runs again, all of it.
#[test]
fn export_links_the_stable_part_the_cache_still_holds() {
    let (ws, loc, loc_arg) = with_entry();
    let read = |dir: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap()
    };
    let first = read(&entry(&loc));
    for m in first["mounts"].as_array().unwrap() {
        assert_eq!(m["stable_parts"], 1, "{first}");
        assert_eq!(m["stable_files"], 1, "{first}");
    }
    let export_as = |mode: &str| {
        let t = Test::new()
            .args(["cache", "export", "--to", &loc_arg, "api"])
            .args(["--log-dir".into(), t_log(&ws)])
            .cwd(ws.path())
            .env("FAKE_DOCKER_REUSE", mode);
        let out = t.run();
        (t, out)
    };
    let (t, out) = export_as("1");
    out.expect_code(0);
    assert_eq!(
        out.stdout
            .matches("(its stable part unchanged: linked)")
            .count(),
        2,
        "{}",
        out.stdout
    );
    let helper =
        fs::read_to_string(ws.path().join("target/xtask/cache/export.Dockerfile")).unwrap();
    for m in first["mounts"].as_array().unwrap() {
        let id = {
            use sha2::{Digest, Sha256};
            let d = Sha256::digest(m["sha256"].as_str().unwrap().as_bytes());
            d.iter().map(|b| format!("{b:02x}")).collect::<String>()
        };
        assert!(helper.contains(&format!("echo {id} > /out/")), "{helper}");
    }
    assert_eq!(helper_builds(&t, "export").len(), 1);
    let dir = entry(&loc);
    let second = read(&dir);
    for (a, b) in first["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .zip(second["mounts"].as_array().unwrap())
    {
        assert_eq!(a["sha256"], b["sha256"], "{second}");
        assert_eq!(b["stable_parts"], 1, "{second}");
        assert!(dir.join(b["file"].as_str().unwrap()).is_file(), "{second}");
    }
    // the target cache's rest, compressed anew
    let target = &second["mounts"][1];
    assert_eq!(target["more"].as_array().unwrap().len(), 1, "{second}");
    assert!(dir
        .join(target["more"][0]["file"].as_str().unwrap())
        .is_file());

    // the helper kept a stable part the location no longer has (another export replaced the
    // entry meanwhile), after the first cache's was linked: it runs again, offered nothing, and
    // all of it travels, into new files: the published entry's archives are never written
    // through a link
    use std::os::unix::fs::MetadataExt;
    let kept = ws.path().join("kept-cargo-home.tar.zst");
    let old_home = dir.join(second["mounts"][0]["file"].as_str().unwrap());
    fs::hard_link(&old_home, &kept).unwrap();
    let before = fs::read(&kept).unwrap();
    let (t, out) = export_as("stale");
    out.expect_code(0);
    assert!(!out.stdout.contains("linked"), "{}", out.stdout);
    let runs = helper_builds(&t, "export");
    assert_eq!(runs.len(), 2, "{runs:?}");
    let helper =
        fs::read_to_string(ws.path().join("target/xtask/cache/export.Dockerfile")).unwrap();
    assert!(!helper.contains("echo ffff"), "{helper}");
    assert!(!helper.contains(".reused"), "{helper}");
    let third = read(&entry(&loc));
    assert_eq!(third["mounts"][1]["stable_parts"], 1, "{third}");
    let new_home = entry(&loc).join(third["mounts"][0]["file"].as_str().unwrap());
    assert_ne!(
        fs::metadata(&new_home).unwrap().ino(),
        fs::metadata(&kept).unwrap().ino()
    );
    assert_eq!(fs::read(&kept).unwrap(), before);
    assert_ne!(third["mounts"][1]["sha256"].as_str(), None);

    // an entry with no stable part (format 1) offers nothing: one helper, all of it
    let mut old = third.clone();
    for m in old["mounts"].as_array_mut().unwrap() {
        m["stable_parts"] = serde_json::json!(0);
    }
    let dir = entry(&loc);
    fs::write(
        dir.join("manifest.json"),
        serde_json::to_string_pretty(&old).unwrap(),
    )
    .unwrap();
    let (t, out) = export_as("1");
    out.expect_code(0);
    assert!(!out.stdout.contains("linked"), "{}", out.stdout);
    assert_eq!(helper_builds(&t, "export").len(), 1);
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

/// A mount whose tar is empty (the export of a cache with nothing in it) is not handed to the
/// import helper: BuildKit's ADD would not take an empty tar for an archive, and there is nothing
/// to copy. The line says so.
#[test]
fn an_empty_archive_is_not_imported() {
    let (ws, loc, loc_arg) = with_entry();
    let manifest = entry(&loc).join("manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&manifest).unwrap()).unwrap();
    for mount in m["mounts"].as_array_mut().unwrap() {
        if mount["id"] == "cargo-home" {
            // as the export writes a cache with no file: no stable file, one empty tar
            mount["tar_bytes"] = serde_json::Value::from(10240);
            mount["stable_files"] = serde_json::Value::from(0);
            mount["stable_parts"] = serde_json::Value::from(0);
        }
    }
    fs::write(&manifest, serde_json::to_string_pretty(&m).unwrap()).unwrap();
    let (t, out) = cache(&ws, &["import", "--from", &loc_arg, "api"]);
    out.expect_code(0);
    assert!(out.stdout.contains("cargo-home empty"), "{}", out.stdout);
    let import = helper_builds(&t, "import");
    assert_eq!(import.len(), 1);
    let dockerfile =
        fs::read_to_string(ws.path().join("target/xtask/cache/import.Dockerfile")).unwrap();
    assert!(
        !dockerfile.contains("ADD cargo-home.tar.zst"),
        "{dockerfile}"
    );
    assert!(
        dockerfile.contains("ADD target-workspace-linux_amd64.tar.zst"),
        "{dockerfile}"
    );
}

#[test]
fn a_damaged_archive_is_named_and_nothing_is_imported() {
    let (ws, loc, loc_arg) = with_entry();
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
            "--cache-layers",
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

/// Issue 23: a warm engine (every step layer-cached, cargo compiles nothing) and an empty
/// location: the first run seeds it; once the location holds the entry, nothing is exported.
#[test]
fn docker_build_cache_seeds_an_empty_location_from_a_warm_engine() {
    let ws = TempWorkspace::new();
    let loc = ws.path().join("ci-cache");
    fs::create_dir_all(&loc).unwrap();
    let loc_arg = loc.display().to_string();
    let args = [
        "--force",
        "--strategy",
        "workspace",
        "--cache",
        &loc_arg,
        "api",
    ];
    let t = Test::docker_build(args)
        .cwd(ws.path())
        .env("FAKE_DOCKER_CACHED", "1");
    let out = t.run();
    out.expect_code(0);
    assert_eq!(helper_builds(&t, "export").len(), 1, "{}", out.stderr);
    assert!(out.stdout.contains("cache: exported "), "{}", out.stdout);
    entry(&loc);
    // the entry is there: a run that compiles nothing leaves it as it is
    let t = Test::docker_build(args)
        .cwd(ws.path())
        .env("FAKE_DOCKER_CACHED", "1");
    let out = t.run();
    out.expect_code(0);
    assert!(helper_builds(&t, "export").is_empty(), "{}", out.stderr);
    assert!(
        out.stderr.contains("cache: no cargo step ran; "),
        "{}",
        out.stderr
    );
}

#[test]
fn docker_build_cache_imports_builds_and_exports_when_cargo_ran() {
    let ws = TempWorkspace::new();
    let loc = ws.path().join("ci-cache").display().to_string();
    let t = Test::docker_build([
        "--strategy",
        "workspace",
        "--cache",
        &loc,
        "--cache-layers",
        "api",
    ])
    .cwd(ws.path());
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
    let t = Test::docker_build([
        "--force",
        "--strategy",
        "workspace",
        "--cache",
        &loc,
        "--cache-layers",
        "api",
    ])
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

    // without --cache-layers (the default) the builds neither read nor write a layer cache,
    // and the cache mounts still travel
    let t = Test::docker_build(["--force", "--strategy", "workspace", "--cache", &loc, "api"])
        .cwd(ws.path());
    let out = t.run();
    out.expect_code(0);
    assert!(out.stdout.contains("cache: imported "), "{}", out.stdout);
    let api = t
        .builds()
        .into_iter()
        .find(|a| arg_after(a, "--target") == ["api"])
        .unwrap();
    assert!(arg_after(&api, "--cache-from").is_empty(), "{api:?}");
    assert!(arg_after(&api, "--cache-to").is_empty(), "{api:?}");
    assert!(out.stdout.contains("cache: exported "), "{}", out.stdout);
    assert!(!out.stdout.contains("layers "), "{}", out.stdout);
}

/// The fake's cargo steps of a run (`FAKE_DOCKER_TIMES`): (Dockerfile, start, end).
fn steps(times: &Path) -> Vec<(String, f64, f64)> {
    fs::read_to_string(times)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["file"].as_str().unwrap().to_string(),
                v["start"].as_f64().unwrap(),
                v["end"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// With every cargo RUN locking its target cache, the builds start once the import helper says
/// it holds the locks, and run beside it; a Dockerfile whose RUN does not lock gets the import
/// first, whole.
#[test]
fn docker_build_cache_imports_beside_the_builds_only_when_their_runs_lock() {
    let ws = TempWorkspace::new();
    let loc = ws.path().join("ci-cache").display().to_string();
    cache(&ws, &["export", "--to", &loc, "api", "executor"])
        .1
        .expect_code(0);
    let run = |name: &str| {
        let times = ws.path().join(name);
        let t = Test::docker_build([
            "--force",
            "--strategy",
            "workspace",
            "--cache",
            &loc,
            "api",
            "executor",
        ])
        .cwd(ws.path())
        .env("FAKE_DOCKER_IMPORT_MS", "1500")
        .env("FAKE_DOCKER_TIMES", times.display().to_string());
        let out = t.run();
        out.expect_code(0);
        let steps = steps(&times);
        let import = steps
            .iter()
            .find(|s| s.0.ends_with("import.Dockerfile"))
            .cloned()
            .expect("the import helper ran");
        let builds: Vec<(String, f64, f64)> = (steps.iter())
            .filter(|s| s.0.ends_with("Dockerfile.workspace"))
            .cloned()
            .collect();
        assert_eq!(builds.len(), 2, "{steps:?}");
        (out, import, builds)
    };

    let (out, import, builds) = run("beside.jsonl");
    assert!(out.stderr.contains("beside the builds"), "{}", out.stderr);
    assert!(
        out.stdout.contains("(the builds started after "),
        "{}",
        out.stdout
    );
    for b in &builds {
        assert!(
            b.1 < import.2,
            "{b:?} started after the import {import:?} ended"
        );
    }

    // an import helper that fails after it held the locks: the builds ran (cold), a warning
    // says so, exit 0; with --cache-strict the run fails after the builds
    for (strict, code) in [(false, 0), (true, 1)] {
        let mut args = vec![
            "--force",
            "--strategy",
            "workspace",
            "--cache",
            &loc,
            "api",
            "executor",
        ];
        if strict {
            args.push("--cache-strict");
        }
        let t = Test::docker_build(args)
            .cwd(ws.path())
            .env("FAKE_DOCKER_FAIL", "import.Dockerfile");
        let out = t.run();
        out.expect_code(code);
        assert!(out.stderr.contains("beside the builds"), "{}", out.stderr);
        assert!(
            out.stderr.contains("the import helper build failed (log: "),
            "{}",
            out.stderr
        );
        if !strict {
            assert!(
                out.stderr.contains("; the builds ran cold"),
                "{}",
                out.stderr
            );
        }
        let builds = (t.builds().into_iter())
            .filter(|a| arg_after(a, "--file") == ["docker/Dockerfile.workspace"])
            .count();
        assert_eq!(builds, 2);
    }

    // without the lock in the cargo RUN the builds could overtake the import: it runs first
    let dockerfile = ws.path().join("docker/Dockerfile.workspace");
    let text = fs::read_to_string(&dockerfile).unwrap();
    assert!(text.contains("flock 9 && "));
    fs::write(&dockerfile, text.replace("flock 9 && ", "")).unwrap();
    let (out, import, builds) = run("first.jsonl");
    assert!(!out.stderr.contains("beside the builds"), "{}", out.stderr);
    assert!(out.stdout.contains("cache: imported "), "{}", out.stdout);
    assert!(!out.stdout.contains("started after"), "{}", out.stdout);
    for b in &builds {
        assert!(
            b.1 >= import.2,
            "{b:?} started before the import {import:?} ended"
        );
    }
}

/// The export helper starts beside the builds once one shows cargo compiling (its RUN then
/// waits for the target cache's lock); when it fails (in the engine: it got the lock before the
/// cargo RUN), the export runs after the builds as before; with nothing compiled none runs.
#[test]
fn docker_build_cache_exports_beside_the_builds_or_after_them() {
    let ws = TempWorkspace::new();
    let loc = ws.path().join("ci-cache").display().to_string();
    // --force: each run builds (an identical run is otherwise up to date)
    let args = [
        "--force",
        "--strategy",
        "workspace",
        "--cache",
        &loc,
        "api",
        "executor",
    ];
    let t = Test::docker_build(args).cwd(ws.path());
    let out = t.run();
    out.expect_code(0);
    let exports = helper_builds(&t, "export");
    assert_eq!(exports.len(), 1, "{exports:?}");
    let started = arg_after(&exports[0], "--build-arg");
    assert!(
        started
            .iter()
            .any(|a| a.starts_with("ATTUNE_BUILDS_STARTED=")),
        "{exports:?}"
    );
    assert!(
        out.stdout
            .contains("(helper build beside the builds, then "),
        "{}",
        out.stdout
    );

    let t = Test::docker_build(args)
        .cwd(ws.path())
        .env("FAKE_DOCKER_FAIL", "ATTUNE_BUILDS_STARTED");
    let out = t.run();
    out.expect_code(0);
    let exports = helper_builds(&t, "export");
    assert_eq!(exports.len(), 2, "{exports:?}");
    assert!(
        !(arg_after(&exports[1], "--build-arg").iter())
            .any(|a| a.starts_with("ATTUNE_BUILDS_STARTED=")),
        "{exports:?}"
    );
    assert!(out.stdout.contains("cache: exported "), "{}", out.stdout);
    assert!(
        !out.stdout.contains("beside the builds, then"),
        "{}",
        out.stdout
    );

    let t = Test::docker_build(args)
        .cwd(ws.path())
        .env("FAKE_DOCKER_CACHED", "1");
    t.run().expect_code(0);
    assert!(helper_builds(&t, "export").is_empty());
}

#[test]
fn docker_build_cache_dry_run_shows_the_helper_builds() {
    let out = Test::docker_build([
        "--strategy",
        "workspace",
        "--cache",
        "ci-cache",
        "--cache-layers",
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

// --- Ctrl-C during a helper build, concurrent exports -------------------------------------------

/// Every file under `dir` with its size and modification time (hidden staging directories too).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, SystemTime)> {
    let mut files = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d).into_iter().flatten().flatten() {
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                todo.push(entry.path());
            }
            let rel = entry.path().strip_prefix(dir).unwrap().to_path_buf();
            files.insert(rel, (meta.len(), meta.modified().unwrap()));
        }
    }
    files
}

/// Starts `cache ARGS` with the helper build of `kind` hanging, interrupts it with SIGINT once
/// the helper hangs, and checks that it exits 130 with no fake docker of the run alive a second
/// later and `location` as it was.
fn interrupt_helper(ws: &TempWorkspace, location: &Path, kind: &str, args: &[&str]) {
    let before = snapshot(location);
    let t = Test::new()
        .args(["cache"])
        .args(args.iter().copied())
        .args(["--log-dir".into(), t_log(ws)])
        .cwd(ws.path())
        .env("FAKE_DOCKER_HANG", format!("{kind}.Dockerfile"));
    let child = t.spawn();
    let xtask = child.id();
    let killer = KillOnDrop(&t, xtask);
    wait_until(
        &format!("the {kind} helper hangs"),
        Duration::from_secs(60),
        || t.hung_pids().len() == 2,
    );
    let pids = t.hung_pids();
    assert!(pids.iter().all(|&p| alive(p)), "{pids:?}");
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    unsafe { libc::kill(xtask as libc::pid_t, libc::SIGINT) };
    let out = wait_with_timeout(child, Duration::from_secs(30));
    out.expect_code(130);
    std::thread::sleep(Duration::from_secs(1));
    let left: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
    assert!(left.is_empty(), "still alive a second later: {left:?}");
    assert_eq!(snapshot(location), before, "{kind}: {location:?} changed");
    drop(killer);
}

/// Kills what a failed interrupt test leaves behind: the hung fakes and the xtask.
struct KillOnDrop<'a>(&'a Test, u32);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        for pid in self.0.hung_pids().into_iter().chain([self.1]) {
            let ours = fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.contains("docker") || c.contains("xtask")
            });
            if alive(pid) && ours {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        }
    }
}

#[test]
fn sigint_during_the_export_helper_leaves_no_helper_and_location_unchanged() {
    let ws = TempWorkspace::new();
    let loc = ws.path().join("ci-cache");
    let loc_arg = loc.display().to_string();
    // an entry already there: the interrupted export neither replaces it nor adds one
    cache(&ws, &["export", "--to", &loc_arg, "api"])
        .1
        .expect_code(0);
    interrupt_helper(&ws, &loc, "export", &["export", "--to", &loc_arg, "api"]);
    // and into a location that does not exist yet: none is created
    let fresh = ws.path().join("fresh-cache");
    interrupt_helper(
        &ws,
        &fresh,
        "export",
        &["export", "--to", &fresh.display().to_string(), "api"],
    );
    assert!(!fresh.exists());
}

#[test]
fn sigint_during_the_import_helper_leaves_no_helper_and_location_unchanged() {
    let (ws, loc, loc_arg) = with_entry();
    interrupt_helper(&ws, &loc, "import", &["import", "--from", &loc_arg, "api"]);
}

/// Ctrl-C while `docker-build --cache` waits for an import helper running beside the builds
/// (it said it holds the locks, the builds ran, and it hangs): exit 130, no process of the run
/// alive a second later, the location as it was.
#[test]
fn sigint_during_an_import_beside_the_builds_leaves_no_helper_and_location_unchanged() {
    let (ws, loc, loc_arg) = with_entry();
    let before = snapshot(&loc);
    let t = Test::docker_build(["--strategy", "workspace", "--cache", &loc_arg, "api"])
        .cwd(ws.path())
        .env("FAKE_DOCKER_HANG", "import.Dockerfile");
    let child = t.spawn();
    let xtask = child.id();
    let killer = KillOnDrop(&t, xtask);
    wait_until(
        "the import helper hangs and the build ran beside it",
        Duration::from_secs(60),
        || {
            t.hung_pids().len() == 2
                && (t.builds().iter())
                    .any(|a| arg_after(a, "--file") == ["docker/Dockerfile.workspace"])
        },
    );
    let pids = t.hung_pids();
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    unsafe { libc::kill(xtask as libc::pid_t, libc::SIGINT) };
    let out = wait_with_timeout(child, Duration::from_secs(30));
    out.expect_code(130);
    std::thread::sleep(Duration::from_secs(1));
    let left: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
    assert!(left.is_empty(), "still alive a second later: {left:?}");
    assert_eq!(snapshot(&loc), before, "{loc:?} changed");
    drop(killer);
}

#[test]
fn two_exports_to_one_directory_at_once_leave_one_complete_entry() {
    let (a, b) = (TempWorkspace::new(), TempWorkspace::new());
    let shared = tempfile::tempdir().unwrap();
    let loc = shared.path().join("ci-cache");
    let loc_arg = loc.display().to_string();
    // the helper builds take a while, so that both runs stage at the same time
    let start = |ws: &TempWorkspace| {
        let t = Test::new()
            .args(["cache", "export", "--to", &loc_arg, "api"])
            .args(["--log-dir".into(), t_log(ws)])
            .cwd(ws.path())
            .env("FAKE_DOCKER_SLOW_MS", "500");
        let child = t.spawn();
        (t, child)
    };
    let (_ta, ca) = start(&a);
    let (_tb, cb) = start(&b);
    for child in [ca, cb] {
        wait_with_timeout(child, Duration::from_secs(60)).expect_code(0);
    }
    let names: Vec<String> = fs::read_dir(&loc)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "one entry and nothing staged: {names:?}");
    let dir = loc.join(&names[0]);
    let manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["key"], names[0].as_str());
    let mounts = manifest["mounts"].as_array().unwrap();
    assert!(!mounts.is_empty());
    for mount in mounts {
        let bytes = fs::read(dir.join(mount["file"].as_str().unwrap())).unwrap();
        assert_eq!(mount["bytes"], bytes.len() as u64, "{mount}");
        let sum: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(mount["sha256"], sum.as_str(), "{mount}");
    }
}
