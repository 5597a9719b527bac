//! `cargo xtask smoke --compose`: the services as `docker compose up` runs them, from the
//! committed docker-compose.yaml and the images already built. Every run has its own compose
//! project (and free loopback ports unless the environment names them), and is torn down with
//! `docker compose down` whatever happened.

use std::{collections::BTreeSet, net::TcpListener, path::Path, time::Duration};

use crate::proc::Command;

use anyhow::Context;

use crate::{
    compose, flags, proc::capture_with_timeout, util::Status, util::UsageError, workspace,
};

pub fn run(root: &Path, args: &flags::SmokeArgs) -> anyhow::Result<Status> {
    let decl = workspace::load(root)?;
    let selected: Vec<String> = decl
        .select(&args.images)?
        .into_iter()
        .filter(|i| !i.is_local_output())
        .map(|i| i.name.clone())
        .collect();
    if selected.is_empty() {
        return Err(UsageError(format!(
            "smoke --compose: none of {} is a compose service",
            args.images.join(", ")
        ))
        .into());
    }
    let file = root.join(compose::FILE);
    if !file.is_file() {
        return Err(UsageError(format!(
            "smoke --compose: no {}; run `cargo xtask compose-file`",
            file.display()
        ))
        .into());
    }
    let file = file.display().to_string();
    // compose starts what the selected services depend on; all of it must be healthy
    let expected = with_dependencies(&decl, &selected);
    let project = format!("attune-smoke-{}", std::process::id());
    let mut env: Vec<(String, String)> = Vec::new();
    if let Some(tag) = &args.tag {
        env.push((compose::TAG_VAR.into(), tag.clone()));
    }
    let http = published_ports(&decl, &expected, &mut env)?;
    let docker = |argv: &[String], timeout: Duration| {
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).current_dir(root);
        for (key, value) in &env {
            cmd.env(key, value);
        }
        capture_with_timeout(&mut cmd, timeout)
    };
    let _down = Teardown {
        argv: compose::down_argv(&project, &file),
        env: env.clone(),
        root: root.to_path_buf(),
    };
    println!(
        "      {}",
        compose::up_argv(&project, &file, &selected, args.wait_timeout).join(" ")
    );
    let up = docker(
        &compose::up_argv(&project, &file, &selected, args.wait_timeout),
        Duration::from_secs(args.wait_timeout + 60),
    );
    let ps = docker(&compose::ps_argv(&project, &file), Duration::from_secs(60))
        .and_then(|out| compose::parse_ps(&out).context("cannot parse `docker compose ps` output"));
    let unhealthy = match &ps {
        Ok(containers) => compose::unhealthy(&expected, containers),
        Err(err) => vec![("(all)".to_string(), format!("{err:#}"))],
    };
    let logs = |name: &str| {
        let argv = compose::logs_argv(&project, &file, name);
        docker(&argv, Duration::from_secs(30)).unwrap_or_default()
    };
    let (mut passed, mut failed) = report_services(&expected, &unhealthy, logs);
    if let Some((_, problem)) = unhealthy.iter().find(|(s, _)| s == "(all)") {
        failed += 1;
        println!("FAIL  {:<14} {problem}", "(ps)");
    }
    let (ok, bad) = probe_http(&http, &unhealthy);
    passed += ok;
    failed += bad;
    if let Err(err) = &up {
        if failed == 0 {
            failed += 1;
        }
        let text = format!("{err:#}");
        let last = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        println!("FAIL  {:<14} {last}", "(up)");
    }
    let names: Vec<&str> = unhealthy.iter().map(|(s, _)| s.as_str()).collect();
    println!(
        "smoke --compose: {passed} passed, {failed} failed{}",
        if names.is_empty() {
            String::new()
        } else {
            format!("; not healthy: {}", names.join(", "))
        }
    );
    Ok(Status::from_ok(failed == 0))
}

