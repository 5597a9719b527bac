//! `cargo xtask docker-build` as the real binary, with a fake `docker` (src/bin/fake-docker.rs)
//! first on PATH. No test can reach a real engine: the environment is rebuilt from scratch with
//! `ATTUNE_ENGINE=external` and a `DOCKER_HOST` that does not exist (see build_support).
//!
//! Snapshots of the project's real plan live in tests/snapshots/; `UPDATE_EXPECT=1 cargo test
//! -p xtask --test build_cli` rewrites them.

mod build_support;

use std::{collections::BTreeSet, fs, time::Duration};

use build_support::{
    alive, all_images, arg_after, dry_run_images, group, one_of_each_kind, root, summary_rows,
    wait_until, wait_with_timeout, TempWorkspace, Test,
};
use serde_json::Value;

/// Four images the tests select by name (so that their counts do not depend on the groups).
const FOUR: [&str; 4] = ["api", "executor", "sensor", "worker-shell"];

// --- --dry-run ------------------------------------------------------------------------------

#[test]
fn dry_run_needs_no_engine_and_prints_every_command() {
    let t = Test::docker_build(["--dry-run"]).no_docker();
    let out = t.run();
    out.expect_code(0);
    assert_eq!(dry_run_images(&out.stdout), all_images(), "{}", out.stdout);
    let n = all_images().len();
    let commands: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("docker buildx build "))
        .collect();
    assert_eq!(commands.len(), n, "{}", out.stdout);
    assert!(
        out.stdout.starts_with(&format!(
            "# strategy per-service: {n} builds, {n} at a time"
        )),
        "{}",
        out.stdout
    );
}

#[test]
fn dry_run_runs_nothing_even_with_docker_on_path() {
    let t = Test::docker_build(["--dry-run", "all"]);
    t.run().expect_code(0);
    assert_eq!(t.docker_calls(), Vec::<Vec<String>>::new());
}

#[test]
fn dry_run_services_group() {
    let out = Test::docker_build(["--dry-run", "services"])
        .no_docker()
        .run();
    out.expect_code(0);
    let images: BTreeSet<String> = dry_run_images(&out.stdout).into_iter().collect();
    let expected: BTreeSet<String> = group("services").iter().map(|s| s.to_string()).collect();
    assert_eq!(images, expected, "{}", out.stdout);
}

