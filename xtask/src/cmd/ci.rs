//! `cargo xtask ci`: everything CI checks, in order, each step a real process with its own exit
//! code: formatting, clippy, the test suite, the Dockerfile policy, docker-compose.yaml current,
//! then, on the real engine, what `docker buildx bake --print` reads back of a generated bake
//! file, every image built, smoke-tested (alone, then as `docker compose up` runs them), the
//! engine guards, the cache flow (export, wipe, import after a change), a two-builder publish,
//! and the parallel-build verification.

use std::{path::Path, time::Instant};

use crate::proc::Command;

use anyhow::Context;

use crate::{flags, util::Status};

/// One CI step: a name and the command line it runs (`xtask` means this binary).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: &'static str,
    pub argv: Vec<String>,
    /// Extra environment for the step's process.
    pub env: Vec<(&'static str, &'static str)>,
}

fn step(name: &'static str, argv: &[&str]) -> Step {
    Step {
        name,
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec![],
    }
}

/// The steps, in order. Pure, so the list is tested.
pub fn steps(quick_verify: bool) -> Vec<Step> {
    let mut steps = local_steps();
    steps.extend(engine_steps());
    // the perf test needs a builder per image, which the default (workspace) strategy has not:
    // CI verifies the per-service Dockerfiles, all three tests
    let mut verify = vec!["xtask", "verify-parallel", "--strategy", "per-service"];
    if quick_verify {
        verify.push("--quick");
    }
    steps.push(step("verify-parallel", &verify));
    steps
}

