//! The build history, the up-to-date check, `history` and `cache du|prune`, as the real binary
//! against the fake `docker` in a temporary copy of the workspace.

// not every helper is used here
#[allow(dead_code)]
mod build_support;

use std::fs;

use build_support::{summary_rows, TempWorkspace, Test};
use serde_json::Value;

const SERVICES: [&str; 4] = ["api", "executor", "sensor", "worker-shell"];

fn build(ws: &TempWorkspace, extra: &[&str]) -> Test {
    let t = Test::docker_build(["services"].iter().chain(extra)).cwd(ws.path());
    t.run().expect_code(0);
    t
}

/// The images a run built (its `--target`s, mapped back to the image names of per-service).
fn built(t: &Test) -> usize {
    t.builds().len()
}

fn append(path: &std::path::Path, text: &str) {
    let mut old = fs::read(path).unwrap_or_default();
    old.extend_from_slice(text.as_bytes());
    fs::write(path, old).unwrap();
}

#[test]
fn a_build_recording_elsewhere_is_still_up_to_date_on_its_next_run() {
    // bench's docker-build in a sandbox records into the workspace's history
    // (ATTUNE_HISTORY_FILE); its no-op scenario needs the sandbox's next run up to date
    let ws = TempWorkspace::new();
    let elsewhere = tempfile::tempdir().unwrap();
    let file = elsewhere.path().join("history.jsonl");
    let run = || {
        let t = Test::docker_build(["services"])
            .cwd(ws.path())
            .env("ATTUNE_HISTORY_FILE", &file)
            .env("ATTUNE_HISTORY_SOURCE", "bench")
            .env("ATTUNE_HISTORY_GIT", "0123abcd dirty");
        t.run().expect_code(0);
        t
    };
    assert_eq!(built(&run()), 4);
    assert_eq!(built(&run()), 0, "the second run is up to date");
    let text = fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), 2);
    assert!(
        text.lines().all(|l| l.contains("\"source\":\"bench\"")),
        "{text}"
    );
    // the git state the command that made the sandbox passed down
    assert!(
        text.lines()
            .all(|l| l.contains("\"git_rev\":\"0123abcd\"") && l.contains("\"git_dirty\":true")),
        "{text}"
    );
}

#[test]
fn an_unchanged_image_is_up_to_date_and_any_changed_input_rebuilds_it() {
    let ws = TempWorkspace::new();
    assert_eq!(built(&build(&ws, &[])), 4, "first run builds everything");
    let t = Test::docker_build(["services"]).cwd(ws.path());
    let out = t.run();
    out.expect_code(0);
    assert_eq!(built(&t), 0, "nothing changed: no buildx process");
    let rows = summary_rows(&out.stdout);
    for image in SERVICES {
        assert!(
            rows[image].starts_with("up to date"),
            "{image}: {}",
            rows[image]
        );
    }
    // --force builds anyway
    assert_eq!(built(&build(&ws, &["--force"])), 4);

    // one byte of a source file: every image that copies crates/common
    append(&ws.path().join("crates/common/src/lib.rs"), "\n");
    assert_eq!(built(&build(&ws, &[])), 4, "crates/common changed");
    assert_eq!(built(&build(&ws, &[])), 0);
    // one byte of crates/api: only api
    append(&ws.path().join("crates/api/src/main.rs"), "\n");
    let t = build(&ws, &[]);
    assert_eq!(built(&t), 1, "crates/api changed");
    // Cargo.lock
    append(&ws.path().join("Cargo.lock"), "\n");
    assert_eq!(built(&build(&ws, &[])), 4, "Cargo.lock changed");
    // the Dockerfile of api, executor and sensor
    append(&ws.path().join("docker/Dockerfile.optimized"), "\n# x\n");
    assert_eq!(built(&build(&ws, &[])), 3, "Dockerfile.optimized changed");
    // a build argument
    assert_eq!(built(&build(&ws, &["--build-arg", "X=1"])), 4);
    assert_eq!(built(&build(&ws, &["--build-arg", "X=1"])), 0);
    assert_eq!(
        built(&build(&ws, &["--build-arg", "X=2"])),
        4,
        "build arg changed"
    );
    // a file .dockerignore excludes changes nothing
    append(&ws.path().join("crates/common/build.log"), "x");
    assert_eq!(built(&build(&ws, &["--build-arg", "X=2"])), 0);
}

#[test]
fn a_local_output_is_up_to_date_while_its_files_are_unchanged() {
    let ws = TempWorkspace::new();
    let run = || {
        let t = Test::docker_build(["pack-binaries"]).cwd(ws.path());
        t.run().expect_code(0);
        t.builds().len()
    };
    assert_eq!(run(), 1);
    assert_eq!(run(), 0, "inputs and output unchanged");
    let out = ws.path().join("target/pack-binaries");
    let file = fs::read_dir(&out).unwrap().flatten().next().unwrap().path();
    append(&file, "x");
    assert_eq!(run(), 1, "the output was touched");
    fs::remove_dir_all(&out).unwrap();
    assert_eq!(run(), 1, "the output is gone");
}