#[test]
fn compression_is_uncompressed_for_loads_and_buildkits_for_pushes_unless_given() {
    let line = |args: &[&str]| -> String {
        let out = Test::docker_build(["--dry-run"].iter().chain(args).chain(&["api"]))
            .no_docker()
            .run();
        out.expect_code(0);
        (out.stdout.lines())
            .find(|l| l.contains("--tag") && l.contains("attune-api"))
            .unwrap_or_else(|| panic!("no api build: {}", out.stdout))
            .to_string()
    };
    let push = ["--push", "--registry", "reg.example/attune"];
    let expect = [
        (vec![], "--output type=docker,compression=uncompressed"),
        (
            vec!["--compression", "gzip"],
            "--output type=docker,compression=gzip",
        ),
        (push.to_vec(), "--push"),
        (
            [&push[..], &["--compression", "zstd"]].concat(),
            "--output type=registry,compression=zstd",
        ),
    ];
    for (args, output) in expect {
        let l = line(&args);
        assert!(l.contains(&format!(" {output} ")), "{args:?}: {l}");
    }
    let out = Test::docker_build(["--dry-run", "--compression", "lz4", "api"]).run();
    out.expect_code(2);
    assert!(out.stderr.contains("--compression"), "{}", out.stderr);
    // an image whose files are exported has no layers to compress: named, before anything runs
    let exported = build_support::declaration()["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["output"].is_string())
        .map(|i| i["name"].as_str().unwrap().to_string());
    if let Some(image) = exported {
        let t = Test::docker_build(["--compression", "zstd", image.as_str()]);
        let out = t.run();
        out.expect_code(2);
        assert!(
            out.stderr.contains("--compression zstd") && out.stderr.contains(&image),
            "{}",
            out.stderr
        );
        assert!(
            t.docker_calls()
                .iter()
                .all(|c| !c.contains(&"build".to_string())),
            "{:?}",
            t.docker_calls()
        );
    }
}

#[test]
fn compression_combines_with_the_other_build_flags() {
    let push = ["--push", "--registry", "reg.example/attune"];
    let combos: Vec<Vec<&str>> = vec![
        vec!["--strategy", "per-service"],
        vec!["--jobs", "1"],
        vec!["--platform", "linux/amd64"],
        vec!["--no-cache"],
        vec!["--pull"],
        vec!["--build-arg", "X=1"],
        vec!["--timings", "--strategy", "workspace"],
        vec!["--builder", "remote"],
        push.to_vec(),
        [&push[..], &["--push-partial"]].concat(),
        [&push[..], &["--builders", "default,other"]].concat(),
    ];
    for extra in combos {
        let mut argv = vec!["--dry-run", "--compression", "zstd"];
        argv.extend(extra.iter().copied());
        argv.push("api");
        let out = Test::docker_build(argv.clone()).no_docker().run();
        out.expect_code(0);
        let line = (out.stdout.lines())
            .find(|l| l.contains("--tag") && l.contains("attune-api"))
            .unwrap_or_else(|| panic!("{argv:?}: no api build: {}", out.stdout));
        assert!(line.contains(",compression=zstd "), "{argv:?}: {line}");
    }
}

#[test]
fn dry_run_jobs_grouping() {
    let out = Test::docker_build(["--dry-run", "--jobs", "2", "services"])
        .no_docker()
        .run();
    out.expect_code(0);
    let shape: Vec<String> = out
        .stdout
        .lines()
        .map(|l| match l.split_once("   # ") {
            Some((_, comment)) => comment.split(" -> ").next().unwrap().to_string(),
            None => l.to_string(),
        })
        .collect();
    assert_eq!(
        shape,
        [
            "# strategy per-service: 4 builds, 2 at a time, from the workspace root",
            "# started first: the next build starts as soon as one finishes",
            "api",
            "executor",
            "# started as slots free up: the next build starts as soon as one finishes",
            "sensor",
            "worker-shell",
        ],
        "{}",
        out.stdout
    );
}

// --- snapshots of the project's plan ----------------------------------------------------------

// One image of each kind, derived from the declaration (`one_of_each_kind`), not `all`: adding a
// service changes no snapshot.

#[test]
fn snapshot_dry_run_one_of_each_kind() {
    // no --log-dir: the default, relative to the workspace root, is part of the snapshot
    let out = Test::new()
        .args(["docker-build", "--dry-run"])
        .args(one_of_each_kind())
        .no_docker()
        .run();
    out.expect_code(0);
    assert_snapshot("docker_build_dry_run_kinds", &out.stdout);
}

#[test]
fn snapshot_dry_run_options() {
    let t = Test::docker_build([
        "--dry-run",
        "--tag",
        "1.0",
        "--registry",
        "reg.example/ns",
        "--builder",
        "remote",
        "--platform",
        "linux/amd64,linux/arm64",
        "--push",
        "--cache-from",
        "type=registry,ref=reg.example/cache:{image}",
        "--build-arg",
        "FOO=1",
        "--no-cache",
        "--pull",
    ])
    .args(one_of_each_kind())
    .no_docker();
    let out = t.run();
    out.expect_code(0);
    let logs = t.log_dir().display().to_string();
    assert!(out.stdout.contains(&logs), "{}", out.stdout);
    assert_snapshot(
        "docker_build_dry_run_options",
        &out.stdout.replace(&logs, "$LOG_DIR"),
    );
}

#[test]
fn snapshot_dry_run_workspace_strategy() {
    let out = Test::new()
        .args(["docker-build", "--dry-run", "--strategy", "workspace"])
        .args(one_of_each_kind())
        .no_docker()
        .run();
    out.expect_code(0);
    assert_snapshot("docker_build_dry_run_workspace", &out.stdout);
}

#[test]
fn dry_run_shows_the_bakes_after_the_probe_in_chunks_of_jobs() {
    let images = one_of_each_kind();
    let dry_run = |extra: &[&str]| {
        let out = Test::new()
            .args(["docker-build", "--dry-run", "--strategy", "workspace"])
            .args(extra.iter().copied())
            .args(images.clone())
            .no_docker()
            .run();
        out.expect_code(0);
        let bakes: Vec<String> = (out.stdout.lines())
            .filter(|l| l.contains("docker buildx bake "))
            .map(String::from)
            .collect();
        (out.stdout, bakes)
    };
    let (all, bakes) = dry_run(&[]);
    assert_eq!(bakes.len(), 1, "{all}");
    // every image of the bake is named on its line
    for image in &images {
        assert!(bakes[0].contains(image), "{image} not in {}", bakes[0]);
    }
    let (two, bakes) = dry_run(&["--jobs", "2"]);
    assert_eq!(bakes.len(), images.len().div_ceil(2), "{two}");
    assert!(two.contains("bake-2.json"), "{two}");
    assert!(two.contains("one after another"), "{two}");
}

/// Compares `actual` with tests/snapshots/<name>.txt (expect-test: a diff on failure;
/// `UPDATE_EXPECT=1 cargo test -p xtask --test build_cli` rewrites the files).
#[track_caller]
fn assert_snapshot(name: &str, actual: &str) {
    let path = root().join(format!("xtask/tests/snapshots/{name}.txt"));
    expect_test::expect_file![path].assert_eq(actual);
}

// --- usage errors ------------------------------------------------------------------------------

#[test]
fn a_cache_or_secret_spec_that_is_not_key_value_is_a_usage_error() {
    for (flag, value) in [
        ("--cache-from", "type=local,oops"),
        ("--cache-to", "=x"),
        ("--secret", "id=a,b"),
    ] {
        let t = Test::docker_build(["--dry-run", flag, value, "api"]);
        let out = t.run();
        out.expect_code(2);
        assert!(
            out.stderr.contains(&format!("{flag} `{value}`")),
            "{}",
            out.stderr
        );
        assert!(t.builds().is_empty());
    }
}

#[test]
fn unknown_image_lists_images_and_groups() {
    let t = Test::docker_build(["api", "nope"]);
    let out = t.run();
    out.expect_code(2);
    assert!(
        out.stderr.contains("unknown image or group `nope`"),
        "{}",
        out.stderr
    );
    for image in all_images() {
        assert!(out.stderr.contains(image), "{image}: {}", out.stderr);
    }
    assert!(
        out.stderr.contains("groups: services, workers, all"),
        "{}",
        out.stderr
    );
    assert!(t.builds().is_empty());
}

#[test]
fn build_arg_without_value_is_a_usage_error() {
    let t = Test::docker_build(["--build-arg", "X", "api"]);
    let out = t.run();
    out.expect_code(2);
    assert!(
        out.stderr.contains("--build-arg `X` is not KEY=VALUE"),
        "{}",
        out.stderr
    );
    assert!(t.builds().is_empty());
}

#[test]
fn unknown_strategy_is_a_usage_error() {
    let t = Test::docker_build(["--strategy", "nope", "api"]);
    let out = t.run();
    out.expect_code(2);
    assert!(
        out.stderr.contains("unknown strategy `nope`") && out.stderr.contains("per-service"),
        "{}",
        out.stderr
    );
    assert!(t.builds().is_empty());
}

// --- builds with the fake docker ----------------------------------------------------------------

#[test]
fn all_images_build_concurrently_with_a_log_each() {
    let ws = TempWorkspace::new();
    let t = Test::docker_build(["all"])
        .cwd(ws.path())
        .env("FAKE_DOCKER_SLOW_MS", "800");
    let out = t.run();
    out.expect_code(0);

    // the summary: every image ok, its cargo step ran
    let rows = summary_rows(&out.stdout);
    assert_eq!(
        rows.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        all_images().into_iter().collect::<BTreeSet<_>>(),
        "{}",
        out.stdout
    );
    for (image, row) in &rows {
        assert_eq!(row.split_whitespace().next(), Some("ok"), "{image}: {row}");
        assert!(row.contains("ran"), "{image}: {row}");
    }
    assert!(rows["api"].contains("1.2 MB"), "{}", rows["api"]);
    assert!(
        out.stdout.contains(&format!(
            "{n} images: {n} ok, 0 failed in ",
            n = all_images().len()
        )),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains(&format!("logs: {}/", t.log_dir().display())),
        "{}",
        out.stdout
    );

    // one log per image, with the rendered steps
    let logs: BTreeSet<String> = fs::read_dir(t.log_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".log"))
        .collect();
    let expected: BTreeSet<String> = all_images().iter().map(|i| format!("{i}.log")).collect();
    assert_eq!(logs, expected);
    for image in all_images() {
        let log = t.log(image);
        assert!(log.starts_with("$ docker buildx build "), "{image}: {log}");
        assert!(
            log.lines().any(|l| l.starts_with('#')
                && l[1..].split_once(' ').is_some_and(|(n, rest)| {
                    n.parse::<u32>().is_ok() && rest.starts_with("[builder 7/7] RUN ")
                })),
            "{image}: no `#N [builder 7/7] RUN` line:\n{log}"
        );
        assert!(log.contains("   Compiling attune-"), "{image}: {log}");
        assert!(log.trim_end().ends_with("# exit: 0"), "{image}: {log}");
    }
    let pack = ws
        .path()
        .join("target/pack-binaries/attune-core-timer-sensor");
    assert!(pack.is_file(), "{} is missing", pack.display());

    // one `buildx build` per image, exactly as --dry-run prints it
    let builds = t.builds();
    assert_eq!(builds.len(), all_images().len(), "{builds:?}");
    let dry = Test::docker_build(["--dry-run", "all"])
        .cwd(ws.path())
        .no_docker();
    let dry_out = dry.run();
    dry_out.expect_code(0);
    let planned: BTreeSet<String> = dry_out
        .stdout
        .lines()
        .filter_map(|l| l.split_once("   # "))
        .map(|(cmd, _)| cmd.replace(&dry.log_dir().display().to_string(), "$LOGS"))
        .collect();
    let ran: BTreeSet<String> = builds
        .iter()
        .map(|argv| {
            argv.join(" ")
                .replace(&t.log_dir().display().to_string(), "$LOGS")
        })
        .collect();
    assert_eq!(ran, planned);
    for image in all_images() {
        let argv = builds
            .iter()
            .find(|argv| {
                arg_after(argv, "--tag") == [format!("attune-{image}:dev")]
                    || (image == "pack-binaries"
                        && (arg_after(argv, "--output").iter())
                            .any(|o| o.starts_with("type=local")))
            })
            .unwrap_or_else(|| panic!("no build for {image}: {builds:?}"));
        let service_args: Vec<&str> = arg_after(argv, "--build-arg")
            .into_iter()
            .filter(|a| a.starts_with("SERVICE="))
            .collect();
        // what the declaration says of the image, not a list of names here
        let decl = build_support::declaration()["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == image)
            .unwrap();
        assert_eq!(
            arg_after(argv, "--target"),
            [decl["target"].as_str().unwrap()],
            "{argv:?}"
        );
        let service: Vec<String> = decl["service"]
            .as_str()
            .map(|s| format!("SERVICE={s}"))
            .into_iter()
            .collect();
        assert_eq!(service_args, service, "{argv:?}");
        match decl["output"].as_str() {
            Some(dest) => {
                assert!(arg_after(argv, "--tag").is_empty(), "{argv:?}");
                assert_eq!(
                    arg_after(argv, "--output"),
                    [format!("type=local,dest={dest}")],
                    "{argv:?}"
                );
            }
            None => assert_eq!(
                arg_after(argv, "--tag"),
                [format!("attune-{image}:dev")],
                "{argv:?}"
            ),
        }
    }

    // the cargo steps overlapped: the builds ran concurrently
    let intervals = t.cargo_intervals();
    assert_eq!(intervals.len(), all_images().len());
    let overlapping = intervals
        .iter()
        .enumerate()
        .any(|(i, a)| intervals[i + 1..].iter().any(|b| a.0 < b.1 && b.0 < a.1));
    assert!(overlapping, "no two builds overlapped: {intervals:?}");
}

#[test]
fn jobs_one_runs_the_builds_one_after_another() {
    let ws = TempWorkspace::new();
    let t = Test::docker_build(["--jobs", "1"].into_iter().chain(FOUR))
        .cwd(ws.path())
        .env("FAKE_DOCKER_SLOW_MS", "100");
    t.run().expect_code(0);
    let mut intervals = t.cargo_intervals();
    assert_eq!(intervals.len(), FOUR.len());
    intervals.sort_by(|a, b| a.0.total_cmp(&b.0));
    for pair in intervals.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "overlap with --jobs 1: {intervals:?}"
        );
    }
}

