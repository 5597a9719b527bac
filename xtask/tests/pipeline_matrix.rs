//! Every pair of the flags that change docker-build's pipeline, run for real against the fake
//! docker: the pair either works (exit 0, and what each flag does is there: the entry exported,
//! the tags moved, the builds on the builders, the timing report, ...) or is refused before
//! anything runs (exit 2, no build started, the message naming both flags). The table of what
//! is refused is `pipeline::refuse` and ARCHITECTURE.md's; this test is its proof.

#[allow(dead_code)] // the harness is shared with build_cli.rs
mod build_support;

use std::path::Path;

use build_support::{arg_after, Outcome, TempWorkspace, Test};

/// A flag under test: its arguments (with what it needs, e.g. `--registry` for `--push`), and
/// what shows that it did its work, after a run and in a dry run.
struct Flag {
    name: &'static str,
    args: fn(&Path) -> Vec<String>,
    worked: fn(&Run) -> Result<(), String>,
    /// Text a `--dry-run` (not `--json`) shows for it.
    dry: &'static str,
}

/// What one run left behind.
struct Run<'a> {
    ws: &'a Path,
    args: &'a [String],
    test: &'a Test,
    out: &'a Outcome,
}

impl Run<'_> {
    fn builds(&self) -> Vec<Vec<String>> {
        (self.test.builds().into_iter())
            .filter(|a| !arg_after(a, "--file").iter().any(|f| f.contains("cache/")))
            .filter(|a| arg_after(a, "--target") != ["timings"])
            .collect()
    }

    fn each_build(&self, what: &str, ok: impl Fn(&[String]) -> bool) -> Result<(), String> {
        let builds = self.builds();
        match !builds.is_empty() && builds.iter().all(|b| ok(b)) {
            true => Ok(()),
            false => Err(format!("not every build {what}: {builds:?}")),
        }
    }
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

const REGISTRY: &str = "reg.test/ns";

fn flags() -> Vec<Flag> {
    vec![
        Flag {
            name: "--cache",
            args: |ws| vec!["--cache".into(), ws.join("ci-cache").display().to_string()],
            worked: |r| {
                let entries = std::fs::read_dir(r.ws.join("ci-cache"))
                    .map(|d| {
                        d.flatten()
                            .filter(|e| e.path().join("manifest.json").is_file())
                            .count()
                    })
                    .unwrap_or(0);
                match entries {
                    1 => Ok(()),
                    _ => Err(format!("{entries} entries exported")),
                }
            },
            dry: "attune cache import helper",
        },
        Flag {
            name: "--cache-layers",
            args: |ws| {
                let dir = ws.join("ci-cache").display().to_string();
                strings(&["--cache", &dir, "--cache-layers"])
            },
            worked: |r| {
                r.each_build("writes the layer cache", |b| {
                    arg_after(b, "--cache-to")
                        .iter()
                        .any(|t| t.contains("layers-out"))
                })
            },
            dry: "layers-out",
        },
        Flag {
            name: "--push",
            args: |_| strings(&["--push", "--registry", REGISTRY]),
            worked: |r| {
                let moves = (r.test.docker_calls().into_iter())
                    .filter(|a| a.iter().any(|x| x == "imagetools"))
                    .count();
                // --push-partial: each build pushes its tag itself, nothing moves after
                let partial = r.args.iter().any(|a| a == "--push-partial");
                let want = if partial { 0 } else { r.builds().len() };
                let pushed = r.builds().iter().all(|b| b.iter().any(|a| a == "--push"));
                match moves == want && pushed {
                    true => Ok(()),
                    false => Err(format!("{moves} tag moves")),
                }
            },
            dry: "imagetools create",
        },
        Flag {
            name: "--push-partial",
            args: |_| strings(&["--push", "--push-partial", "--registry", REGISTRY]),
            worked: |r| {
                r.each_build("pushes its own tag", |b| {
                    b.iter().any(|a| a == "--push")
                        && arg_after(b, "--tag").iter().all(|t| !t.contains("staging"))
                })
            },
            dry: "--push",
        },
        Flag {
            name: "--builders",
            args: |_| strings(&["--builders", "one,two", "--registry", REGISTRY]),
            worked: |r| {
                let on: Vec<String> = (r.builds().iter())
                    .map(|b| arg_after(b, "--builder").join(","))
                    .collect();
                match on.iter().any(|b| b == "one") && on.iter().any(|b| b == "two") {
                    true => Ok(()),
                    false => Err(format!("placed on {on:?}")),
                }
            },
            dry: "--builder two",
        },
        Flag {
            name: "--timings",
            args: |_| strings(&["--timings"]),
            worked: |r| match r
                .ws
                .join("target/xtask/timings/cargo-timing.html")
                .is_file()
            {
                true => Ok(()),
                false => Err("no timing report".into()),
            },
            dry: "--target timings",
        },
        Flag {
            name: "--force",
            args: |_| strings(&["--force"]),
            // the run before it (the same flags without --force) left every image up to date
            worked: |r| match r.builds().is_empty() || r.out.stdout.contains("up to date") {
                true => Err("an up-to-date image was not built again".into()),
                false => Ok(()),
            },
            dry: "docker buildx build",
        },
        Flag {
            name: "--strategy",
            args: |_| strings(&["--strategy", "per-service"]),
            worked: |r| {
                r.each_build("uses the per-service Dockerfile", |b| {
                    arg_after(b, "--file") != ["docker/Dockerfile.workspace"]
                })
            },
            dry: "Dockerfile.optimized",
        },
        Flag {
            name: "--platform",
            args: |_| strings(&["--platform", "linux/amd64"]),
            worked: |r| {
                r.each_build("names the platform", |b| {
                    arg_after(b, "--platform") == ["linux/amd64"]
                })
            },
            dry: "--platform linux/amd64",
        },
        Flag {
            name: "--dry-run",
            args: |_| strings(&["--dry-run"]),
            worked: |r| match r.test.builds().is_empty() && !r.out.stdout.is_empty() {
                true => Ok(()),
                false => Err("a dry run started a build, or printed nothing".into()),
            },
            dry: "",
        },
        Flag {
            name: "--json",
            args: |_| strings(&["--json"]),
            worked: |r| match serde_json::from_str::<serde_json::Value>(&r.out.stdout) {
                Ok(_) => Ok(()),
                Err(e) => Err(format!("stdout is not JSON: {e}")),
            },
            dry: "",
        },
    ]
}

