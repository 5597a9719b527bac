//! The local registry: Debian's `docker-registry` (the CNCF distribution server) on a loopback
//! port, started and stopped with the private engine (`cargo xtask engine up|down`).
//!
//! It is a real registry server, not a directory pretending: images are pushed to it and cache
//! is exported to it over the registry HTTP API (`--cache-to type=registry,ref=ADDR/...`).
//! dockerd treats loopback registries as insecure (plain HTTP) by default, so neither the
//! daemon nor BuildKit needs configuring.
//!
//! Its files live under the engine directory: `registry/config.yml` (written by `up`),
//! `registry/data/` (the blobs), `registry/registry.pid` and `registry/registry.log`.
//! The address is `127.0.0.1:5000` unless `ATTUNE_REGISTRY_ADDR` names another loopback one.

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use crate::proc::{Command, Stdio};

use anyhow::{bail, Context};

use crate::proc::send_signal;

/// The server binary Debian's `docker-registry` package installs.
pub const BINARY: &str = "docker-registry";
const DEFAULT_ADDR: &str = "127.0.0.1:5000";

/// Where the local registry keeps its files and which address it serves.
#[derive(Debug, Clone)]
pub struct Registry {
    pub root: PathBuf,
    pub addr: SocketAddr,
}

/// What `engine status` reports of the registry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RegistryStatus {
    /// `host:port`, the prefix for image references and `registry://` cache locations.
    pub address: String,
    pub pid: Option<u32>,
    /// Whether `GET /v2/` answered 200.
    pub answers: bool,
    pub data: PathBuf,
}