#[test]
fn one_failure_hides_nothing() {
    let ws = TempWorkspace::new();
    let t = Test::docker_build(["all"])
        .cwd(ws.path())
        .env("FAKE_DOCKER_SLOW_MS", "50")
        .env("FAKE_DOCKER_FAIL", "SERVICE=executor");
    let out = t.run();
    out.expect_code(1);
    let rows = summary_rows(&out.stdout);
    assert_eq!(rows.len(), all_images().len(), "{}", out.stdout);
    for (image, row) in &rows {
        let result = row.split_whitespace().next();
        if image == "executor" {
            assert_eq!(result, Some("FAILED"), "{row}");
        } else {
            assert_eq!(result, Some("ok"), "{image}: {row}");
        }
    }
    assert!(
        out.stdout.contains(&format!(
            "{} images: {} ok, 1 failed in ",
            all_images().len(),
            all_images().len() - 1
        )),
        "{}",
        out.stdout
    );
    let log = t.log_dir().join("executor.log");
    let tail = out
        .stdout
        .split_once(&format!(
            "executor failed; the last lines of {}:",
            log.display()
        ))
        .unwrap_or_else(|| panic!("no tail of executor's log:\n{}", out.stdout))
        .1;
    assert!(
        tail.contains("  ERROR: failed to solve: process \"/bin/sh -c cargo build --release\" did not complete successfully: exit code: 101"),
        "{tail}"
    );
    assert!(tail.contains("error[E0425]"), "{tail}");
    let text = t.log("executor");
    assert!(text.contains("ERROR: failed to solve"), "{text}");
    assert!(text.trim_end().ends_with("# exit: 1"), "{text}");
    // every build ran to its end: the failure stopped nothing
    assert_eq!(t.builds().len(), all_images().len());
}

#[test]
fn cached_builds_are_reported_as_cached() {
    let ws = TempWorkspace::new();
    let t = Test::docker_build(FOUR)
        .cwd(ws.path())
        .env("FAKE_DOCKER_CACHED", "1");
    let out = t.run();
    out.expect_code(0);
    let rows = summary_rows(&out.stdout);
    assert_eq!(rows.len(), 4, "{}", out.stdout);
    for (image, row) in &rows {
        assert!(row.starts_with("ok (cached)"), "{image}: {row}");
        assert!(row.contains("cached"), "{image}: {row}");
        assert!(!row.contains("ran"), "{image}: {row}");
    }
}

#[test]
fn an_image_the_engine_does_not_list_has_no_size_and_shifts_nothing() {
    let ws = TempWorkspace::new();
    let t = Test::docker_build(["--json"].into_iter().chain(FOUR))
        .cwd(ws.path())
        .env("FAKE_DOCKER_MISSING_IMAGES", "attune-executor:");
    let out = t.run();
    out.expect_code(0);
    let report: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", out.stdout));
    for image in report["images"].as_array().unwrap() {
        if image["image"] == "executor" {
            assert!(image["image_id"].is_null(), "{image}");
            assert!(image["size_bytes"].is_null(), "{image}");
        } else {
            assert_eq!(image["image_id"], "sha256:fake", "{image}");
            assert_eq!(image["size_bytes"], 1234567, "{image}");
        }
    }
    // one `docker image inspect` for every built image after the builds (the one before them is
    // the up-to-date check's)
    let calls = t.docker_calls();
    let last_build = calls
        .iter()
        .rposition(|argv| argv.get(1..3) == Some(&["buildx".to_string(), "build".to_string()]))
        .expect("builds ran");
    let inspects: Vec<&Vec<String>> = calls[last_build..]
        .iter()
        .filter(|argv| argv.get(1..3) == Some(&["image".to_string(), "inspect".to_string()]))
        .collect();
    assert_eq!(inspects.len(), 1, "{inspects:?}");
    for image in FOUR {
        assert!(
            inspects[0].contains(&format!("attune-{image}:dev")),
            "{inspects:?}"
        );
    }
}

// --- --json ---------------------------------------------------------------------------------------

#[test]
fn json_report() {
    let ws = TempWorkspace::new();
    let t = Test::docker_build(["--json", "all"])
        .cwd(ws.path())
        .env("FAKE_DOCKER_SLOW_MS", "20");
    let out = t.run();
    out.expect_code(0);
    let report: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", out.stdout));
    assert_eq!(report["strategy"], "per-service");
    let images = report["images"].as_array().expect("images");
    let names: Vec<&str> = images
        .iter()
        .map(|i| i["image"].as_str().unwrap())
        .collect();
    assert_eq!(names, all_images());
    for image in images {
        let name = image["image"].as_str().unwrap();
        assert_eq!(image["result"], "succeeded", "{image}");
        assert_eq!(image["exit_code"], 0, "{image}");
        assert!(image["wall_seconds"].as_f64().unwrap() >= 0.0, "{image}");
        assert_eq!(image["cargo_step"], "ran", "{image}");
        assert!(image["cargo_seconds"].as_f64().is_some(), "{image}");
        assert!(image["size_bytes"].as_u64().unwrap() > 0, "{image}");
        assert_eq!(
            image["log"].as_str().unwrap(),
            t.log_dir().join(format!("{name}.log")).to_str().unwrap()
        );
        if name == "pack-binaries" {
            assert!(image["tag"].is_null(), "{image}");
            assert_eq!(image["output_dir"], "target/pack-binaries", "{image}");
        } else {
            assert_eq!(image["tag"], format!("attune-{name}:dev"), "{image}");
            assert_eq!(image["size_bytes"], 1234567, "{image}");
            assert_eq!(image["image_id"], "sha256:fake", "{image}");
        }
    }
    let totals = &report["totals"];
    assert_eq!(totals["images"], all_images().len());
    assert_eq!(totals["succeeded"], all_images().len());
    assert_eq!(totals["failed"], 0);
    assert_eq!(totals["interrupted"], 0);
    assert_eq!(totals["not_started"], 0);
    assert!(totals["wall_seconds"].as_f64().is_some());
    // progress stays on stderr
    assert!(out.stderr.contains("api"), "{}", out.stderr);
}