/// The pairs that are refused: the flags' names, as `pipeline::refuse` and the strategy checks
/// name them.
const REFUSED: &[(&str, &str)] = &[
    ("--cache-layers", "--builders"),
    ("--timings", "--strategy"),
];

/// The arguments of both flags, each option once (`--registry` and `--cache` may come twice).
fn merged(a: Vec<String>, b: Vec<String>) -> Vec<String> {
    let mut out = a;
    let mut rest = b.into_iter().peekable();
    while let Some(arg) = rest.next() {
        let value = rest.next_if(|v| !v.starts_with("--"));
        if out.contains(&arg) {
            continue;
        }
        out.push(arg);
        out.extend(value);
    }
    out
}

/// Runs the pair; the error says what did not hold.
fn check(a: &Flag, b: &Flag) -> Result<(), String> {
    let ws = TempWorkspace::new();
    let mut args = merged((a.args)(ws.path()), (b.args)(ws.path()));
    if !args.contains(&"--strategy".to_string()) {
        args.extend(strings(&["--strategy", "workspace"]));
    }
    args.extend(strings(&["api", "executor"]));
    let refused =
        (REFUSED.iter()).any(|&(x, y)| (x, y) == (a.name, b.name) || (y, x) == (a.name, b.name));
    let forced = [a.name, b.name].contains(&"--force");
    if forced && !args.contains(&"--dry-run".to_string()) {
        // what --force overrides: a first run that records every image
        let first: Vec<String> = args.iter().filter(|x| *x != "--force").cloned().collect();
        let t = Test::docker_build(&first).cwd(ws.path());
        let out = t.run();
        if out.code != Some(0) {
            return Err(format!(
                "the run before --force exited {:?}: {}",
                out.code, out.stderr
            ));
        }
    }
    let test = Test::docker_build(&args).cwd(ws.path());
    let out = test.run();
    if refused {
        let named = out.stderr.contains(a.name) && out.stderr.contains(b.name);
        return match (out.code, named, test.builds().is_empty()) {
            (Some(2), true, true) => Ok(()),
            _ => Err(format!(
                "expected exit 2 naming both flags before any build; exit {:?}, {} builds, stderr: {}",
                out.code,
                test.builds().len(),
                out.stderr
            )),
        };
    }
    if out.code != Some(0) {
        return Err(format!(
            "exit {:?}\nstdout: {}\nstderr: {}",
            out.code, out.stdout, out.stderr
        ));
    }
    let run = Run {
        ws: ws.path(),
        args: &args,
        test: &test,
        out: &out,
    };
    let dry = args.contains(&"--dry-run".to_string());
    for flag in [a, b] {
        let result = match dry {
            // a dry run shows each flag's commands (as text: --json prints the plan)
            true if flag.dry.is_empty() || args.contains(&"--json".to_string()) => {
                (flag.worked)(&run).or_else(|_| {
                    (flag.name != "--dry-run" && flag.name != "--json")
                        .then_some(())
                        .ok_or_else(|| format!("{}: not shown", flag.name))
                })
            }
            true => match out.stdout.contains(flag.dry) {
                true => Ok(()),
                false => Err(format!("the dry run does not show `{}`", flag.dry)),
            },
            false => (flag.worked)(&run),
        };
        result.map_err(|e| format!("{}: {e}", flag.name))?;
    }
    Ok(())
}

