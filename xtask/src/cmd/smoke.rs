//! `cargo xtask smoke`: runs each built image's binary in its container (the declaration's
//! `smoke` argument lists), pack binaries on the host, and asks a running container of every image
//! with a `health` path for it over loopback.

use std::{
    net::TcpListener,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use crate::proc::Command;

use anyhow::{bail, Context};

use crate::{flags, proc::capture_with_timeout, util::Status, workspace};

mod compose;

pub fn run(root: &Path, args: flags::SmokeArgs) -> anyhow::Result<Status> {
    if args.compose {
        return compose::run(root, &args);
    }
    let decl = workspace::load(root)?;
    let images = decl.select(&args.images)?;
    let tag = args.tag.unwrap_or_else(|| decl.tag.clone());
    let (mut passed, mut failed) = (0, 0);
    for image in images {
        let mut checks: Vec<(String, anyhow::Result<String>)> = Vec::new();
        match &image.output {
            Some(dir) => {
                let binary = root.join(dir).join(&image.binary);
                for smoke in &image.smoke {
                    let mut cmd = Command::new(&binary);
                    cmd.args(smoke);
                    checks.push((
                        format!("{} {}", binary.display(), smoke.join(" ")),
                        capture_with_timeout(&mut cmd, Duration::from_secs(30)),
                    ));
                }
            }
            None => {
                let reference = format!("{}{}:{tag}", decl.image_prefix, image.name);
                for smoke in &image.smoke {
                    let mut cmd = Command::new("docker");
                    cmd.args(["run", "--rm", &reference]).args(smoke);
                    checks.push((
                        format!("docker run --rm {reference} {}", smoke.join(" ")),
                        capture_with_timeout(&mut cmd, Duration::from_secs(60)),
                    ));
                }
                if let Some(path) = &image.health {
                    checks.push((
                        format!("GET {path} of a running {reference} (host network, loopback)"),
                        health_check(&reference, path),
                    ));
                }
            }
        }
        for (what, result) in checks {
            match result {
                Ok(out) => {
                    passed += 1;
                    let first = out.lines().next().unwrap_or("").trim();
                    println!(
                        "ok    {:<14} {what}: {}",
                        image.name,
                        crate::exec::progress::short(first, 80)
                    );
                }
                Err(err) => {
                    failed += 1;
                    println!("FAIL  {:<14} {what}: {err:#}", image.name);
                }
            }
        }
    }
    println!("smoke: {passed} passed, {failed} failed");
    Ok(Status::from_ok(failed == 0))
}

/// Starts the image with the host's network on a free loopback port, waits for `path` to answer
/// 200, and stops the container.
fn health_check(reference: &str, path: &str) -> anyhow::Result<String> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let bind = format!("127.0.0.1:{port}");
    let id = capture_with_timeout(
        Command::new("docker").args([
            "run",
            "--detach",
            "--rm",
            "--network",
            "host",
            "--env",
            &format!("ATTUNE_API_BIND={bind}"),
            reference,
        ]),
        Duration::from_secs(60),
    )
    .with_context(|| format!("cannot start {reference}"))?;
    let id = id.trim().to_string();
    let result = poll(&bind, path, Duration::from_secs(30));
    let _ = capture_with_timeout(
        Command::new("docker").args(["stop", "--time", "5", &id]),
        Duration::from_secs(30),
    );
    result
}

fn poll(addr: &str, path: &str, timeout: Duration) -> anyhow::Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        match get(addr, path) {
            Ok((200, body)) => return Ok(format!("200 {}", body.trim())),
            Ok((status, body)) => bail!("{path} answered {status}: {body}"),
            Err(err) if Instant::now() > deadline => {
                return Err(err.context(format!(
                    "{path} did not answer within {}s",
                    timeout.as_secs()
                )))
            }
            Err(_) => thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// `GET path` on the api at `addr` (a loopback `host:port`).
fn get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let addr = addr
        .parse()
        .with_context(|| format!("`{addr}` is not an address like 127.0.0.1:8080"))?;
    crate::http::get(addr, path, None)
}