#[test]
fn json_report_with_a_failure() {
    let ws = TempWorkspace::new();
    let t = Test::docker_build(["--json"].into_iter().chain(FOUR))
        .cwd(ws.path())
        .env("FAKE_DOCKER_FAIL", "SERVICE=executor");
    let out = t.run();
    out.expect_code(1);
    let report: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", out.stdout));
    assert_eq!(report["totals"]["failed"], 1, "{report}");
    assert_eq!(report["totals"]["succeeded"], 3, "{report}");
    let executor = report["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["image"] == "executor")
        .unwrap();
    assert_eq!(executor["result"], "failed");
    assert_eq!(executor["exit_code"], 1);
    assert!(executor["size_bytes"].is_null());
}

// --- Ctrl-C and SIGTERM ---------------------------------------------------------------------------

#[test]
fn sigint_stops_every_build_and_its_children() {
    interrupt(libc::SIGINT);
}

#[test]
fn sigterm_stops_every_build_and_its_children() {
    interrupt(libc::SIGTERM);
}

/// Kills what a failed interrupt test leaves behind: the hung fakes and xtask.
struct Cleanup<'a> {
    test: &'a Test,
    xtask: u32,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let ours = |pid: u32| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("docker"))
        };
        for pid in self.test.hung_pids() {
            if alive(pid) && ours(pid) {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        }
        if alive(self.xtask) {
            // SAFETY: as above; the pid is our own child's
            unsafe { libc::kill(self.xtask as libc::pid_t, libc::SIGKILL) };
        }
    }
}

#[test]
fn builds_that_ignore_sigterm_are_killed() {
    // the runner sends SIGTERM to each build's process group, then SIGKILL after a grace period
    interrupt_with(libc::SIGINT, &[("FAKE_DOCKER_IGNORE_SIGTERM", "1")]);
}

fn interrupt(signal: libc::c_int) {
    interrupt_with(signal, &[]);
}

fn interrupt_with(signal: libc::c_int, env: &[(&str, &str)]) {
    let ws = TempWorkspace::new();
    let mut t = Test::docker_build(FOUR)
        .cwd(ws.path())
        .env("FAKE_DOCKER_HANG", "SERVICE=api|SERVICE=executor");
    for (key, value) in env {
        t = t.env(key, *value);
    }
    let child = t.spawn();
    let _cleanup = Cleanup {
        test: &t,
        xtask: child.id(),
    };
    wait_until(
        "the two hanging builds wrote their pids and the two others finished",
        Duration::from_secs(60),
        || {
            t.hung_pids().len() == 4
                && ["sensor", "worker-shell"].iter().all(|image| {
                    fs::read_to_string(t.log_dir().join(format!("{image}.log")))
                        .is_ok_and(|l| l.contains("# exit: 0"))
                })
        },
    );
    let pids = t.hung_pids();
    assert!(pids.iter().all(|&p| alive(p)), "{pids:?}");
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    let out = wait_with_timeout(child, Duration::from_secs(30));
    out.expect_code(130);

    let rows = summary_rows(&out.stdout);
    assert_eq!(rows.len(), 4, "{}", out.stdout);
    for image in ["sensor", "worker-shell"] {
        assert_eq!(
            rows[image].split_whitespace().next(),
            Some("ok"),
            "{image}: {}",
            out.stdout
        );
    }
    for image in ["api", "executor"] {
        assert!(
            rows[image].starts_with("interrupted"),
            "{image}: {}",
            out.stdout
        );
    }
    assert!(
        out.stdout
            .contains("4 images: 2 ok, 0 failed, 2 interrupted in "),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr
            .contains("interrupted: stopping every running build"),
        "{}",
        out.stderr
    );
    wait_until(
        "every fake docker and its child are gone",
        Duration::from_secs(10),
        || pids.iter().all(|&p| !alive(p)),
    );
}

#[test]
fn interrupt_reports_queued_builds_as_not_started() {
    let ws = TempWorkspace::new();
    let t = Test::docker_build(["--jobs", "1"].into_iter().chain(FOUR))
        .cwd(ws.path())
        .env("FAKE_DOCKER_HANG", "SERVICE=api");
    let child = t.spawn();
    let _cleanup = Cleanup {
        test: &t,
        xtask: child.id(),
    };
    wait_until("the first build hangs", Duration::from_secs(60), || {
        t.hung_pids().len() == 2
    });
    let pids = t.hung_pids();
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let out = wait_with_timeout(child, Duration::from_secs(30));
    out.expect_code(130);
    let rows = summary_rows(&out.stdout);
    assert!(rows["api"].starts_with("interrupted"), "{}", out.stdout);
    for image in ["executor", "sensor", "worker-shell"] {
        assert!(
            rows[image].starts_with("not started"),
            "{image}: {}",
            out.stdout
        );
    }
    assert!(
        out.stdout
            .contains("4 images: 0 ok, 0 failed, 1 interrupted, 3 not started in "),
        "{}",
        out.stdout
    );
    assert_eq!(t.builds().len(), 1, "queued builds were started");
    wait_until(
        "the fake docker and its child are gone",
        Duration::from_secs(10),
        || pids.iter().all(|&p| !alive(p)),
    );
}

// --- preflight ---------------------------------------------------------------------------------

#[test]
fn no_docker_client() {
    let out = Test::docker_build(["api"]).no_docker().run();
    out.expect_code(1);
    assert!(
        out.stderr.contains("no `docker` client on PATH")
            && out.stderr.contains("cargo xtask engine up"),
        "{}",
        out.stderr
    );
}

#[test]
fn no_buildx_plugin() {
    let t = Test::docker_build(["api"]).env("FAKE_DOCKER_NO_BUILDX", "1");
    let out = t.run();
    out.expect_code(1);
    assert!(
        out.stderr.contains("buildx plugin is missing") && out.stderr.contains("docker-buildx"),
        "{}",
        out.stderr
    );
    assert!(t.builds().is_empty());
}

#[test]
fn unreachable_daemon() {
    let t = Test::docker_build(["api"]).env("FAKE_DOCKER_NO_DAEMON", "1");
    let out = t.run();
    out.expect_code(1);
    assert!(
        out.stderr.contains("the Docker daemon is unreachable")
            && out.stderr.contains("Cannot connect to the Docker daemon")
            && out.stderr.contains("cargo xtask engine up"),
        "{}",
        out.stderr
    );
    assert!(t.builds().is_empty());
}

