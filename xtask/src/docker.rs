//! Queries of the configured Docker engine: is it reachable, which buildx, which images it has.

use std::{collections::BTreeMap, thread, time::Duration};

use crate::proc::{Command, Stdio};

use crate::proc::capture_with_timeout;

/// What a probe of the configured engine found.
#[derive(Debug, Clone)]
pub struct Probe {
    pub server_version: Option<String>,
    pub buildx_version: Option<String>,
    pub error: Option<String>,
}

impl Probe {
    pub fn reachable(&self) -> bool {
        self.server_version.is_some()
    }

    /// The engine's and buildx's versions, for reports (`unknown (why)` when absent).
    pub fn versions(&self) -> (String, String) {
        let unknown = || format!("unknown ({})", self.error.as_deref().unwrap_or("no answer"));
        (
            self.server_version.clone().unwrap_or_else(unknown),
            self.buildx_version.clone().unwrap_or_else(unknown),
        )
    }
}

pub fn probe() -> Probe {
    if which::which("docker").is_err() {
        return Probe {
            server_version: None,
            buildx_version: None,
            error: Some("no `docker` client on PATH".into()),
        };
    }
    let (server, buildx) = thread::scope(|s| {
        let buildx = s.spawn(|| {
            capture_with_timeout(
                Command::new("docker").args(["buildx", "version"]),
                Duration::from_secs(10),
            )
        });
        let server = capture_with_timeout(
            Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]),
            Duration::from_secs(10),
        );
        (server, buildx.join().expect("probe thread panicked"))
    });
    match server {
        Ok(version) => Probe {
            server_version: Some(version.trim().to_string()),
            buildx_version: buildx.ok().map(|v| v.trim().to_string()),
            error: None,
        },
        Err(err) => Probe {
            server_version: None,
            buildx_version: buildx.ok().map(|v| v.trim().to_string()),
            error: Some(format!("{err:#}")),
        },
    }
}

/// Where and how a measured run happens, for the reports of verify-parallel and bench.
#[derive(Debug, Clone)]
pub struct RunEnvironment {
    /// UTC, `2026-11-29T12:37:00Z`.
    pub date: String,
    /// `cargo xtask` and this process's arguments.
    pub command: String,
    pub cores: usize,
    pub engine: String,
    pub buildx: String,
}

pub fn run_environment() -> RunEnvironment {
    let (engine, buildx) = probe().versions();
    RunEnvironment {
        date: crate::util::utc_date(crate::exec::runner::unix_now()),
        command: std::iter::once("cargo xtask".to_string())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" "),
        cores: thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        engine,
        buildx,
    }
}

/// The images of `images` that the engine does not have (one `docker image inspect` for all).
pub fn missing_images(images: &[String]) -> Vec<String> {
    let found = inspect_images(images);
    images
        .iter()
        .filter(|i| !found.contains_key(i.as_str()))
        .cloned()
        .collect()
}

/// `reference -> (image ID, size)` for the references the engine has, in one process.
pub fn inspect_images(references: &[String]) -> BTreeMap<String, (String, u64)> {
    let mut found = BTreeMap::new();
    if references.is_empty() {
        return found;
    }
    // one line per image, `reference id size`; a missing one only prints an error on stderr
    let output = crate::proc::output(
        Command::new("docker")
            .args(["image", "inspect", "--format", "{{.Id}} {{.Size}}"])
            .args(references)
            .stdin(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let Ok(output) = output else { return found };
    let stderr = String::from_utf8_lossy(&output.stderr);
    let present: Vec<&String> = references
        .iter()
        .filter(|r| !stderr.contains(&format!("No such image: {r}")))
        .collect();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    // a line per image found, in order: when they do not pair up, trust none of them (an id
    // goes into the cache keys)
    if lines.len() != present.len() {
        return found;
    }
    for (reference, line) in present.into_iter().zip(lines) {
        let mut parts = line.split_whitespace();
        if let (Some(id), Some(size)) = (parts.next(), parts.next().and_then(|s| s.parse().ok())) {
            found.insert(reference.clone(), (id.to_string(), size));
        }
    }
    found
}

/// The names of the docker CLI's contexts (read from its config directory, no process):
/// `--builders` runs a build on a context with `docker --context NAME`, since buildx refuses a
/// context's builder while `DOCKER_HOST` is set.
pub fn context_names() -> Vec<String> {
    let config_dir = std::env::var_os("DOCKER_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".docker")));
    let Some(meta) = config_dir.map(|d| d.join("contexts").join("meta")) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(meta) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("meta.json")).ok())
        .filter_map(|text| {
            let value: serde_json::Value = serde_json::from_str(&text).ok()?;
            Some(value.get("Name")?.as_str()?.to_string())
        })
        .collect()
}
