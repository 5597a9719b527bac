//! `docker-build --timings`, as the real binary against the fake `docker`: the extra build of the
//! `timings` stage, the slowest crates in the summary and the JSON report, and a strategy without
//! the stage refused before anything runs.

// not every helper is used here
#[allow(dead_code)]
mod build_support;

use build_support::{arg_after, TempWorkspace, Test};
use serde_json::Value;

fn workspace_build(ws: &TempWorkspace, extra: &[&str]) -> Test {
    Test::docker_build(
        ["--strategy", "workspace", "--timings", "api"]
            .iter()
            .chain(extra),
    )
    .cwd(ws.path())
}

#[test]
fn dry_run_prints_the_export_after_the_builds() {
    let out = Test::docker_build(["--strategy", "workspace", "--timings", "--dry-run", "api"])
        .no_docker()
        .run();
    out.expect_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    let export = lines
        .iter()
        .position(|l| l.contains("--target timings"))
        .unwrap_or_else(|| panic!("no timings build:\n{}", out.stdout));
    let api = lines
        .iter()
        .position(|l| l.contains("--target api"))
        .expect("the api build");
    assert!(
        api < export,
        "the export comes after the builds:\n{}",
        out.stdout
    );
    let line = lines[export];
    assert!(
        line.contains("--output type=local,dest=target/xtask/timings")
            && line.contains("--file docker/Dockerfile.workspace")
            && !line.contains("--tag")
            && !line.contains("--load")
            && !line.contains("type=docker"),
        "{line}"
    );
}

#[test]
fn a_strategy_without_the_stage_is_refused_before_anything_runs() {
    let t = Test::docker_build(["--timings", "api"]);
    let out = t.run();
    out.expect_code(2);
    assert!(
        out.stderr
            .contains("docker/Dockerfile.optimized has no `timings` stage"),
        "{}",
        out.stderr
    );
    assert!(t.builds().is_empty(), "no build ran");
}

#[test]
fn the_summary_and_json_name_the_slowest_crates() {
    let ws = TempWorkspace::new();
    let t = workspace_build(&ws, &[]);
    let out = t.run();
    out.expect_code(0);
    let builds = t.builds();
    assert_eq!(builds.len(), 2, "{builds:?}");
    assert_eq!(arg_after(&builds[1], "--target"), ["timings"]);
    assert!(
        out.stdout.contains(
            "timings: target/xtask/timings/cargo-timing.html; slowest: tokio 12.3s, serde_derive 8.1s, attune-common 4.0s"
        ),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("layer-cached"), "{}", out.stdout);
    assert!(ws
        .path()
        .join("target/xtask/timings/cargo-timing.html")
        .is_file());

    // every step cached: the report is the last one that ran, and the JSON says so
    let out = workspace_build(&ws, &["--force", "--json"])
        .env("FAKE_DOCKER_CACHED", "1")
        .run();
    out.expect_code(0);
    let json: Value = serde_json::from_str(&out.stdout).expect("the JSON report");
    let timings = &json["timings"];
    assert_eq!(timings["fresh"], false, "{timings}");
    assert_eq!(timings["slowest"][0]["name"], "tokio", "{timings}");
    assert_eq!(timings["slowest"].as_array().map(Vec::len), Some(3));
}

#[test]
fn a_failed_build_exports_nothing() {
    let ws = TempWorkspace::new();
    let t = workspace_build(&ws, &[]).env("FAKE_DOCKER_FAIL", "api");
    let out = t.run();
    out.expect_code(1);
    assert_eq!(t.builds().len(), 1, "no export after a failure");
    assert!(
        out.stdout
            .contains("timings: no report (a build did not succeed"),
        "{}",
        out.stdout
    );
}