#[test]
fn doubt_builds_a_gone_image_or_on_another_engine() {
    let ws = TempWorkspace::new();
    build(&ws, &[]);
    let t = Test::docker_build(["services"])
        .cwd(ws.path())
        .env("FAKE_DOCKER_MISSING_IMAGES", "attune-api:");
    t.run().expect_code(0);
    assert_eq!(built(&t), 1, "the api image is gone");
    let t = Test::docker_build(["services"])
        .cwd(ws.path())
        .env("DOCKER_HOST", "unix:///nonexistent/other-engine.sock");
    t.run().expect_code(0);
    assert_eq!(built(&t), 4, "another engine");
}

#[test]
fn the_summary_says_why_and_history_explains_plots_and_skips_corrupt_lines() {
    let ws = TempWorkspace::new();
    let out = Test::docker_build(["services"]).cwd(ws.path()).run();
    assert!(
        out.stdout.contains("why api: no previous run"),
        "{}",
        out.stdout
    );
    append(&ws.path().join("crates/common/src/lib.rs"), "\n");
    let out = Test::docker_build(["services"]).cwd(ws.path()).run();
    out.expect_code(0);
    assert!(
        out.stdout
            .contains("why api: crates/common/src/lib.rs changed"),
        "{}",
        out.stdout
    );

    let out = Test::new()
        .args(["history", "--explain", "api"])
        .cwd(ws.path())
        .run();
    out.expect_code(0);
    assert!(
        out.stdout.contains("- crates/common/src/lib.rs changed"),
        "{}",
        out.stdout
    );
    let out = Test::new()
        .args(["history", "--explain", "nope"])
        .cwd(ws.path())
        .run();
    out.expect_code(2);
    assert!(
        out.stderr
            .contains("recorded images: api, executor, sensor, worker-shell"),
        "{}",
        out.stderr
    );

    let out = Test::new()
        .args(["history", "--plot", "target/h.svg"])
        .cwd(ws.path())
        .run();
    out.expect_code(0);
    let svg = fs::read_to_string(ws.path().join("target/h.svg")).unwrap();
    let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
    let series = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("series"))
        .count();
    assert_eq!(series, 4);

    let history = ws.path().join("target/xtask/history.jsonl");
    append(&history, "{\"truncated\": \n");
    let out = Test::new().args(["history", "--json"]).cwd(ws.path()).run();
    out.expect_code(0);
    assert!(
        out.stderr.contains("history.jsonl:3: skipped"),
        "{}",
        out.stderr
    );
    let json: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["runs"].as_array().unwrap().len(), 2);
    assert_eq!(json["images"].as_array().unwrap().len(), 4);
}

#[test]
fn the_json_report_carries_why_each_cargo_step_ran() {
    let ws = TempWorkspace::new();
    let why_of = |json: &Value, image: &str| {
        let images = json["images"].as_array().expect("images");
        let entry = images.iter().find(|i| i["image"] == image).expect(image);
        entry.get("why").and_then(Value::as_str).map(String::from)
    };
    let out = Test::docker_build(["services", "--json"])
        .cwd(ws.path())
        .run();
    out.expect_code(0);
    let json: Value = serde_json::from_str(&out.stdout).expect("the JSON report");
    assert_eq!(why_of(&json, "api").as_deref(), Some("no previous run"));
    append(&ws.path().join("crates/api/src/main.rs"), "\n");
    let out = Test::docker_build(["services", "--json"])
        .cwd(ws.path())
        .run();
    out.expect_code(0);
    let json: Value = serde_json::from_str(&out.stdout).expect("the JSON report");
    assert_eq!(
        why_of(&json, "api").as_deref(),
        Some("crates/api/src/main.rs changed"),
        "{}",
        out.stdout
    );
    // up to date: no cargo step ran, no why
    assert_eq!(why_of(&json, "sensor"), None, "{}", out.stdout);
}

#[test]
fn an_unwritable_history_is_a_warning() {
    let ws = TempWorkspace::new();
    fs::create_dir_all(ws.path().join("target")).unwrap();
    // the history's directory is a file
    fs::write(ws.path().join("target/xtask"), "").unwrap();
    let t = Test::docker_build(["services"]).cwd(ws.path());
    let out = t.run();
    out.expect_code(0);
    assert!(
        out.stderr.contains("warning: build history not recorded"),
        "{}",
        out.stderr
    );
}