/// The loopback port each expected service with a port is published on (the environment's
/// `ATTUNE_<IMAGE>_PORT`, else a free one, added to `env`); `(service, port, path)` of each
/// with an HTTP health path.
fn published_ports(
    decl: &workspace::Declaration,
    expected: &[String],
    env: &mut Vec<(String, String)>,
) -> anyhow::Result<Vec<(String, u16, String)>> {
    let mut http: Vec<(String, u16, String)> = Vec::new();
    for name in expected {
        let image = decl.image(name).expect("selected from the declaration");
        let Some(container_port) = image.compose.port else {
            continue;
        };
        let var = compose::port_var(name);
        let port = match std::env::var(&var).ok().filter(|v| !v.trim().is_empty()) {
            Some(value) => value
                .trim()
                .parse()
                .map_err(|_| UsageError(format!("{var}={value:?}: expected a port number")))?,
            None => {
                let free = free_loopback_port()?;
                env.push((var.clone(), free.to_string()));
                free
            }
        };
        if let Some(path) = &image.health {
            http.push((name.clone(), port, path.clone()));
        }
        println!("      {name:<14} container port {container_port} published on 127.0.0.1:{port} ({var})");
    }
    Ok(http)
}

/// A line per expected service: healthy, or what is wrong with it and its logs (`logs`);
/// (passed, failed).
fn report_services(
    expected: &[String],
    unhealthy: &[(String, String)],
    logs: impl Fn(&str) -> String,
) -> (usize, usize) {
    let (mut passed, mut failed) = (0, 0);
    for name in expected {
        let Some((_, problem)) = unhealthy.iter().find(|(s, _)| s == name) else {
            passed += 1;
            println!("ok    {name:<14} running, healthy");
            continue;
        };
        failed += 1;
        println!("FAIL  {name:<14} {problem}");
        for line in logs(name)
            .lines()
            .map(plain)
            .filter(|l| !l.trim().is_empty())
        {
            println!("        {name}: {line}");
        }
    }
    (passed, failed)
}

/// `GET path` of each healthy service with an HTTP health path: (passed, failed).
fn probe_http(http: &[(String, u16, String)], unhealthy: &[(String, String)]) -> (usize, usize) {
    let (mut passed, mut failed) = (0, 0);
    for (name, port, path) in http {
        if unhealthy.iter().any(|(s, _)| s == name) {
            continue;
        }
        let addr = format!("127.0.0.1:{port}");
        match super::poll(&addr, path, Duration::from_secs(10)) {
            Ok(answer) => {
                passed += 1;
                println!("ok    {name:<14} GET {path} on {addr}: {answer}");
            }
            Err(err) => {
                failed += 1;
                println!("FAIL  {name:<14} GET {path} on {addr}: {err:#}");
            }
        }
    }
    (passed, failed)
}

/// `selected` and, transitively, the images they depend on, in declaration order.
fn with_dependencies(decl: &workspace::Declaration, selected: &[String]) -> Vec<String> {
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    let mut todo: Vec<String> = selected.to_vec();
    while let Some(name) = todo.pop() {
        if wanted.insert(name.clone()) {
            if let Some(image) = decl.image(&name) {
                todo.extend(image.compose.depends_on.iter().cloned());
            }
        }
    }
    decl.images
        .iter()
        .filter(|i| wanted.contains(&i.name))
        .map(|i| i.name.clone())
        .collect()
}

/// `line` without terminal control sequences (compose's log output carries some).
fn plain(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters, ended by a letter
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else if !c.is_control() || c == '\t' {
            out.push(c);
        }
    }
    out
}

fn free_loopback_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")
        .context("cannot find a free loopback port")?
        .local_addr()?
        .port())
}

/// Runs `docker compose down` when dropped: after success, failure or an early error.
struct Teardown {
    argv: Vec<String>,
    env: Vec<(String, String)>,
    root: std::path::PathBuf,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        let mut cmd = Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..]).current_dir(&self.root);
        for (key, value) in &self.env {
            cmd.env(key, value);
        }
        match capture_with_timeout(&mut cmd, Duration::from_secs(120)) {
            Ok(_) => println!("      {}: removed", self.argv.join(" ")),
            Err(err) => println!("FAIL  {:<14} {}: {err:#}", "(down)", self.argv.join(" ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_sequences_are_dropped_from_log_lines() {
        assert_eq!(plain("\u{1b}[2Kexecutor: bad\r"), "executor: bad");
        assert_eq!(plain("a\tb"), "a\tb");
    }

    #[test]
    fn dependencies_are_started_and_checked_too() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let decl = workspace::load(root).unwrap();
        assert_eq!(with_dependencies(&decl, &["api".into()]), ["api"]);
        assert_eq!(
            with_dependencies(&decl, &["sensor".into()]),
            [
                "executor",
                "sensor",
                "worker-shell",
                "worker-python",
                "worker-node",
                "worker-full"
            ]
        );
    }
}