#[test]
fn every_pair_of_pipeline_flags_works_or_is_refused_naming_both() {
    let flags = flags();
    let pairs: Vec<(usize, usize)> = (0..flags.len())
        .flat_map(|i| (i + 1..flags.len()).map(move |j| (i, j)))
        .collect();
    let failures = std::sync::Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| loop {
                let k = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(&(i, j)) = pairs.get(k) else { break };
                if let Err(e) = check(&flags[i], &flags[j]) {
                    let line = format!("{} x {}: {e}", flags[i].name, flags[j].name);
                    failures.lock().unwrap().push(line);
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} pairs:\n{}",
        failures.len(),
        pairs.len(),
        failures.join("\n\n")
    );
}

/// The refusals that need a value the matrix does not use: several platforms, with --cache (an
/// entry holds one platform) or --timings (one cargo run's report).
#[test]
fn several_platforms_are_refused_with_cache_or_timings_naming_both() {
    let ws = TempWorkspace::new();
    let cache = ws.path().join("ci-cache").display().to_string();
    for (flag, extra) in [
        ("--cache", vec!["--cache", cache.as_str()]),
        ("--timings", vec!["--timings"]),
    ] {
        let mut args = vec![
            "--strategy",
            "workspace",
            "--platform",
            "linux/amd64,linux/arm64",
        ];
        args.extend(extra);
        args.push("api");
        let t = Test::docker_build(&args).cwd(ws.path());
        let out = t.run();
        out.expect_code(2);
        assert!(
            out.stderr.contains(flag) && out.stderr.contains("--platform"),
            "{}",
            out.stderr
        );
        assert!(t.builds().is_empty(), "{:?}", t.builds());
    }
}

/// Issue 21: `--cache --push`: a set with a failed image moves no tag (and exports no entry);
/// once every image builds, every tag moves.
#[test]
fn a_failed_set_with_cache_and_push_moves_no_tag() {
    let ws = TempWorkspace::new();
    let cache = ws.path().join("ci-cache").display().to_string();
    let args = [
        "--strategy",
        "workspace",
        "--cache",
        &cache,
        "--push",
        "--registry",
        REGISTRY,
        "api",
        "executor",
    ];
    let moves = |t: &Test| {
        (t.docker_calls().into_iter())
            .filter(|a| a.iter().any(|x| x == "imagetools"))
            .count()
    };
    let t = Test::docker_build(args)
        .cwd(ws.path())
        .env("FAKE_DOCKER_FAIL", "SERVICE=executor");
    let out = t.run();
    out.expect_code(1);
    assert_eq!(moves(&t), 0, "{}", out.stdout);
    assert!(out.stdout.contains("NO tag moved"), "{}", out.stdout);
    assert!(
        !ws.path().join("ci-cache").exists()
            || std::fs::read_dir(ws.path().join("ci-cache"))
                .unwrap()
                .next()
                .is_none()
    );
    let t = Test::docker_build(args).cwd(ws.path());
    let out = t.run();
    out.expect_code(0);
    assert_eq!(moves(&t), 2, "{}", out.stdout);
}

