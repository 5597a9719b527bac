//! `cargo xtask engine up|down|status`: the command; the setup itself is the library module
//! [`crate::engine`], which every command that needs an engine starts through the build session.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use crate::{
    docker::{missing_images, probe},
    engine::{base_images, docker_host_note, down, up, EngineDir},
    flags,
    registry::{self, Registry},
    second_engine,
    util::Status,
};

pub fn run(root: &Path, args: flags::EngineArgs) -> anyhow::Result<Status> {
    let dir = EngineDir::from_env();
    match args.cmd {
        flags::EngineCmd::Up {
            second: false,
            image_store,
        } => up(root, &dir, image_store).map(|()| Status::Ok),
        flags::EngineCmd::Up {
            second: true,
            image_store,
        } => second_engine::up(root, image_store).map(|()| Status::Ok),
        flags::EngineCmd::Down { second: false } => down(&dir).map(|()| Status::Ok),
        flags::EngineCmd::Down { second: true } => second_engine::down().map(|()| Status::Ok),
        flags::EngineCmd::Status { json } => status(root, &dir, json),
    }
}

/// What `engine status` reports (`--json` prints it as is).
#[derive(Debug, serde::Serialize)]
struct EngineStatus {
    reachable: bool,
    server_version: Option<String>,
    docker_host: Option<String>,
    error: Option<String>,
    buildx_version: Option<String>,
    private_engine_pid: Option<u32>,
    private_engine_socket: PathBuf,
    /// Base image reference -> present (only when the engine is reachable).
    base_images: BTreeMap<String, bool>,
    registry: Option<registry::RegistryStatus>,
    /// The private engine's build-cache garbage collection (its `daemon.json`), when it runs
    /// with this xtask's configuration (`up` restarts one that does not).
    cache_gc: Option<crate::engine_config::CacheGc>,
    /// The private engine's image store (`engine up --image-store`), when it runs with this
    /// xtask's configuration.
    image_store: Option<crate::engine_config::ImageStore>,
    /// The second engine (`engine up --second`), a second builder for `--builders`.
    second_engine: second_engine::SecondStatus,
}

fn status(root: &Path, dir: &EngineDir, json: bool) -> anyhow::Result<Status> {
    let probe = probe();
    let mut base_images_present = BTreeMap::new();
    if probe.reachable() {
        let bases = base_images(root)?;
        let missing = missing_images(&bases);
        for image in bases {
            let present = !missing.contains(&image);
            base_images_present.insert(image, present);
        }
    }
    let config = dir.running_config();
    let report = EngineStatus {
        reachable: probe.reachable(),
        server_version: probe.server_version.clone(),
        docker_host: std::env::var("DOCKER_HOST").ok(),
        error: probe.error.clone(),
        buildx_version: probe.buildx_version.clone(),
        private_engine_pid: dir.running_pid(),
        private_engine_socket: dir.socket(),
        base_images: base_images_present,
        registry: Registry::new(&dir.root).ok().map(|r| r.status()),
        cache_gc: config.map(|c| c.gc),
        image_store: config.map(|c| c.store),
        second_engine: second_engine::status(dir),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_status(&report, dir);
    }
    Ok(Status::from_ok(
        report.reachable && report.buildx_version.is_some(),
    ))
}

fn print_status(report: &EngineStatus, dir: &EngineDir) {
    match &report.server_version {
        Some(version) => println!("engine: Docker {version} reachable{}", docker_host_note()),
        None => println!(
            "engine: not reachable ({}); start one with `cargo xtask engine up`",
            report.error.as_deref().unwrap_or("unknown error")
        ),
    }
    println!(
        "buildx: {}",
        report.buildx_version.as_deref().unwrap_or("not installed")
    );
    match report.private_engine_pid {
        Some(pid) => println!(
            "private engine: running, pid {pid}, socket {} (export DOCKER_HOST={})",
            dir.socket().display(),
            dir.docker_host()
        ),
        None => println!("private engine: not running ({})", dir.root.display()),
    }
    if let Some(store) = report.image_store {
        println!(
            "image store: {} (`cargo xtask engine up --image-store {}` switches)",
            store.name(),
            store.other().name()
        );
    }
    match (&report.cache_gc, report.private_engine_pid) {
        (Some(gc), _) => println!("build cache: {gc} ({})", dir.config_file().display()),
        (None, Some(_)) => println!(
            "build cache: the private engine runs an older binary or configuration; `cargo xtask engine up` restarts it"
        ),
        (None, None) => {}
    }
    for (image, present) in &report.base_images {
        println!(
            "base image {image}: {}",
            if *present { "present" } else { "missing" }
        );
    }
    if let Some(registry) = &report.registry {
        match (registry.pid, registry.answers) {
            (Some(pid), true) => println!(
                "registry: running at {} (pid {pid}), data {}",
                registry.address,
                registry.data.display()
            ),
            (Some(pid), false) => println!(
                "registry: process {pid} runs but {} does not answer",
                registry.address
            ),
            (None, true) => println!(
                "registry: {} answers, but not ours (no pid file)",
                registry.address
            ),
            (None, false) => println!("registry: not running (`cargo xtask engine up` starts it)"),
        }
    }
    let second = &report.second_engine;
    match (second.pid, &second.server_version) {
        (Some(pid), Some(version)) => println!(
            "second engine: Docker {version} running, pid {pid}, socket {}, context {}, bridge {}",
            second.socket.display(),
            second.context,
            second.bridge
        ),
        (Some(pid), None) => println!(
            "second engine: process {pid} runs but {} does not answer",
            second.socket.display()
        ),
        (None, _) => {
            println!("second engine: not running (`cargo xtask engine up --second` starts it)")
        }
    }
}
