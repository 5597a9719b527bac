//! `cargo xtask smoke --compose` as the real binary, with the fake `docker` (src/bin/fake-docker.rs)
//! answering `docker compose up/ps/logs/down`: which commands run, in which order, what is
//! reported, and that `down` runs on failure too.

// the harness is shared with build_cli.rs; this file uses part of it
#[allow(dead_code)]
mod build_support;

use std::{
    io::{Read, Write},
    net::TcpListener,
    thread,
};

use build_support::Test;

const WORKERS: [&str; 4] = [
    "worker-shell",
    "worker-python",
    "worker-node",
    "worker-full",
];

fn ps_line(service: &str, state: &str, health: &str, exit: i32) -> String {
    format!(
        "{{\"Service\":\"{service}\",\"State\":\"{state}\",\"Health\":\"{health}\",\"ExitCode\":{exit}}}\n"
    )
}

fn healthy_workers() -> String {
    WORKERS
        .iter()
        .map(|w| ps_line(w, "running", "healthy", 0))
        .collect()
}

/// The compose subcommand of each `docker compose` call (`up`, `ps`, ...), and the project.
fn compose_calls(t: &Test) -> Vec<(String, String)> {
    t.docker_calls()
        .into_iter()
        .filter(|argv| argv.get(1).map(String::as_str) == Some("compose"))
        .map(|argv| {
            let project = argv
                .windows(2)
                .find(|w| w[0] == "--project-name")
                .map(|w| w[1].clone())
                .expect("every call names the project");
            (argv[6].clone(), project)
        })
        .collect()
}

#[test]
fn healthy_services_pass_and_are_torn_down() {
    let t = Test::new()
        .args(["smoke", "--compose", "worker-shell"])
        .env(
            "FAKE_DOCKER_COMPOSE_PS",
            ps_line("worker-shell", "running", "healthy", 0),
        );
    let out = t.run();
    out.expect_code(0);
    assert!(
        out.stdout.contains("ok    worker-shell   running, healthy"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("smoke --compose: 1 passed, 0 failed"),
        "{}",
        out.stdout
    );
    let calls = compose_calls(&t);
    let commands: Vec<&str> = calls.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(commands, ["up", "ps", "down"]);
    assert!(calls.iter().all(|(_, p)| *p == calls[0].1), "{calls:?}");
    let up = &t.docker_calls()[0];
    for arg in ["--detach", "--wait", "--no-build", "worker-shell"] {
        assert!(up.iter().any(|a| a == arg), "{up:?}");
    }
}

#[test]
fn a_service_that_exits_is_named_with_its_log_and_everything_is_torn_down() {
    let t = Test::new()
        .args(["smoke", "--compose", "executor"])
        .env(
            "FAKE_DOCKER_COMPOSE_UP_FAIL",
            "dependency failed to start: container p-executor-1 exited (2)",
        )
        .env(
            "FAKE_DOCKER_COMPOSE_PS",
            ps_line("executor", "exited", "", 2) + &healthy_workers(),
        )
        .env(
            "FAKE_DOCKER_COMPOSE_LOGS",
            "attune-executor: invalid configuration: invalid value \"0\" for ATTUNE_EXECUTOR_MAX_CONCURRENCY: expected an integer between 1 and 1024\n",
        );
    let out = t.run();
    out.expect_code(1);
    assert!(
        out.stdout
            .contains("FAIL  executor       exited with code 2"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("executor: attune-executor: invalid configuration: invalid value \"0\" for ATTUNE_EXECUTOR_MAX_CONCURRENCY"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("dependency failed to start"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("smoke --compose: 4 passed, 1 failed; not healthy: executor"),
        "{}",
        out.stdout
    );
    let commands: Vec<String> = compose_calls(&t).into_iter().map(|(c, _)| c).collect();
    assert_eq!(commands, ["up", "ps", "logs", "down"]);
}

#[test]
fn a_published_port_is_asked_for_health_on_loopback() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    let t = Test::new()
        .args(["smoke", "--compose", "api"])
        .env("ATTUNE_API_PORT", port.to_string())
        .env(
            "FAKE_DOCKER_COMPOSE_PS",
            ps_line("api", "running", "healthy", 0),
        );
    let out = t.run();
    out.expect_code(0);
    assert!(
        out.stdout.contains(&format!(
            "ok    api            GET /health on 127.0.0.1:{port}: 200 ok"
        )),
        "{}",
        out.stdout
    );
}

#[test]
fn a_bad_port_variable_is_a_usage_error_and_starts_nothing() {
    let t = Test::new()
        .args(["smoke", "--compose", "api"])
        .env("ATTUNE_API_PORT", "eighty");
    let out = t.run();
    out.expect_code(2);
    assert!(
        out.stderr
            .contains("ATTUNE_API_PORT=\"eighty\": expected a port number"),
        "{}",
        out.stderr
    );
    assert!(compose_calls(&t).is_empty());
}