#[test]
fn missing_dockerfile() {
    let ws = TempWorkspace::new();
    fs::remove_file(ws.path().join("docker/Dockerfile.worker.optimized")).unwrap();
    let t = Test::docker_build(["all"]).cwd(ws.path());
    let out = t.run();
    out.expect_code(1);
    assert!(
        out.stderr.contains(
            "image `worker-shell`: its Dockerfile docker/Dockerfile.worker.optimized is missing"
        ) && out.stderr.contains("hint: restore it"),
        "{}",
        out.stderr
    );
    // the engine may have been probed meanwhile (that overlaps reading the declaration), but no
    // build started
    assert!(t.builds().is_empty());
}

#[test]
fn outside_the_workspace() {
    // CARGO_MANIFEST_DIR (which `cargo run` sets and cargo test passes on) is not in the
    // environment Test builds, so the root can only come from the current directory
    let t = Test::new();
    let outside = t.tmp.path().to_path_buf();
    let out = t.args(["docker-build", "--dry-run"]).cwd(&outside).run();
    assert_ne!(out.code, Some(0), "{}", out.stdout);
    assert!(
        out.stderr.contains("not inside the attune workspace"),
        "{}",
        out.stderr
    );
}

// --- the declaration, checked before any build ---------------------------------------------------

/// A service added as AGENTS.md says, but without its stage in docker/Dockerfile.workspace.
fn workspace_with_a_new_image() -> TempWorkspace {
    let ws = TempWorkspace::new();
    let manifest = ws.path().join("Cargo.toml");
    let mut text = fs::read_to_string(&manifest).unwrap();
    text.push_str(
        "\n[[workspace.metadata.attune.images]]\nname = \"api-next\"\nbinary = \"attune-api\"\n\
         dockerfile = \"docker/Dockerfile.optimized\"\ntarget = \"runtime\"\nservice = \"api\"\n",
    );
    fs::write(&manifest, text).unwrap();
    ws
}

#[test]
fn a_stage_missing_from_the_workspace_dockerfile_is_reported_before_any_build() {
    let ws = workspace_with_a_new_image();
    for dry_run in [false, true] {
        let mut args = vec!["--strategy", "workspace", "api", "api-next"];
        if dry_run {
            args.push("--dry-run");
        }
        let t = Test::docker_build(args).cwd(ws.path());
        let out = t.run();
        out.expect_code(2);
        assert!(
            out.stderr.contains(
                "image `api-next`: docker/Dockerfile.workspace has no stage `api-next` (stages: "
            ) && out.stderr.contains(
                "hint: add the line `FROM service AS api-next` to docker/Dockerfile.workspace"
            ),
            "{}",
            out.stderr
        );
        assert!(t.builds().is_empty(), "{:?}", t.builds());
    }
    // whichever strategy builds it: every strategy's missing line is named at once, nothing runs
    let t = Test::docker_build(["api-next"]).cwd(ws.path());
    let out = t.run();
    out.expect_code(2);
    let hints: Vec<&str> = (out.stderr.lines())
        .filter_map(|l| {
            l.trim()
                .strip_prefix("hint: add the line `FROM service AS api-next` to ")
        })
        .collect();
    // (every strategy declared with one Dockerfile for all images needs the line)
    assert!(
        hints.contains(&"docker/Dockerfile.workspace"),
        "{}",
        out.stderr
    );
    assert!(t.builds().is_empty(), "{:?}", t.builds());
    // with the lines it names, the per-service strategy builds it from its own Dockerfile and
    // stage
    for file in hints {
        let path = ws.path().join(file);
        let text = fs::read_to_string(&path).unwrap();
        fs::write(&path, format!("{text}\nFROM service AS api-next\n")).unwrap();
    }
    let t = Test::docker_build(["api-next"]).cwd(ws.path());
    t.run().expect_code(0);
    assert_eq!(t.builds().len(), 1);
}

#[test]
fn a_missing_per_image_dockerfile_is_reported_under_the_workspace_strategy() {
    let ws = TempWorkspace::new();
    fs::remove_file(ws.path().join("docker/Dockerfile.pack-binaries")).unwrap();
    let t = Test::docker_build(["--strategy", "workspace", "api"]).cwd(ws.path());
    let out = t.run();
    out.expect_code(1);
    assert!(
        out.stderr.contains(
            "image `pack-binaries`: its Dockerfile docker/Dockerfile.pack-binaries is missing"
        ),
        "{}",
        out.stderr
    );
    assert!(t.builds().is_empty());
}

#[test]
fn a_declared_path_outside_the_workspace_is_refused() {
    let ws = TempWorkspace::new();
    let manifest = ws.path().join("Cargo.toml");
    let text = fs::read_to_string(&manifest).unwrap();
    assert!(text.contains("output = \"target/pack-binaries\""));
    fs::write(
        &manifest,
        text.replace("output = \"target/pack-binaries\"", "output = \".\""),
    )
    .unwrap();
    let t = Test::docker_build(["--dry-run"]).cwd(ws.path());
    let out = t.run();
    out.expect_code(1);
    assert!(
        out.stderr.contains(
            "image `pack-binaries`: `output = \".\"` must be a path inside the workspace"
        ),
        "{}",
        out.stderr
    );
}

// --- SIGKILL ------------------------------------------------------------------------------------

#[test]
fn sigkill_of_the_xtask_leaves_no_build_running() {
    let ws = TempWorkspace::new();
    let t = Test::docker_build(["api", "executor"])
        .cwd(ws.path())
        .env("FAKE_DOCKER_HANG", "SERVICE=api|SERVICE=executor")
        .env("FAKE_DOCKER_IGNORE_SIGTERM", "1");
    let mut child = t.spawn();
    let _cleanup = Cleanup {
        test: &t,
        xtask: child.id(),
    };
    wait_until(
        "both hanging builds (docker and its plugin child) wrote their pids",
        Duration::from_secs(60),
        || t.hung_pids().len() == 4,
    );
    let pids = t.hung_pids();
    assert!(pids.iter().all(|&p| alive(p)), "{pids:?}");
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
    child.wait().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let left: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
    assert!(
        left.is_empty(),
        "still running a second after the xtask was killed: {left:?}"
    );
}