/// What needs no engine: formatting, lints, the tests, the Dockerfile policy, the compose file.
fn local_steps() -> Vec<Step> {
    vec![
        step("fmt", &["cargo", "fmt", "--all", "--", "--check"]),
        step(
            "clippy",
            &[
                "cargo",
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        ),
        step("test", &["cargo", "test", "--workspace"]),
        step("lint-docker", &["xtask", "lint-docker"]),
        step("cache-policy", &["xtask", "restore-shared", "--check"]),
        step("compose-file", &["xtask", "compose-file", "--check"]),
    ]
}

/// What runs on the real engine (which the first step makes sure of).
fn engine_steps() -> Vec<Step> {
    vec![
        step("engine", &["xtask", "engine", "up"]),
        // what bake reads back of a generated file with every option a bake file can hold
        step(
            "bake-print",
            &[
                "xtask",
                "bake-file",
                "--check-print",
                "--platform",
                "linux/amd64",
                "--cache-from",
                "type=local,src=target/xtask/bake-cache/{image}",
                "--cache-to",
                "type=local,dest=target/xtask/bake-cache/{image},mode=max",
                "--pull",
                "--no-cache",
            ],
        ),
        step("docker-build", &["xtask", "docker-build", "all"]),
        // cargo's own timing report of that build's cargo step, copied out, slowest crates named
        step("timings", &["xtask", "docker-build", "--timings", "api"]),
        // what docker-build recorded, and the cache it left, read back from the real engine
        step(
            "history-plot",
            &["xtask", "history", "--plot", "target/xtask/history.svg"],
        ),
        step("history-explain", &["xtask", "history", "--explain", "api"]),
        step("cache-du", &["xtask", "cache", "du"]),
        step(
            "cache-prune-dry-run",
            &["xtask", "cache", "prune", "--dry-run"],
        ),
        step("smoke", &["xtask", "smoke", "all"]),
        step("smoke-compose", &["xtask", "smoke", "--compose"]),
        // a generated workspace of 8 services on common (this workspace's dependency set), its
        // Dockerfile derived from the committed one, built cold, after a change in common, in one
        // service, and as a no-op, beside native cargo and buildx bake (bench --scenarios scale;
        // the real size is not a ci step: docs/SCALING.md)
        step(
            "bench-scale-smoke",
            &[
                "xtask",
                "bench",
                "--scenarios",
                "scale",
                "--smoke",
                "--json",
                "target/xtask/bench/scale-smoke.json",
                "--plot",
                "target/xtask/bench/scale-smoke.svg",
            ],
        ),
        // the guards that need the engine: an owned build arg refused, a named DOCKER_HOST kept,
        // a service added as AGENTS.md says builds and runs (xtask/tests/engine_guards.rs)
        Step {
            env: vec![("ATTUNE_ENGINE_TESTS", "1")],
            ..step(
                "engine-guards",
                &["cargo", "test", "-p", "xtask", "--test", "engine_guards"],
            )
        },
        // a farm of two engines on this machine: the services spread over both, the builder
        // stage's layer cache through the local registry (already warm from docker-build: the
        // second engine compiles nothing), published as one set; the publish reads the
        // registry's catalog and tags back
        step("engine-second", &["xtask", "engine", "up", "--second"]),
        step(
            "farm-publish",
            &[
                "xtask",
                "docker-build",
                "services",
                "--builders",
                "default,attune-second",
                "--push",
                "--registry",
                "127.0.0.1:5000/attune",
            ],
        ),
        // the cache flow CI users copy (after the farm: under CI it wipes BuildKit's whole state,
        // which the farm's warm builder stage needs): build and export, wipe BuildKit's state, change a file
        // in crates/api, build with the import (only attune-api recompiles), and the binary is
        // bit-identical to a cold build's (xtask/tests/cache_flow.rs)
        Step {
            env: vec![("ATTUNE_ENGINE_TESTS", "1")],
            ..step(
                "cache-flow",
                &["cargo", "test", "-p", "xtask", "--test", "cache_flow"],
            )
        },
    ]
}

pub fn run(root: &Path, args: flags::CiArgs) -> anyhow::Result<Status> {
    let me = std::env::current_exe().context("cannot find the xtask binary")?;
    let steps: Vec<Step> = steps(!args.full)
        .into_iter()
        .filter(|s| !args.skip.iter().any(|k| k == s.name))
        .collect();
    let mut results: Vec<(&str, bool, f64)> = Vec::new();
    for step in &steps {
        eprintln!("\n==> ci: {} ({})", step.name, step.argv.join(" "));
        let clock = Instant::now();
        let program = if step.argv[0] == "xtask" {
            me.as_os_str().to_owned()
        } else {
            step.argv[0].clone().into()
        };
        let status = crate::proc::status(
            Command::new(program)
                .args(&step.argv[1..])
                .envs(step.env.iter().copied())
                .current_dir(root),
        )
        .with_context(|| format!("cannot start step {}", step.name))?;
        let ok = status.success();
        let seconds = clock.elapsed().as_secs_f64();
        eprintln!(
            "<== ci: {} {} in {seconds:.1}s",
            step.name,
            if ok { "passed" } else { "FAILED" }
        );
        results.push((step.name, ok, seconds));
        if !ok && args.fail_fast {
            break;
        }
    }
    eprintln!();
    for (name, ok, seconds) in &results {
        eprintln!(
            "{:<20} {:<6} {seconds:>7.1}s",
            name,
            if *ok { "passed" } else { "FAILED" }
        );
    }
    let passed = results.iter().filter(|r| r.1).count();
    let failed = results.len() - passed;
    println!("ci: {passed} passed, {failed} failed");
    Ok(Status::from_ok(failed == 0 && results.len() == steps.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_builds_and_verifies_on_the_engine_after_the_static_checks() {
        let names: Vec<&str> = steps(true).iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
                "fmt",
                "clippy",
                "test",
                "lint-docker",
                "cache-policy",
                "compose-file",
                "engine",
                "bake-print",
                "docker-build",
                "timings",
                "history-plot",
                "history-explain",
                "cache-du",
                "cache-prune-dry-run",
                "smoke",
                "smoke-compose",
                "bench-scale-smoke",
                "engine-guards",
                "engine-second",
                "farm-publish",
                "cache-flow",
                "verify-parallel"
            ]
        );
        assert_eq!(
            steps(true).last().unwrap().argv,
            [
                "xtask",
                "verify-parallel",
                "--strategy",
                "per-service",
                "--quick"
            ]
        );
        assert_eq!(
            steps(false).last().unwrap().argv,
            ["xtask", "verify-parallel", "--strategy", "per-service"]
        );
    }
}
