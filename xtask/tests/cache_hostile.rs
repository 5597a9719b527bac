//! A cache entry is input from outside the machine (a CI cache, a shared registry): each way an
//! attacker (or a broken tool) could shape one, against the real binary and the fake docker.
//! Every case: a warning naming the entry and the import refused (no import helper runs, so
//! BuildKit unpacks nothing of it), the builds cold; with `--cache-strict` exit 1; the location
//! left as it was. The archives' sha256 always match their manifest: the checksum is no defence
//! against whoever wrote the manifest.

#[allow(dead_code)] // the harness is shared with build_cli.rs
mod build_support;

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use build_support::{arg_after, TempWorkspace, Test};
use sha2::{Digest, Sha256};

/// A temporary workspace with an entry of `api` exported to its `ci-cache`: the workspace, the
/// entry's directory, the location as an argument.
fn with_entry() -> (TempWorkspace, PathBuf, String) {
    let ws = TempWorkspace::new();
    let loc = ws.path().join("ci-cache");
    let loc_arg = loc.display().to_string();
    let out = Test::new()
        .args(["cache", "export", "--to", &loc_arg, "api"])
        .cwd(ws.path())
        .run();
    out.expect_code(0);
    let entries: Vec<PathBuf> = (fs::read_dir(&loc).unwrap())
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    (ws, entries[0].clone(), loc_arg)
}

/// One tar entry: name, type flag, declared size, link name; its data (zeros) is written only
/// when `data`.
struct Entry {
    name: &'static str,
    kind: u8,
    size: u64,
    link: &'static str,
    data: bool,
}

fn file(name: &'static str) -> Entry {
    Entry {
        name,
        kind: b'0',
        size: 4,
        link: "",
        data: true,
    }
}

/// A ustar archive of `entries`, written by hand (a tar library refuses to write these).
fn tar(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = [0u8; 512];
        h[..e.name.len()].copy_from_slice(e.name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        let size = format!("{:011o}", e.size);
        let size = if size.len() > 11 {
            size
        } else {
            format!("{size}\0")
        };
        h[124..124 + size.len()].copy_from_slice(size.as_bytes());
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = e.kind;
        h[157..157 + e.link.len()].copy_from_slice(e.link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&h);
        if e.data {
            out.resize(out.len() + (e.size as usize).div_ceil(512) * 512, 0);
        }
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// Replaces the first archive of the entry's target cache with `tar` (compressed), and its
/// manifest's sha256, size and tar size (`declared`, else the tar's own) with the new file's.
fn plant(entry: &Path, tar: &[u8], declared: Option<u64>) {
    let manifest_path = entry.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&manifest_path).unwrap()).unwrap();
    let mounts = manifest["mounts"].as_array_mut().unwrap();
    let mount = (mounts.iter_mut())
        .find(|m| m["id"].as_str().unwrap().starts_with("target-"))
        .expect("a target cache in the entry");
    let compressed = zstd::encode_all(tar, 3).unwrap();
    fs::write(entry.join(mount["file"].as_str().unwrap()), &compressed).unwrap();
    let digest: String = (Sha256::digest(&compressed).iter())
        .map(|b| format!("{b:02x}"))
        .collect();
    mount["sha256"] = digest.into();
    mount["bytes"] = compressed.len().into();
    mount["tar_bytes"] = declared.unwrap_or(tar.len() as u64).into();
    fs::write(
        &manifest_path,
        serde_json::to_string_pretty(&manifest).unwrap(),
    )
    .unwrap();
}

/// Edits the entry's manifest (its sha256s stay right).
fn edit_manifest(entry: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = entry.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut manifest);
    fs::write(&path, serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
}

