//! `engine status`, as the real binary against the fake `docker`: the second engine's state from
//! its pid file under ATTUNE_ENGINE_DIR.

// not every helper is used here
#[allow(dead_code)]
mod build_support;

use std::{fs, process::Command};

use build_support::Test;
use serde_json::Value;

fn status(engine_dir: &std::path::Path) -> Value {
    let out = Test::new()
        .args(["engine", "status", "--json"])
        .env("ATTUNE_ENGINE_DIR", engine_dir)
        .run();
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

#[test]
fn status_reports_the_second_engine() {
    let dir = tempfile::tempdir().unwrap();
    let second = dir.path().join("second");
    fs::create_dir_all(&second).unwrap();

    let report = status(dir.path());
    assert_eq!(report["second_engine"]["pid"], Value::Null, "{report}");
    assert_eq!(report["second_engine"]["context"], "attune-second");
    assert_eq!(report["second_engine"]["bridge"], "br-attune2");

    // a process that looks like the second dockerd (its command line names dockerd and the
    // second socket), behind the second pid file
    let socket = second.join("docker.sock");
    let mut fake = Command::new("sh")
        .args(["-c", "sleep 30", "dockerd"])
        .arg(&socket)
        .spawn()
        .unwrap();
    fs::write(second.join("docker.pid"), fake.id().to_string()).unwrap();
    let report = status(dir.path());
    let _ = fake.kill();
    let _ = fake.wait();
    assert_eq!(report["second_engine"]["pid"], fake.id(), "{report}");
    assert_eq!(
        report["second_engine"]["socket"],
        socket.display().to_string()
    );
}

#[test]
fn status_names_the_private_engines_image_store() {
    use build_support::FakeDockerd;
    use xtask::engine_config::ImageStore;
    for (store, name) in [
        (ImageStore::Classic, "classic"),
        (ImageStore::Containerd, "containerd"),
    ] {
        let engine = FakeDockerd::start(store);
        let report = status(engine.dir.path());
        assert_eq!(report["image_store"], name, "{report}");
        assert!(report["cache_gc"]["min_free_gib"].is_u64(), "{report}");
    }
    let none = tempfile::tempdir().unwrap();
    assert_eq!(status(none.path())["image_store"], Value::Null);
}