#[test]
fn cache_du_lists_this_workspaces_ids_only() {
    let ws = TempWorkspace::new();
    let out = Test::new().args(["cache", "du"]).cwd(ws.path()).run();
    out.expect_code(0);
    // the engine's ids carry the platform (`target-workspace-linux/amd64`): each belongs to the
    // Dockerfiles' id with `${TARGETPLATFORM}`, one record each
    for id in [
        "cargo-home",
        "target-workspace-${TARGETPLATFORM}",
        "target-builder-${SERVICE}-${TARGETPLATFORM}",
    ] {
        let line = out
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("{id} ")));
        assert!(
            line.is_some_and(|l| l.split_whitespace().nth(1) == Some("1")),
            "{id}: {}",
            out.stdout
        );
    }
    assert!(!out.stdout.contains("other-project"), "{}", out.stdout);
    assert!(
        out.stdout.contains("BuildKit total: 7.90 GB"),
        "{}",
        out.stdout
    );
}

#[test]
fn cache_prune_removes_only_what_it_names() {
    let ws = TempWorkspace::new();
    let t = Test::new()
        .args(["cache", "prune", "--dry-run"])
        .cwd(ws.path());
    let out = t.run();
    out.expect_code(0);
    assert!(
        out.stdout.contains("would remove 3 record(s)"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("fake-other"), "{}", out.stdout);
    let prunes = |t: &Test| {
        t.docker_calls()
            .into_iter()
            .filter(|a| a.get(1..3) == Some(&["buildx".to_string(), "prune".to_string()]))
            .collect::<Vec<_>>()
    };
    assert!(prunes(&t).is_empty(), "dry run prunes nothing");

    let t = Test::new()
        .args(["cache", "prune", "--id", "cargo-home"])
        .cwd(ws.path());
    t.run().expect_code(0);
    let calls = prunes(&t);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(calls[0].contains(&"id=fake-home".to_string()), "{calls:?}");

    let out = Test::new()
        .args(["cache", "prune", "--id", "nope"])
        .cwd(ws.path())
        .run();
    out.expect_code(2);
    assert!(
        out.stderr.contains("known ids: cargo-home"),
        "{}",
        out.stderr
    );
    let out = Test::new()
        .args(["cache", "prune", "--older-than", "soon"])
        .cwd(ws.path())
        .run();
    out.expect_code(2);
}

#[test]
fn bench_and_verify_parallel_record_into_the_workspaces_history_marked() {
    let ws = TempWorkspace::new();
    // bench runs docker-build in a sandbox; verify-parallel builds in sandboxes itself (its
    // verdict on the fake's events does not matter here)
    Test::new()
        .args(["bench", "--reps", "1", "--contenders", "workspace"])
        .args(["--scenarios", "cold", "api"])
        .cwd(ws.path())
        .run()
        .expect_code(0);
    Test::new()
        .args(["verify-parallel", "--tests", "reuse", "--images", "api"])
        .cwd(ws.path())
        .run();
    let (records, _) = read_history(ws.path());
    let sources: Vec<&str> = records
        .iter()
        .map(|r| r["source"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(sources.first(), Some(&"bench"), "{sources:?}");
    assert!(
        sources.len() > 1 && sources[1..].iter().all(|s| *s == "verify-parallel"),
        "{sources:?}"
    );
    assert_eq!(records[0]["tag"], "bench");
    assert_eq!(
        records[0]["images"][0]["inputs"]["dockerfile"],
        "docker/Dockerfile.workspace"
    );

    // the default table is the workspace's own runs, and says what it left out
    let out = Test::new().args(["history"]).cwd(ws.path()).run();
    out.expect_code(0);
    assert!(
        out.stdout.contains("no recorded docker-build run yet"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&format!(
            "(not shown: 1 bench run(s), {} verify-parallel run(s); --source bench|verify-parallel or all)",
            sources.len() - 1
        )),
        "{}",
        out.stdout
    );
    let out = Test::new()
        .args(["history", "--source", "all"])
        .cwd(ws.path())
        .run();
    out.expect_code(0);
    assert!(out.stdout.contains("  source\n"), "{}", out.stdout);
    assert_eq!(
        out.stdout.matches("  verify-parallel\n").count(),
        sources.len() - 1
    );

    // the workspace's own build compares with none of them
    let out = Test::docker_build(["services"]).cwd(ws.path()).run();
    out.expect_code(0);
    assert!(
        out.stdout.contains("why api: no previous run"),
        "{}",
        out.stdout
    );
    let out = Test::new()
        .args(["history", "--explain", "api"])
        .cwd(ws.path())
        .run();
    out.expect_code(0);
    assert!(
        out.stdout
            .contains("no previous successful run to compare with"),
        "{}",
        out.stdout
    );
}

/// The history's records as JSON values, and its raw text.
fn read_history(root: &std::path::Path) -> (Vec<Value>, String) {
    let text = fs::read_to_string(root.join("target/xtask/history.jsonl")).unwrap_or_default();
    let records = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a record"))
        .collect();
    (records, text)
}