impl Registry {
    /// The registry that belongs to the engine directory `engine_root`.
    pub fn new(engine_root: &Path) -> anyhow::Result<Registry> {
        let raw = std::env::var("ATTUNE_REGISTRY_ADDR").unwrap_or_else(|_| DEFAULT_ADDR.into());
        let addr = parse_addr(&raw)?;
        Ok(Registry {
            root: engine_root.join("registry"),
            addr,
        })
    }
    pub fn config_file(&self) -> PathBuf {
        self.root.join("config.yml")
    }
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }
    pub fn pidfile(&self) -> PathBuf {
        self.root.join("registry.pid")
    }
    pub fn log(&self) -> PathBuf {
        self.root.join("registry.log")
    }

    /// The pid in the pid file, if that process is alive and is our registry (a pid file left
    /// by a killed server is stale).
    pub fn running_pid(&self) -> Option<u32> {
        crate::proc::live_pid(
            &self.pidfile(),
            &[BINARY, &self.config_file().to_string_lossy()],
        )
    }

    pub fn status(&self) -> RegistryStatus {
        RegistryStatus {
            address: self.addr.to_string(),
            pid: self.running_pid(),
            answers: answers(self.addr),
            data: self.data_dir(),
        }
    }

    /// Starts the registry unless ours already runs and answers. Needs the `docker-registry`
    /// binary (the engine's package install brings it).
    pub fn up(&self) -> anyhow::Result<()> {
        if let Some(pid) = self.running_pid() {
            if answers(self.addr) {
                eprintln!(
                    "engine: registry already running at {} (pid {pid})",
                    self.addr
                );
                return Ok(());
            }
            eprintln!(
                "engine: registry (pid {pid}) does not answer on {}; restarting it",
                self.addr
            );
            self.down()?;
        }
        if answers(self.addr) {
            bail!(
                "something else already serves a registry on {}; stop it, or pick another loopback address with ATTUNE_REGISTRY_ADDR",
                self.addr
            );
        }
        fs::create_dir_all(self.data_dir())
            .with_context(|| format!("cannot create {}", self.data_dir().display()))?;
        let config = config_yaml(self.addr, &self.data_dir());
        if fs::read_to_string(self.config_file()).ok().as_deref() != Some(config.as_str()) {
            fs::write(self.config_file(), &config)
                .with_context(|| format!("cannot write {}", self.config_file().display()))?;
        }
        let _ = fs::remove_file(self.pidfile());
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .with_context(|| format!("cannot open {}", self.log().display()))?;
        let mut cmd = Command::new(BINARY);
        cmd.arg("serve")
            .arg(self.config_file())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // a daemon: Ctrl-C in the terminal that started it must not stop it
        let mut child = crate::proc::spawn_daemon(&mut cmd).with_context(|| {
            format!("cannot start {BINARY} (is Debian's docker-registry package installed?)")
        })?;
        fs::write(self.pidfile(), format!("{}\n", child.id()))
            .with_context(|| format!("cannot write {}", self.pidfile().display()))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !answers(self.addr) {
            // (not `running_pid`: right after the fork, /proc names the xtask, not the registry)
            let exited = child.try_wait().ok().flatten().is_some();
            if Instant::now() > deadline || exited {
                bail!(
                    "the registry did not answer on http://{}/v2/ within 20 s; see its log {}",
                    self.addr,
                    self.log().display()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
        eprintln!(
            "engine: registry {} up at {} (pid {}), data {}",
            BINARY,
            self.addr,
            child.id(),
            self.data_dir().display()
        );
        Ok(())
    }

    /// Stops the registry named in our pid file, and nothing else. Its data stays.
    pub fn down(&self) -> anyhow::Result<()> {
        let Some(pid) = self.running_pid() else {
            let _ = fs::remove_file(self.pidfile());
            return Ok(());
        };
        send_signal(pid as i32, rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        if Path::new(&format!("/proc/{pid}")).exists() {
            send_signal(pid as i32, rustix::process::Signal::KILL);
        }
        let _ = fs::remove_file(self.pidfile());
        eprintln!("engine: registry (pid {pid}) stopped");
        Ok(())
    }
}

/// A loopback `host:port`: the registry is never exposed beyond this machine.
fn parse_addr(raw: &str) -> anyhow::Result<SocketAddr> {
    let addr: SocketAddr = raw.parse().map_err(|_| {
        crate::util::UsageError(format!(
            "ATTUNE_REGISTRY_ADDR={raw:?} is not an address like 127.0.0.1:5000"
        ))
    })?;
    if !addr.ip().is_loopback() {
        return Err(crate::util::UsageError(format!(
            "ATTUNE_REGISTRY_ADDR={raw:?} is not a loopback address: the local registry serves this machine only"
        ))
        .into());
    }
    Ok(addr)
}

/// The registry's configuration: filesystem storage, deletes allowed (so a prune can reclaim
/// space), no auth (loopback only).
fn config_yaml(addr: SocketAddr, data: &Path) -> String {
    format!(
        "# Written by `cargo xtask engine up`: the local registry of the private engine.\n\
         version: 0.1\n\
         log:\n  level: warn\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         http:\n  addr: {addr}\n",
        data.display()
    )
}

/// Whether `GET /v2/` on `addr` answers `200`: the registry API's own liveness check.
pub fn answers(addr: SocketAddr) -> bool {
    http_get(addr, "/v2/").is_ok_and(|(status, _)| status == 200)
}

/// `GET path` on the registry at `addr`: the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    crate::http::get(addr, path, None)
}

/// [`http_get`] with an `Accept` header (the manifest endpoint answers by media type).
pub fn http_get_accept(
    addr: SocketAddr,
    path: &str,
    accept: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    crate::http::get(addr, path, accept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_addresses() {
        assert_eq!(
            parse_addr("127.0.0.1:5000").unwrap().to_string(),
            "127.0.0.1:5000"
        );
        assert!(parse_addr("[::1]:5001").is_ok());
        let err = parse_addr("10.0.0.1:5000").unwrap_err().to_string();
        assert!(err.contains("not a loopback address"), "{err}");
        let err = parse_addr("localhost").unwrap_err().to_string();
        assert!(err.contains("not an address"), "{err}");
    }

    #[test]
    fn config_names_address_and_storage() {
        let text = config_yaml(
            "127.0.0.1:5055".parse().unwrap(),
            Path::new("/e/registry/data"),
        );
        assert!(text.contains("  addr: 127.0.0.1:5055\n"), "{text}");
        assert!(text.contains("rootdirectory: /e/registry/data\n"), "{text}");
        assert!(text.contains("delete:\n    enabled: true"), "{text}");
    }
}