/// Every file under `dir` with its contents.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                todo.push(e.path());
            } else {
                out.insert(e.path(), fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

/// Imports the entry (plain, then strict) and checks the refusal: a warning naming the entry and
/// `why`, no import helper, exit 1 with --cache-strict, the location unchanged.
fn refused(ws: &TempWorkspace, entry: &Path, loc: &str, why: &str) {
    let name = entry.file_name().unwrap().to_string_lossy().into_owned();
    let before = files(entry.parent().unwrap());
    for strict in [false, true] {
        let mut t = Test::new()
            .args(["cache", "import", "--from", loc, "api"])
            .cwd(ws.path());
        if strict {
            t = t.args(["--cache-strict"]);
        }
        let out = t.run();
        out.expect_code(if strict { 1 } else { 0 });
        let said = if strict {
            "error: cache: "
        } else {
            "warning: cache: "
        };
        assert!(
            out.stderr.contains(said) && out.stderr.contains(&name) && out.stderr.contains(why),
            "want `{said}` naming {name} and `{why}`:\n{}",
            out.stderr
        );
        let imports: Vec<Vec<String>> = (t.builds().into_iter())
            .filter(|a| arg_after(a, "--file") == ["target/xtask/cache/import.Dockerfile"])
            .collect();
        assert!(imports.is_empty(), "an import helper ran: {imports:?}");
    }
    assert!(
        before == files(entry.parent().unwrap()),
        "the location changed"
    );
}

#[test]
fn an_absolute_path_in_an_archive_is_refused() {
    let (ws, entry, loc) = with_entry();
    plant(&entry, &tar(&[file("/etc/attune-pwned")]), None);
    refused(&ws, &entry, &loc, "`/etc/attune-pwned`: an absolute path");
}

#[test]
fn a_dot_dot_in_an_archive_is_refused() {
    let (ws, entry, loc) = with_entry();
    plant(
        &entry,
        &tar(&[file("./release/../../../attune-pwned")]),
        None,
    );
    refused(&ws, &entry, &loc, "a `..` in its path");
}

#[test]
fn symlinks_out_of_the_mount_are_refused_and_inside_it_taken() {
    let out_abs = Entry {
        name: "./release/escape",
        kind: b'2',
        size: 0,
        link: "/etc",
        data: false,
    };
    let out_rel = Entry {
        name: "./release/deps/escape",
        kind: b'2',
        size: 0,
        link: "../../../etc/passwd",
        data: false,
    };
    for link in [out_abs, out_rel] {
        let (ws, entry, loc) = with_entry();
        let target = link.link;
        plant(&entry, &tar(&[link]), None);
        refused(
            &ws,
            &entry,
            &loc,
            &format!("a symlink out of the mount (to `{target}`)"),
        );
    }
    // a link that stays inside (cargo's own layout has such) is imported
    let (ws, entry, loc) = with_entry();
    let inside = Entry {
        name: "./release/deps/ok",
        kind: b'2',
        size: 0,
        link: "../../release/attune-api",
        data: false,
    };
    plant(&entry, &tar(&[file("./release/attune-api"), inside]), None);
    let t = Test::new()
        .args(["cache", "import", "--from", &loc, "api", "--cache-strict"])
        .cwd(ws.path());
    let out = t.run();
    out.expect_code(0);
    assert!(out.stdout.contains("cache: imported "), "{}", out.stdout);
}

#[test]
fn a_hard_link_out_of_the_mount_is_refused() {
    let (ws, entry, loc) = with_entry();
    let link = Entry {
        name: "./release/passwd",
        kind: b'1',
        size: 0,
        link: "../../etc/passwd",
        data: false,
    };
    plant(&entry, &tar(&[link]), None);
    refused(
        &ws,
        &entry,
        &loc,
        "a hard link out of the mount (to `../../etc/passwd`)",
    );
}

#[test]
fn device_files_and_fifos_are_refused() {
    for (kind, name) in [(b'3', "Char"), (b'4', "Block"), (b'6', "Fifo")] {
        let (ws, entry, loc) = with_entry();
        let device = Entry {
            name: "./release/dev",
            kind,
            size: 0,
            link: "",
            data: false,
        };
        plant(&entry, &tar(&[device]), None);
        refused(&ws, &entry, &loc, &format!("a {name} entry"));
    }
}

#[test]
fn a_file_larger_than_the_manifest_declares_is_refused_unread() {
    // a 10 GiB file, declared as a tar of 1 kB: its header says so, and the import stops there
    let (ws, entry, loc) = with_entry();
    let huge = Entry {
        name: "./release/huge",
        kind: b'0',
        size: 10 << 30,
        link: "",
        data: false,
    };
    plant(&entry, &tar(&[huge]), Some(1024));
    refused(
        &ws,
        &entry,
        &loc,
        "`./release/huge` (10737418240 bytes) holds more than the 1024 bytes",
    );
    // a tar whose data goes on past what its manifest declares
    let (ws, entry, loc) = with_entry();
    let body = tar(&[file("./release/a"), file("./release/b")]);
    plant(&entry, &body, Some(body.len() as u64 - 600));
    refused(&ws, &entry, &loc, "holds more than the");
}

#[test]
fn a_manifest_naming_a_mount_the_strategy_does_not_have_is_refused() {
    let (ws, entry, loc) = with_entry();
    edit_manifest(&entry, |m| {
        let mounts = m["mounts"].as_array_mut().unwrap();
        let target = (mounts.iter_mut())
            .find(|m| m["id"].as_str().unwrap().starts_with("target-"))
            .unwrap();
        target["id"] = "ssh-keys".into();
    });
    refused(
        &ws,
        &entry,
        &loc,
        "a cache mount `ssh-keys`, which is not one of the strategy's",
    );

    let (ws, entry, loc) = with_entry();
    edit_manifest(&entry, |m| {
        let home = (m["mounts"].as_array_mut().unwrap().iter_mut())
            .find(|m| m["id"] == "cargo-home")
            .unwrap();
        home["target"] = "/root/.ssh".into();
    });
    refused(
        &ws,
        &entry,
        &loc,
        "has the target `/root/.ssh`; the Dockerfiles mount it at",
    );
}

#[test]
fn another_projects_entry_under_this_key_is_refused() {
    // the manifest of a project with another Cargo.lock, in the directory of this key's entry
    let (ws, entry, loc) = with_entry();
    edit_manifest(&entry, |m| {
        m["inputs"]["cargo_lock"] = "0".repeat(64).into();
    });
    refused(&ws, &entry, &loc, "does not match its inputs");
}
