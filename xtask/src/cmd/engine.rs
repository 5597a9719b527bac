//! `cargo xtask engine up|down|status`: the command; the setup itself is the library module
//! [`crate::engine`], which every command that needs an engine starts through the build session.

use std::path::Path;

use crate::{
    docker::{missing_images, probe},
    engine::{base_images, docker_host_note, down, up, EngineDir},
    flags, Status,
};

pub fn run(root: &Path, args: flags::EngineArgs) -> anyhow::Result<Status> {
    let dir = EngineDir::from_env();
    match args.cmd {
        flags::EngineCmd::Up => up(root, &dir).map(|()| Status::Ok),
        flags::EngineCmd::Down => down(&dir).map(|()| Status::Ok),
        flags::EngineCmd::Status => status(root, &dir),
    }
}

fn status(root: &Path, dir: &EngineDir) -> anyhow::Result<Status> {
    let probe = probe();
    match &probe.server_version {
        Some(version) => println!("engine: Docker {version} reachable{}", docker_host_note()),
        None => println!(
            "engine: not reachable ({}); start one with `cargo xtask engine up`",
            probe.error.as_deref().unwrap_or("unknown error")
        ),
    }
    println!(
        "buildx: {}",
        probe.buildx_version.as_deref().unwrap_or("not installed")
    );
    match dir.running_pid() {
        Some(pid) => println!(
            "private engine: running, pid {pid}, socket {} (export DOCKER_HOST={})",
            dir.socket().display(),
            dir.docker_host()
        ),
        None => println!("private engine: not running ({})", dir.root.display()),
    }
    if probe.reachable() {
        let bases = base_images(root)?;
        let missing = missing_images(&bases);
        for image in bases {
            let present = !missing.contains(&image);
            println!(
                "base image {image}: {}",
                if present { "present" } else { "missing" }
            );
        }
    }
    Ok(Status::from_ok(
        probe.reachable() && probe.buildx_version.is_some(),
    ))
}