#[test]
fn an_unreachable_docker_host_the_user_set_is_never_replaced() {
    // --engine auto would start the private engine when nothing is configured; a DOCKER_HOST the
    // user set is reported instead
    let t = Test::docker_build(["api"])
        .env("ATTUNE_ENGINE", "auto")
        .env("DOCKER_HOST", "unix:///dead.sock")
        .env("FAKE_DOCKER_NO_DAEMON", "1");
    let out = t.run();
    out.expect_code(1);
    assert!(
        out.stderr
            .contains("the engine you configured (DOCKER_HOST=unix:///dead.sock) does not answer"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("starting the private engine"),
        "{}",
        out.stderr
    );
    assert!(t.builds().is_empty());
}

// --- build arguments, secrets, flags ---------------------------------------------------------------

#[test]
fn a_build_arg_the_declaration_owns_cannot_be_overridden() {
    let t = Test::docker_build(["--build-arg", "SERVICE=executor", "api", "sensor"]);
    let out = t.run();
    out.expect_code(2);
    assert!(
        out.stderr
            .contains("--build-arg SERVICE: SERVICE is set per image by the declaration"),
        "{}",
        out.stderr
    );
    assert!(t.builds().is_empty());
}

#[test]
fn secret_looking_build_args_never_reach_the_log_the_json_or_the_dry_run() {
    let ws = TempWorkspace::new();
    let t = Test::docker_build([
        "--json",
        "--build-arg",
        "NPM_TOKEN=abc",
        "--secret",
        "id=npm,src=.npmrc",
        "--ssh",
        "default",
        "api",
    ])
    .cwd(ws.path());
    let out = t.run();
    out.expect_code(0);
    // buildx gets the value, and the pass-throughs
    let builds = t.builds();
    assert_eq!(arg_after(&builds[0], "--build-arg")[1], "NPM_TOKEN=abc");
    assert_eq!(arg_after(&builds[0], "--secret"), ["id=npm,src=.npmrc"]);
    assert_eq!(arg_after(&builds[0], "--ssh"), ["default"]);
    let log = t.log("api");
    assert!(log.contains("NPM_TOKEN=***"), "{log}");
    for (what, text) in [
        ("log", &log),
        ("json", &out.stdout),
        ("stderr", &out.stderr),
    ] {
        assert!(!text.contains("abc"), "{what}: {text}");
    }
    for json in [false, true] {
        let mut args = vec!["--dry-run", "--build-arg", "NPM_TOKEN=abc", "api"];
        if json {
            args.push("--json");
        }
        let out = Test::docker_build(args).no_docker().run();
        out.expect_code(0);
        assert!(
            out.stdout.contains("NPM_TOKEN=***") && !out.stdout.contains("abc"),
            "{}",
            out.stdout
        );
    }
}

#[test]
fn dry_run_json_prints_the_plan_as_json() {
    let out = Test::docker_build(["--dry-run", "--json", "api"])
        .no_docker()
        .run();
    out.expect_code(0);
    let plan: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", out.stdout));
    assert_eq!(plan["builds"][0]["image"], "api", "{plan}");
    assert_eq!(plan["builds"][0]["argv"][0], "docker", "{plan}");
}

#[test]
fn bad_flag_values_are_usage_errors() {
    for (args, expect) in [
        (vec!["--build-arg", "=x"], "the name before `=` is empty"),
        (vec!["--tag", ""], "--tag ``: a tag is"),
        (vec!["--registry", ""], "--registry ``: expected a registry"),
        (vec!["--push"], "--push without --registry"),
        (
            vec!["--secret", "src=.npmrc"],
            "--secret `src=.npmrc`: no id=NAME",
        ),
        (vec!["--ssh", "a b"], "--ssh `a b`: expected"),
    ] {
        let t = Test::docker_build(args.iter().chain(&["api"]));
        let out = t.run();
        out.expect_code(2);
        assert!(out.stderr.contains(expect), "{args:?}: {}", out.stderr);
        assert!(t.builds().is_empty());
    }
}

#[test]
fn an_unwritable_log_dir_is_one_error_up_front() {
    let t = Test::new();
    let file = t.tmp.path().join("a-file");
    fs::write(&file, "").unwrap();
    let log_dir = file.join("logs");
    let t = t
        .args(["docker-build", "--strategy", "per-service", "--log-dir"])
        .args([&log_dir])
        .args(["api", "executor"]);
    let out = t.run();
    out.expect_code(1);
    let needle = format!("--log-dir {}: cannot write there", log_dir.display());
    assert_eq!(out.stderr.matches(&needle).count(), 1, "{}", out.stderr);
    assert!(t.builds().is_empty());
}

#[test]
fn concurrent_runs_on_one_log_dir_take_turns() {
    let ws = TempWorkspace::new();
    let shared = tempfile::tempdir().unwrap();
    let run = |fail: bool| {
        let mut t = Test::new()
            .args(["docker-build", "--strategy", "per-service", "--log-dir"])
            .args([shared.path()])
            .args(["api"])
            .cwd(ws.path())
            .env("FAKE_DOCKER_SLOW_MS", "1500");
        if fail {
            t = t.env("FAKE_DOCKER_FAIL", "SERVICE=api");
        }
        t
    };
    let (a, b) = (run(true), run(false));
    let (child_a, child_b) = (a.spawn(), b.spawn());
    let out_a = wait_with_timeout(child_a, Duration::from_secs(60));
    let out_b = wait_with_timeout(child_b, Duration::from_secs(60));
    out_a.expect_code(1);
    out_b.expect_code(0);
    let waited = [&out_a, &out_b]
        .iter()
        .filter(|o| o.stderr.contains("waiting for it to finish"))
        .count();
    assert_eq!(waited, 1, "{}\n{}", out_a.stderr, out_b.stderr);
    // the two builds did not overlap, and the log is one run's, whole
    let (ia, ib) = (a.cargo_intervals(), b.cargo_intervals());
    assert!(ia[0].1 <= ib[0].0 || ib[0].1 <= ia[0].0, "{ia:?} {ib:?}");
    let log = fs::read_to_string(shared.path().join("api.log")).unwrap();
    assert_eq!(log.matches("# exit: ").count(), 1, "{log}");
    assert_eq!(log.matches("$ docker buildx build").count(), 1, "{log}");
    // the failed run's tail is its own failure
    assert!(
        out_a.stdout.contains("ERROR: failed to solve"),
        "{}",
        out_a.stdout
    );
}

#[test]
fn bench_reps_zero_is_a_usage_error() {
    let t = Test::new().args(["bench", "--reps", "0", "--dry-run"]);
    let out = t.run();
    out.expect_code(2);
    assert!(
        out.stderr.contains("--reps 0: at least one repetition"),
        "{}",
        out.stderr
    );
    assert!(t.docker_calls().is_empty());
}

#[test]
fn bench_scale_flags_combine_or_exit_2_naming_both() {
    // a flag of the scale scenario without it, the scenario beside another, images given to it,
    // an unknown step or dependency set, a contender without the ephemeral step: exit 2, nothing
    // run
    for (args, says) in [
        (vec!["--sizes", "8"], "--sizes belongs to --scenarios scale"),
        (
            vec!["--scenarios", "cold", "--plot", "x.svg"],
            "--plot belongs to --scenarios scale; --scenarios is cold",
        ),
        (vec!["--scenarios", "scale,cold"], "`scale` runs alone"),
        (
            vec!["--scenarios", "scale", "api"],
            "it takes no images (api)",
        ),
        (
            vec!["--scenarios", "scale", "--steps", "cold,warm"],
            "--steps warm",
        ),
        (
            vec!["--scenarios", "scale", "--deps", "huge"],
            "--deps huge",
        ),
        (vec!["--scenarios", "scale", "--sizes", "0"], "--sizes 0"),
        (
            vec![
                "--scenarios",
                "scale",
                "--steps",
                "cold",
                "--contenders",
                "cache",
            ],
            "--steps has no `ephemeral`",
        ),
        (
            vec!["--scenarios", "scale", "--contenders", "chef"],
            "unknown contender `chef` for --scenarios scale",
        ),
        (
            vec![
                "--scenarios",
                "scale",
                "--contenders",
                "sccache",
                "--sccache",
                "/nonexistent/sccache",
            ],
            "--sccache /nonexistent/sccache: no such file",
        ),
        (
            vec!["--scenarios", "scale", "--smoke", "--sccache", "/bin/true"],
            "--sccache /bin/true: the sccache contender does not run",
        ),
        (
            vec!["--scenarios", "scale", "--smoke", "--contenders", "cache"],
            "--smoke has no `ephemeral`",
        ),
        (vec!["--scenarios", "scale", "--reps", "0"], "--reps 0"),
    ] {
        let mut argv = vec!["bench", "--dry-run"];
        argv.extend(args.iter().copied());
        let t = Test::new().args(argv.clone());
        let out = t.run();
        out.expect_code(2);
        assert!(out.stderr.contains(says), "{argv:?}: {}", out.stderr);
        assert!(t.docker_calls().is_empty(), "{argv:?}");
    }
}

#[test]
fn bench_scale_dry_run_describes_each_size_from_the_generator() {
    let t = Test::new().args([
        "bench",
        "--dry-run",
        "--scenarios",
        "scale",
        "--sizes",
        "4,16",
        "--deps",
        "small",
        "--contenders",
        "cache,native",
    ]);
    let out = t.run();
    out.expect_code(0);
    for n in [4, 16] {
        assert!(
            out.stdout.contains(&format!("size {n}: "))
                && out.stdout.contains(&format!("small-{n}")),
            "{}",
            out.stdout
        );
    }
    // the ephemeral step lists exactly the named contenders, and the generated images
    assert!(
        out.stdout
            .contains("xtask docker-build --cache CARRY svc-01 svc-02 svc-03 svc-04\n"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("sccache"), "{}", out.stdout);
    assert!(out.stdout.contains("buildx bake"), "{}", out.stdout);
    assert!(t.docker_calls().is_empty());
}

#[test]
fn bench_scale_merge_refuses_what_is_not_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("other.json");
    std::fs::write(&bad, "{\"rows\": []}").unwrap();
    let t = Test::new().args(vec![
        "bench".to_string(),
        "--scenarios".into(),
        "scale".into(),
        "--merge".into(),
        bad.display().to_string(),
    ]);
    let out = t.run();
    out.expect_code(2);
    // a flag of a run beside a merge that runs nothing
    let good = dir.path().join("empty-report.json");
    std::fs::write(
        &good,
        r#"{"date": "", "command": "", "cores": 2, "engine": "", "buildx": "", "reps": 1, "sizes": [], "goals": []}"#,
    )
    .unwrap();
    let only = Test::new().args(vec![
        "bench".to_string(),
        "--scenarios".into(),
        "scale".into(),
        "--merge".into(),
        good.display().to_string(),
        "--deps".into(),
        "real".into(),
    ]);
    let refused = only.run();
    refused.expect_code(2);
    assert!(
        refused
            .stderr
            .contains("--deps with --merge and no --sizes: nothing runs"),
        "{}",
        refused.stderr
    );
    assert!(
        out.stderr.contains(&format!(
            "--merge {}: not the --json of `bench --scenarios scale`",
            bad.display()
        )),
        "{}",
        out.stderr
    );
}

// --- --push: the atomic publish, --builders ------------------------------------------------------

/// The `docker buildx imagetools create` invocations (the tag moves).
fn tag_moves(t: &Test) -> Vec<Vec<String>> {
    t.docker_calls()
        .into_iter()
        .filter(|argv| argv.get(1..3) == Some(&["buildx".into(), "imagetools".into()]))
        .collect()
}

#[test]
fn push_moves_every_tag_only_after_every_build_pushed_its_staging_tag() {
    let ws = TempWorkspace::new();
    let t = Test::docker_build(["--push", "--registry", "reg.test/ns", "--json"])
        .args(FOUR)
        .cwd(ws.path());
    let out = t.run();
    out.expect_code(0);
    let builds = t.builds();
    assert_eq!(builds.len(), 4);
    for argv in &builds {
        let tag = arg_after(argv, "--tag");
        assert_eq!(tag.len(), 1, "{argv:?}");
        assert!(tag[0].ends_with(":xtask-staging-dev"), "{argv:?}");
        assert_eq!(arg_after(argv, "--metadata-file").len(), 1, "{argv:?}");
    }
    // every move comes after the last build started (the fake logs in call order)
    let calls = t.docker_calls();
    let last_build = calls
        .iter()
        .rposition(|a| a.get(2).is_some_and(|w| w == "build"))
        .unwrap();
    let first_move = calls
        .iter()
        .position(|a| a.get(2).is_some_and(|w| w == "imagetools"))
        .unwrap();
    assert!(last_build < first_move, "{calls:?}");
    let mut moves: Vec<String> = tag_moves(&t).iter().map(|a| a[3..].join(" ")).collect();
    moves.sort();
    assert_eq!(
        moves,
        FOUR.map(|i| format!(
            "create --tag reg.test/ns/attune-{i}:dev reg.test/ns/attune-{i}@sha256:fake"
        ))
    );
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["publish"]["moved"], true, "{report}");
    for image in report["images"].as_array().unwrap() {
        let name = image["image"].as_str().unwrap();
        assert_eq!(image["digest"], "sha256:fake", "{image}");
        assert_eq!(
            image["published"],
            format!("reg.test/ns/attune-{name}:dev@sha256:fake"),
            "{image}"
        );
    }
}