/// The private engine on the classic image store (`engine up --image-store classic`): each flag
/// that needs the containerd store (its docker driver exports the layer cache and builds several
/// platforms) exits 2 naming the flag and the store before any build, in a dry run too. The same
/// flags on the containerd store are not refused; on the classic one, an inline cache, `--cache`
/// (the cache mounts), builders that leave the private engine out, and a plain run build.
#[test]
fn the_classic_image_store_refuses_what_only_the_containerd_store_serves() {
    use build_support::FakeDockerd;
    use xtask::engine_config::ImageStore;
    let ws = TempWorkspace::new();
    let cache = ws.path().join("ci-cache").display().to_string();
    let needs: Vec<(&str, Vec<String>)> = vec![
        (
            "--cache-layers",
            strings(&["--cache", &cache, "--cache-layers"]),
        ),
        (
            "--cache-to",
            strings(&["--cache-to", "type=local,dest=layers-{image}"]),
        ),
        (
            "--builders",
            strings(&[
                "--builders",
                "two,default",
                "--registry",
                REGISTRY,
                "--strategy",
                "workspace",
            ]),
        ),
        (
            "--platform",
            strings(&["--platform", "linux/amd64,linux/arm64"]),
        ),
        (
            "--platform",
            strings(&["--platform", "linux/amd64,linux/arm64", "--dry-run"]),
        ),
    ];
    // what the classic store serves: an inline layer cache, and builders that leave it out
    let served: Vec<Vec<String>> = vec![
        strings(&["--cache-to", "type=inline"]),
        strings(&["--cache", &cache]),
        strings(&[
            "--builders",
            "one,two",
            "--registry",
            REGISTRY,
            "--platform",
            "linux/amd64,linux/arm64",
            "--strategy",
            "workspace",
        ]),
    ];
    let run = |engine: &FakeDockerd, args: &[String]| {
        let test = Test::docker_build(args.iter().chain(&strings(&["api", "executor"])))
            .cwd(ws.path())
            .env("ATTUNE_ENGINE_DIR", engine.dir.path())
            .env("DOCKER_HOST", engine.host());
        let out = test.run();
        (out, test.builds().len())
    };
    let classic = FakeDockerd::start(ImageStore::Classic);
    for (flag, args) in &needs {
        let (out, builds) = run(&classic, args);
        assert!(
            out.code == Some(2)
                && out.stderr.contains(flag)
                && out.stderr.contains("classic image store")
                && builds == 0,
            "{flag} on the classic store: exit {:?}, {builds} builds, stderr: {}",
            out.code,
            out.stderr
        );
    }
    // `cache export --cache-layers` asks the same of the engine
    let export = Test::new()
        .args(["cache", "export", "--to", &cache, "--cache-layers", "api"])
        .cwd(ws.path())
        .env("ATTUNE_ENGINE_DIR", classic.dir.path())
        .env("DOCKER_HOST", classic.host());
    let out = export.run();
    assert!(
        out.code == Some(2) && out.stderr.contains("--cache-layers") && export.builds().is_empty(),
        "cache export --cache-layers on the classic store: exit {:?}, stderr: {}",
        out.code,
        out.stderr
    );
    for args in served.iter().chain([&Vec::new()]) {
        let (out, builds) = run(&classic, args);
        assert!(
            out.code == Some(0) && builds > 0,
            "{args:?} on the classic store: exit {:?}, {builds} builds, stderr: {}",
            out.code,
            out.stderr
        );
    }
    drop(classic);
    let containerd = FakeDockerd::start(ImageStore::Containerd);
    for (flag, args) in &needs {
        let mut args = args.clone();
        if !args.contains(&"--dry-run".to_string()) {
            args.push("--dry-run".into());
        }
        let (out, _) = run(&containerd, &args);
        assert!(
            out.code == Some(0) && !out.stderr.contains("image store"),
            "{flag} on the containerd store: exit {:?}, stderr: {}",
            out.code,
            out.stderr
        );
    }
}
