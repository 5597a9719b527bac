//! A second private dockerd beside the first, as a second builder of a farm on one machine
//! (`cargo xtask engine up --second`, `engine down --second`): its own data root, exec root, pid
//! file and socket under `<engine dir>/second`, its own bridge `br-attune2` (never no bridge: a
//! second daemon started without one deletes the first one's docker0), `--iptables=false` so it
//! never rewrites the first daemon's rules, and NAT for its bridge's subnet only. A docker context
//! names it, so `--builders default,attune-second` reaches it. The base images come from the first
//! engine (`docker save | docker load`). Idempotent.

use std::path::Path;

use crate::proc::Command;

use anyhow::bail;

use crate::{
    engine::{self, EngineDir},
    proc::run_checked,
};

/// The docker context (and so the buildx builder name) of the second engine.
pub const CONTEXT: &str = "attune-second";
const BRIDGE: &str = "br-attune2";
const BRIDGE_ADDR: &str = "172.31.250.1/24";
const SUBNET: &str = "172.31.250.0/24";

/// Where the second engine keeps its state.
pub fn dir(first: &EngineDir) -> EngineDir {
    EngineDir {
        root: first.root.join("second"),
    }
}

/// The iptables rules that give the bridge's containers (RUN steps) a way out, and nothing else:
/// `(table, chain, rule)`.
fn nat_rules() -> Vec<(&'static str, &'static str, Vec<String>)> {
    let words = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
    vec![
        (
            "nat",
            "POSTROUTING",
            words(&format!("-s {SUBNET} ! -o {BRIDGE} -j MASQUERADE")),
        ),
        (
            "filter",
            "FORWARD",
            words(&format!("-i {BRIDGE} -j ACCEPT")),
        ),
        (
            "filter",
            "FORWARD",
            words(&format!(
                "-o {BRIDGE} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
            )),
        ),
    ]
}

/// What `engine status` says of the second engine.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SecondStatus {
    pub pid: Option<u32>,
    pub socket: std::path::PathBuf,
    /// The Docker version it answered with, when it answers.
    pub server_version: Option<String>,
    pub context: &'static str,
    pub bridge: &'static str,
}

/// The second engine's state: its pid file, and whether its socket answers.
pub fn status(first: &EngineDir) -> SecondStatus {
    let dir = dir(first);
    let pid = dir.running_pid();
    let server_version = pid.and_then(|_| {
        crate::proc::capture_with_timeout(
            Command::new("docker")
                .arg("--host")
                .arg(dir.docker_host())
                .args(["version", "--format", "{{.Server.Version}}"]),
            std::time::Duration::from_secs(10),
        )
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
    });
    SecondStatus {
        pid,
        socket: dir.socket(),
        server_version,
        context: CONTEXT,
        bridge: BRIDGE,
    }
}

fn quiet(cmd: &mut Command) -> bool {
    crate::proc::succeeds(cmd)
}

pub fn up(root: &Path, store: Option<crate::engine_config::ImageStore>) -> anyhow::Result<()> {
    if !crate::proc::is_root() {
        bail!("engine up --second: needs root (a bridge, NAT rules and a dockerd)");
    }
    let first = EngineDir::from_env();
    if first.running_pid().is_none() {
        bail!("engine up --second: the first private engine is not running\n  hint: run `cargo xtask engine up` first");
    }
    let dir = dir(&first);
    if !quiet(Command::new("ip").args(["link", "show", BRIDGE])) {
        run_checked(
            Command::new("ip").args(["link", "add", BRIDGE, "type", "bridge"]),
            "ip link add",
        )?;
    }
    let has_addr =
        crate::proc::output(Command::new("ip").args(["-4", "addr", "show", "dev", BRIDGE]))
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(BRIDGE_ADDR));
    if !has_addr {
        run_checked(
            Command::new("ip").args(["addr", "add", BRIDGE_ADDR, "dev", BRIDGE]),
            "ip addr add",
        )?;
    }
    run_checked(
        Command::new("ip").args(["link", "set", BRIDGE, "up"]),
        "ip link set up",
    )?;
    for (table, chain, rule) in nat_rules() {
        let present = quiet(
            Command::new("iptables")
                .args(["-t", table, "-C", chain])
                .args(&rule),
        );
        if !present {
            run_checked(
                Command::new("iptables")
                    .args(["-t", table, "-I", chain])
                    .args(&rule),
                "iptables -I",
            )?;
        }
    }
    engine::start_dockerd_with(
        &dir,
        &[format!("--bridge={BRIDGE}"), "--iptables=false".to_string()],
        store,
    )?;
    for image in engine::base_images(root)? {
        let present = quiet(Command::new("docker").args([
            "--host",
            &dir.docker_host(),
            "image",
            "inspect",
            &image,
        ]));
        if present {
            continue;
        }
        eprintln!("engine: copying {image} from the first engine to the second");
        crate::proc::pipe(
            Command::new("docker").args(["--host", &first.docker_host(), "save", &image]),
            Command::new("docker").args(["--host", &dir.docker_host(), "load", "--quiet"]),
            &format!("docker save | docker load of {image} into the second engine"),
        )?;
    }
    let host = format!("host={}", dir.docker_host());
    if !quiet(Command::new("docker").args(["context", "inspect", CONTEXT])) {
        run_checked(
            Command::new("docker").args(["context", "create", CONTEXT, "--docker", &host]),
            "docker context create",
        )?;
    }
    // the first engine builds in a farm only on containerd's store (its seed exports layers)
    let with_first = match first.config().map(|c| c.store) {
        Some(crate::engine_config::ImageStore::Classic) => "",
        _ => "default,",
    };
    eprintln!(
        "engine: second dockerd up (pid {}), bridge {BRIDGE} ({BRIDGE_ADDR}), docker context and builder `{CONTEXT}`\n  use it with: cargo xtask docker-build --builders {with_first}{CONTEXT} --registry 127.0.0.1:5000/attune ...",
        dir.running_pid().map(|p| p.to_string()).unwrap_or_else(|| "?".into())
    );
    Ok(())
}

pub fn down() -> anyhow::Result<()> {
    let dir = dir(&EngineDir::from_env());
    engine::stop_dockerd(&dir);
    for (table, chain, rule) in nat_rules() {
        while quiet(
            Command::new("iptables")
                .args(["-t", table, "-D", chain])
                .args(&rule),
        ) {}
    }
    if quiet(Command::new("ip").args(["link", "show", BRIDGE])) {
        run_checked(
            Command::new("ip").args(["link", "delete", BRIDGE]),
            "ip link delete",
        )?;
    }
    quiet(Command::new("docker").args(["context", "rm", "--force", CONTEXT]));
    eprintln!("engine: second engine stopped; bridge {BRIDGE}, its NAT rules and the context `{CONTEXT}` removed");
    Ok(())
}