/// A registry on loopback that answers what a publish asks: `HEAD .../manifests/TAG` with the
/// digest in `digest`, the catalog and tag lists with every repository and `dev`.
fn fake_registry(digest: std::sync::Arc<std::sync::Mutex<String>>) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            // the whole request (the client may write it in pieces)
            let mut request = String::new();
            let mut buf = [0u8; 4096];
            while !request.contains("\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.push_str(&String::from_utf8_lossy(&buf[..n])),
                }
            }
            let answer = if request.starts_with("HEAD ") && request.contains("/manifests/dev") {
                format!(
                    "HTTP/1.0 200 OK\r\nDocker-Content-Digest: {}\r\n\r\n",
                    digest.lock().unwrap()
                )
            } else if request.contains("/v2/_catalog") {
                let repos: Vec<String> =
                    FOUR.iter().map(|i| format!("\"ns/attune-{i}\"")).collect();
                let body = format!("{{\"repositories\": [{}]}}", repos.join(","));
                format!("HTTP/1.0 200 OK\r\n\r\n{body}")
            } else if request.contains("/tags/list") {
                "HTTP/1.0 200 OK\r\n\r\n{\"tags\": [\"dev\"]}".to_string()
            } else {
                "HTTP/1.0 404 Not Found\r\n\r\n".to_string()
            };
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    port
}

#[test]
fn a_publish_whose_tags_still_name_its_digests_builds_nothing() {
    let ws = TempWorkspace::new();
    let digest = std::sync::Arc::new(std::sync::Mutex::new("sha256:fake".to_string()));
    let registry = format!("127.0.0.1:{}/ns", fake_registry(digest.clone()));
    let publish = || {
        let t = Test::docker_build(["--push", "--registry", &registry, "--json"])
            .args(FOUR)
            .cwd(ws.path());
        let out = t.run();
        out.expect_code(0);
        let report: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(report["publish"]["moved"], true, "{report}");
        (t, report)
    };
    let (t, _) = publish();
    assert_eq!(t.builds().len(), 4);
    assert_eq!(tag_moves(&t).len(), 4);
    // nothing changed and every tag names the digest the last publish moved it to
    let (t, report) = publish();
    assert_eq!(t.builds().len(), 0, "nothing to build");
    assert_eq!(tag_moves(&t).len(), 0, "nothing to move");
    for image in report["images"].as_array().unwrap() {
        let name = image["image"].as_str().unwrap();
        assert_eq!(image["up_to_date"], true, "{image}");
        assert_eq!(
            image["published"],
            format!("{registry}/attune-{name}:dev@sha256:fake"),
            "{image}"
        );
    }
    // a tag moved elsewhere since: the set is built and published again
    *digest.lock().unwrap() = "sha256:other".into();
    let (t, _) = publish();
    assert_eq!(t.builds().len(), 4);
    assert_eq!(tag_moves(&t).len(), 4);
}

