//! Guards that need the real engine (issue 12, items 1, 4 and 5), run by `cargo xtask ci`'s
//! `engine-guards` step with `ATTUNE_ENGINE_TESTS=1`. Without that variable each test says so
//! and returns: plain `cargo test` never talks to the engine (ARCHITECTURE.md's invariant);
//! with it, a missing engine fails them.
//!
//! - a build argument the declaration owns is refused before anything runs (item 1);
//! - a `DOCKER_HOST` the user named is never replaced by the private engine (item 4);
//! - adding a service as AGENTS.md says works: docker-build names the missing Dockerfile stage
//!   before any build, and with that line added the new image builds and runs (item 5);
//! - a published set where one image fails moves no tag in the local registry (issue 15);
//! - a change in one service builds only the images of its binary: the builder's digests first,
//!   the others left out (issue 22);
//! - the private engine's BuildKit prunes its cache by the sizes its daemon.json names (issue 22:
//!   Docker 28's defaults pruned the cargo cache mounts between builds).

#[allow(dead_code)] // shared with cache_flow.rs
mod engine_support;

use std::{fs, path::Path};

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
fn the_private_engine_prunes_its_build_cache_by_the_sizes_engine_status_names() {
    if !enabled("build cache gc") {
        return;
    }
    let out = xtask(&workspace_root(), &["engine", "status", "--json"], &[]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let private = status["private_engine_socket"].as_str().unwrap();
    if status["docker_host"].as_str() != Some(&format!("unix://{private}")) {
        eprintln!("build cache gc: the engine is not the private one; its config is not ours");
        return;
    }
    let gc = &status["cache_gc"];
    assert!(gc.is_object(), "engine status names no cache gc: {status}");
    // BuildKit's own account of its policy (the daemon's own builder): every size rule carries
    // the three sizes, printed in GiB or, past 1024 GiB, TiB
    let inspect = docker(&["buildx", "inspect", "default"]);
    let text = String::from_utf8_lossy(&inspect.stdout);
    let gib = |value: &str| {
        let value = value.trim();
        let (number, scale) = if let Some(n) = value.strip_suffix("TiB") {
            (n, 1024.0)
        } else if let Some(n) = value.strip_suffix("GiB") {
            (n, 1.0)
        } else {
            (value.strip_suffix("MiB")?, 1.0 / 1024.0)
        };
        number.trim().parse::<f64>().ok().map(|n| n * scale)
    };
    for (field, label) in [
        ("reserved_gib", "Reserved Space:"),
        ("max_used_gib", "Max Used Space:"),
        ("min_free_gib", "Min Free Space:"),
    ] {
        let want = gc[field].as_f64().unwrap();
        let seen: Vec<f64> = (text.lines())
            .filter_map(|l| l.split_once(label))
            .filter_map(|(_, v)| gib(v))
            .collect();
        assert!(
            seen.iter().any(|v| (v - want).abs() < 0.01 * want.max(1.0)),
            "no `{label}` of {want} GiB in buildx inspect (saw {seen:?}):\n{text}"
        );
    }
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

    // ...without the stages: reported before any build, every line to add (one per strategy
    // whose Dockerfile names a stage per image), which the contributor then adds as told
    let tag = format!("guard-{}", std::process::id());
    let out = xtask(ws, &["docker-build", "--tag", &tag, name], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let hints = stage_hints(&stderr(&out));
    let line = format!("FROM service AS {name}");
    assert!(
        hints
            .iter()
            .any(|(l, f)| *l == line && f == "docker/Dockerfile.workspace"),
        "{}",
        stderr(&out)
    );
    assert!(
        !ws.join(format!("target/xtask/logs/{name}.log")).exists(),
        "a build ran although the stage was missing"
    );
    for (line, file) in &hints {
        let path = ws.join(file);
        let mut text = fs::read_to_string(&path).unwrap();
        text.push_str(&format!("\n{line}\n"));
        fs::write(&path, text).unwrap();
    }

    // ...and with the lines the hints name, the image builds and its binary runs
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

    // ...and the whole test suite passes in that workspace (issue 23: a test that restated the
    // number of images broke here), regenerated compose file included. Its own target directory
    // (the suite's cargo holds this one's lock), kept under this workspace's target/ so a second
    // run is incremental; the engine tests are not run again inside.
    let out = xtask(ws, &["compose-file"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let suite = std::process::Command::new(env!("CARGO"))
        .args(["test", "-p", "xtask", "--quiet"])
        .current_dir(ws)
        .env("CARGO_TARGET_DIR", root.join("target/guard-suite"))
        .env_remove("ATTUNE_ENGINE_TESTS")
        .env_remove("CARGO_MANIFEST_DIR")
        .output()
        .expect("cargo test in the copy");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&suite.stdout),
        String::from_utf8_lossy(&suite.stderr)
    );
    assert!(
        suite.status.success(),
        "cargo test -p xtask fails in a workspace with the added service:\n{said}"
    );
    eprintln!(
        "adding a service: cargo test -p xtask passed in the copy ({} test binaries)",
        said.matches("test result: ok").count()
    );
}

/// `(line, file)` of each `hint: add the line `LINE` to FILE` docker-build printed.
fn stage_hints(stderr: &str) -> Vec<(String, String)> {
    (stderr.lines())
        .filter_map(|l| l.trim().strip_prefix("hint: add the line `"))
        .filter_map(|rest| rest.split_once("` to "))
        .map(|(line, file)| (line.to_string(), file.trim().to_string()))
        .collect()
}

/// `GET path` on the local registry (127.0.0.1:5000, what `engine up` starts): the body, with the
/// manifest media types a pushed image uses.
fn registry_get(path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect("127.0.0.1:5000").expect("the local registry");
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:5000\r\nAccept: application/vnd.oci.image.index.v1+json, \
         application/vnd.docker.distribution.manifest.list.v2+json, \
         application/vnd.oci.image.manifest.v1+json, \
         application/vnd.docker.distribution.manifest.v2+json\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Issue 15: a set where one image fails moves no tag in the real registry; once every image
/// builds, the tags move (so the check can fail).
#[test]
fn a_failed_set_moves_no_tag_in_the_registry() {
    if !enabled("atomic publish") {
        return;
    }
    let root = workspace_root();
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    copy_workspace(&root, ws);
    let prefix = format!("guard-{}", std::process::id());
    let registry = format!("127.0.0.1:5000/{prefix}");
    let publish = |ws: &Path| {
        xtask(
            ws,
            &[
                "docker-build",
                "--push",
                "--registry",
                &registry,
                "--tag",
                "guard",
                "api",
                "sensor",
            ],
            &[],
        )
    };
    let manifest = |image: &str| {
        let (status, body) = registry_get(&format!("/v2/{prefix}/attune-{image}/manifests/guard"));
        assert_eq!(status, 200, "{image}: {body}");
        body
    };
    let out = publish(ws);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let before = (manifest("api"), manifest("sensor"));

    // api changes, sensor's build fails: nothing may move
    let dockerfile = ws.join("docker/Dockerfile.workspace");
    let original = fs::read_to_string(&dockerfile).unwrap();
    let nonce = format!("{:?}", std::time::SystemTime::now());
    let edited = original
        .replace(
            "FROM service AS api\n",
            &format!("FROM service AS api\nLABEL guard.nonce=\"{nonce}\"\n"),
        )
        .replace(
            "FROM service AS sensor\n",
            "FROM service AS sensor\nRUN exit 3\n",
        );
    assert_ne!(edited, original);
    fs::write(&dockerfile, &edited).unwrap();
    let out = publish(ws);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(said.contains("NO tag moved"), "{said}");
    assert_eq!((manifest("api"), manifest("sensor")), before);

    // sensor fixed: the set publishes and api's tag moves
    fs::write(
        &dockerfile,
        edited.replace(
            "FROM service AS sensor\nRUN exit 3\n",
            "FROM service AS sensor\n",
        ),
    )
    .unwrap();
    let out = publish(ws);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_ne!(manifest("api"), before.0, "api's tag did not move");
}

/// The plan of `docker-build --dry-run --json`, as `(image, argv)`: what the declaration says.
fn planned(ws: &Path, tag: &str) -> Vec<(String, Vec<String>)> {
    let out = xtask(
        ws,
        &["docker-build", "--dry-run", "--json", "--tag", tag],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let builds = plan["builds"].as_array().unwrap();
    (builds.iter())
        .map(|b| {
            let argv = b["argv"].as_array().unwrap();
            let argv = argv.iter().map(|a| a.as_str().unwrap().to_string());
            (b["image"].as_str().unwrap().to_string(), argv.collect())
        })
        .collect()
}

#[test]
fn a_change_in_one_service_builds_only_the_images_of_its_binary() {
    if !enabled("binaries first") {
        return;
    }
    let root = workspace_root();
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    copy_workspace(&root, ws);
    let tag = format!("binaries-{}", std::process::id());
    let plan = planned(ws, &tag);
    let service_of =
        |argv: &[String]| (argv.iter()).find_map(|a| a.strip_prefix("SERVICE=").map(String::from));
    // the first image built from a service's own binary (`SERVICE=` names its crate)
    let (image, service) = (plan.iter())
        .find_map(|(i, argv)| Some((i.clone(), service_of(argv)?)))
        .expect("an image with a SERVICE build argument");
    let loaded: Vec<&String> = (plan.iter())
        .filter(|(_, argv)| (argv.iter()).any(|a| a == "--load" || a.starts_with("type=docker")))
        .map(|(i, _)| i)
        .collect();
    let same_binary: Vec<&String> = (plan.iter())
        .filter(|(_, argv)| service_of(argv).as_deref() == Some(service.as_str()))
        .map(|(i, _)| i)
        .collect();
    let build = |what: &str| -> serde_json::Value {
        let out = xtask(ws, &["docker-build", "--json", "--tag", &tag], &[]);
        assert_eq!(out.status.code(), Some(0), "{what}: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // the first build records what each image is made of (the digests exported beside it)
    build("first build");
    let main = ws.join(format!("crates/{service}/src/main.rs"));
    let text = fs::read_to_string(&main).unwrap();
    let probe = format!("attune-binaries-probe-{}", std::process::id());
    // the first statement of main is now one that keeps a new string in the binary
    let at = (text.find("fn main()"))
        .and_then(|f| text[f..].find('{').map(|b| f + b + 1))
        .unwrap_or_else(|| panic!("{} has no `fn main()`", main.display()));
    let changed = format!(
        "{}\n    std::hint::black_box(\"{probe}\");{}",
        &text[..at],
        &text[at..]
    );
    fs::write(&main, changed).unwrap();

    let report = build("after the change");
    let left_out: Vec<String> = (report["binaries"]["left_out"].as_array())
        .expect("the report says what the digests left out")
        .iter()
        .map(|i| i.as_str().unwrap().to_string())
        .collect();
    let built: Vec<String> = (report["images"].as_array().unwrap().iter())
        .filter(|i| i["up_to_date"] == false)
        .map(|i| i["image"].as_str().unwrap().to_string())
        .collect();
    for other in loaded.iter().filter(|i| !same_binary.contains(i)) {
        assert!(left_out.contains(other), "{other} was built: {built:?}");
    }
    for same in &same_binary {
        assert!(built.contains(same), "{same} was not built: {left_out:?}");
    }
    // two or more images after the probe: one buildx bake, each image's log its own
    let bakes = report["binaries"]["bakes"].as_array().map_or(0, Vec::len);
    assert_eq!(
        bakes,
        usize::from(built.len() >= 2),
        "{}",
        report["binaries"]
    );
    for image in (report["images"].as_array().unwrap().iter()).filter(|i| i["up_to_date"] == false)
    {
        let log = fs::read_to_string(ws.join(image["log"].as_str().unwrap())).unwrap();
        let name = image["image"].as_str().unwrap();
        let first = log.lines().next().unwrap_or_default();
        assert_eq!(
            first.starts_with("$ docker buildx bake "),
            bakes == 1,
            "{name}: {first}"
        );
        assert!(
            log.contains("] COPY --from=builder "),
            "{name}'s log names its own copy: {log}"
        );
        for prefix in [format!("[{name} internal]"), format!("[{name}] ")] {
            assert!(
                !log.contains(&prefix),
                "{name}'s log keeps bake's {prefix}: {log}"
            );
        }
    }
    // a second change: the layer record the first change's build of those images left is now
    // superseded by the second's, and goes beside the probe
    let second = fs::read_to_string(&main)
        .unwrap()
        .replace(&probe, &format!("{probe}-2"));
    fs::write(&main, second).unwrap();
    let report = build("after a second change");
    let superseded = report["binaries"]["superseded_records"].as_u64();
    assert!(
        superseded.is_some_and(|n| n >= same_binary.len() as u64),
        "superseded layer records removed: {superseded:?}, expected at least {}",
        same_binary.len()
    );
    // the rebuilt image holds the changed binary
    let name = format!("attune-{image}:{tag}");
    let found = docker(&[
        "run",
        "--rm",
        "--entrypoint",
        "grep",
        &name,
        "-c",
        &probe,
        "/usr/local/bin/attune-service",
    ]);
    for (i, _) in &plan {
        let _ = docker(&["image", "rm", &format!("attune-{i}:{tag}")]);
    }
    assert!(
        found.status.success(),
        "{name} does not hold the changed binary: {}",
        String::from_utf8_lossy(&found.stderr)
    );
}