#[test]
fn a_failed_set_moves_no_tag_and_names_what_failed() {
    let ws = TempWorkspace::new();
    let t = Test::docker_build(["--push", "--registry", "reg.test/ns"])
        .args(FOUR)
        .cwd(ws.path())
        .env("FAKE_DOCKER_FAIL", "SERVICE=executor");
    let out = t.run();
    out.expect_code(1);
    // the others still built and pushed their staging tags, but no tag moved
    assert_eq!(t.builds().len(), 4);
    assert_eq!(tag_moves(&t), Vec::<Vec<String>>::new());
    assert!(
        out.stdout
            .contains("publish: NO tag moved; every tag is where it was, because:\n  executor: build failed\n"),
        "{}",
        out.stdout
    );
}

#[test]
fn ctrl_c_during_a_publish_moves_no_tag() {
    let ws = TempWorkspace::new();
    let t = Test::docker_build(["--push", "--registry", "reg.test/ns"])
        .args(FOUR)
        .cwd(ws.path())
        .env("FAKE_DOCKER_HANG", "SERVICE=api");
    let child = t.spawn();
    let _cleanup = Cleanup {
        test: &t,
        xtask: child.id(),
    };
    wait_until(
        "api hangs and the three others pushed their staging tags",
        Duration::from_secs(60),
        || {
            !t.hung_pids().is_empty()
                && ["executor", "sensor", "worker-shell"].iter().all(|image| {
                    fs::read_to_string(t.log_dir().join(format!("{image}.log")))
                        .is_ok_and(|l| l.contains("# exit: 0"))
                })
        },
    );
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let out = wait_with_timeout(child, Duration::from_secs(30));
    out.expect_code(130);
    assert_eq!(tag_moves(&t), Vec::<Vec<String>>::new());
    assert!(
        out.stdout.contains("publish: NO tag moved"),
        "{}",
        out.stdout
    );
}

#[test]
fn push_partial_pushes_each_tag_as_its_build_finishes() {
    let ws = TempWorkspace::new();
    let t = Test::docker_build(["--push", "--push-partial", "--registry", "reg.test/ns"])
        .args(["api", "executor"])
        .cwd(ws.path())
        .env("FAKE_DOCKER_FAIL", "SERVICE=executor");
    let out = t.run();
    out.expect_code(1);
    let tags: Vec<String> = t
        .builds()
        .iter()
        .flat_map(|a| {
            arg_after(a, "--tag")
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        tags.contains(&"reg.test/ns/attune-api:dev".to_string()),
        "{tags:?}"
    );
    assert_eq!(tag_moves(&t), Vec::<Vec<String>>::new());
    assert!(!out.stdout.contains("publish:"), "{}", out.stdout);
    // --push-partial alone is a usage error
    Test::docker_build(["--push-partial", "--dry-run", "api"])
        .no_docker()
        .run()
        .expect_code(2);
}

#[test]
fn builders_spread_the_images_and_a_failed_build_is_retried_on_another() {
    let ws = TempWorkspace::new();
    let t = Test::docker_build([
        "--strategy",
        "workspace",
        "--builders",
        "one,flaky",
        "--registry",
        "reg.test/ns",
    ])
    .args(FOUR)
    .cwd(ws.path())
    // only the build on builder `flaky` of executor fails: its retry on `one` succeeds
    .env("FAKE_DOCKER_FAIL", "flaky");
    let out = t.run();
    let builds = t.builds();
    let on = |argv: &Vec<String>| arg_after(argv, "--builder")[0].to_string();
    let target = |argv: &Vec<String>| arg_after(argv, "--target")[0].to_string();
    // the seed ran first, alone, on the first builder, exporting the cache
    assert_eq!(
        (target(&builds[0]), on(&builds[0])),
        ("api".into(), "one".into())
    );
    assert_eq!(
        arg_after(&builds[0], "--cache-to"),
        ["type=registry,ref=reg.test/ns/attune-cache:workspace,mode=max"]
    );
    for argv in &builds[1..] {
        assert_eq!(
            arg_after(argv, "--cache-from"),
            ["type=registry,ref=reg.test/ns/attune-cache:workspace"]
        );
    }
    // executor and worker-shell were placed on `flaky`, failed there, and ran again on `one`
    let placed: Vec<(String, String)> = builds.iter().map(|a| (target(a), on(a))).collect();
    for image in ["executor", "worker-shell"] {
        assert!(
            placed.contains(&(image.into(), "flaky".into())),
            "{placed:?}"
        );
        assert!(placed.contains(&(image.into(), "one".into())), "{placed:?}");
    }
    assert_eq!(builds.len(), 6, "{placed:?}");
    out.expect_code(0);
    let rows = summary_rows(&out.stdout);
    assert!(
        rows["executor"].ends_with("one (retry; failed on flaky)"),
        "{}",
        out.stdout
    );
    assert!(rows["sensor"].ends_with("  one"), "{}", out.stdout);

    // --no-retry: the failure stands
    let t = Test::docker_build([
        "--strategy",
        "per-service",
        "--builders",
        "one,flaky",
        "--no-retry",
    ])
    .args(["api", "executor"])
    .cwd(ws.path())
    .env("FAKE_DOCKER_FAIL", "flaky");
    t.run().expect_code(1);
    assert_eq!(t.builds().len(), 2);
}

/// After a run whose cargo step ran on the engine in use, docker-build has BuildKit size the cache
/// mounts (`buildx du ... --filter type=exec.cachemount`), so that BuildKit's GC, a second later,
/// holds none of them while the next build asks for them (docs/SCALING.md, run 12). Not in a dry
/// run, and not when the builds ran on a named builder (the listing would size the default one's).
#[test]
fn a_run_whose_cargo_step_ran_has_the_cache_mounts_sized() {
    let sized = |t: &Test| {
        (t.docker_calls().iter())
            .filter(|c| c[1..3] == ["buildx", "du"])
            .filter(|c| arg_after(c, "--filter") == ["type=exec.cachemount"])
            .count()
    };
    // an engine of its own: the sizing waits to hold the engine alone (`engine_use`), which the
    // other tests' runs on the shared fake engine would deny it
    let own = |args: &[&str]| {
        let test = Test::docker_build(args);
        let host = format!("unix://{}/own.sock", test.tmp.path().display());
        test.env("DOCKER_HOST", host)
    };
    let run = own(&["api"]);
    run.run().expect_code(0);
    assert_eq!(sized(&run), 1, "{:?}", run.docker_calls());
    for args in [vec!["--dry-run", "api"], vec!["--builder", "remote", "api"]] {
        let test = own(&args);
        test.run().expect_code(0);
        assert_eq!(sized(&test), 0, "{args:?}: {:?}", test.docker_calls());
    }
}
