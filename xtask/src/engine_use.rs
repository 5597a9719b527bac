//! Who uses the engine: every run of this xtask that builds on an engine holds that engine's lock
//! shared from its first build to its end, and docker-build's removal of superseded layer records
//! ([`crate::cache::records::remove`]) runs only while its run holds the lock alone.
//!
//! Why: a prune while another run's build resolves its cache fails that build (measured on a
//! fresh machine, CI of stop 28: two engine tests at once, one removing records, and the other's
//! seven builds failed with `failed to get state for index 0 on [builder 5/6] COPY crates
//! crates`). The lock is flock(2) (std's lock on Linux) on one file per engine in the temporary
//! directory, so it also holds between checkouts, and the kernel releases it when a run dies.
//! Builds of other tools on the same engine are not covered; the removal only touches records
//! of this workspace's own steps.

use std::{
    fs::{File, OpenOptions},
    path::PathBuf,
    sync::Mutex,
};

/// What this process holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    Nothing,
    Shared,
    Alone,
}

/// The lock of one engine, as one process holds it.
pub struct EngineUse {
    path: PathBuf,
    file: Option<File>,
    held: Held,
}

/// The lock file's name for an engine: `DOCKER_HOST` or `DOCKER_CONTEXT` as the user set them
/// (or as [`crate::engine::use_private_engine_if_needed`] set them), in file-name characters.
pub fn lock_name(host: Option<&str>, context: Option<&str>) -> String {
    let engine = match (host, context) {
        // the CLI's default socket, named or not, is one engine
        (Some(h), _) if !h.is_empty() && h != "unix:///var/run/docker.sock" => h.to_string(),
        (_, Some(c)) if !c.is_empty() => format!("context-{c}"),
        _ => "default".to_string(),
    };
    let safe: String = (engine.chars())
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '.' => c,
            _ => '_',
        })
        .take(120)
        .collect();
    format!("attune-xtask-engine-{safe}.lock")
}

impl EngineUse {
    /// The lock at `path`; nothing is opened or held yet.
    pub fn at(path: PathBuf) -> EngineUse {
        EngineUse {
            path,
            file: None,
            held: Held::Nothing,
        }
    }

    /// The lock of the engine the environment names.
    pub fn of_environment() -> EngineUse {
        let host = std::env::var("DOCKER_HOST").ok();
        let context = std::env::var("DOCKER_CONTEXT").ok();
        EngineUse::at(std::env::temp_dir().join(lock_name(host.as_deref(), context.as_deref())))
    }

    pub fn held(&self) -> Held {
        self.held
    }

    /// The open lock file; `None` (with a warning, once) when it cannot be opened: then nothing
    /// is held and nothing is removed. An existing file is opened read-only (flock needs no
    /// more, and Debian's `fs.protected_regular` refuses a create-open of another user's file in
    /// /tmp); a missing one is created readable and writable by every user.
    fn file(&mut self) -> Option<&File> {
        if self.file.is_none() && !self.path.as_os_str().is_empty() {
            match open_or_create(&self.path) {
                Ok(f) => self.file = Some(f),
                Err(err) => {
                    eprintln!(
                        "warning: cannot open the engine lock {}: {err}; this run neither removes superseded layer records nor is protected from another run's removal",
                        self.path.display()
                    );
                    self.path = PathBuf::new();
                    return None;
                }
            }
        }
        self.file.as_ref()
    }

    /// Holds the engine shared, waiting (and saying so) while another run removes records. One
    /// that holds it alone keeps it alone: its own builds do not conflict with themselves.
    pub fn shared(&mut self) {
        if self.held != Held::Nothing || self.path.as_os_str().is_empty() {
            return;
        }
        let Some(file) = self.file() else {
            return;
        };
        if file.try_lock_shared().is_err() {
            eprintln!("docker-build: another run is removing superseded layer records on this engine; waiting for it");
            if let Err(err) = file.lock_shared() {
                eprintln!("warning: cannot lock {}: {err}", self.path.display());
                return;
            }
        }
        self.held = Held::Shared;
    }

    /// Takes the engine alone when no other run holds it (true); otherwise holds it shared as
    /// before (false). Never waits.
    pub fn try_alone(&mut self) -> bool {
        if self.held == Held::Alone {
            return true;
        }
        let before = self.held;
        let Some(file) = self.file() else {
            return false;
        };
        if before == Held::Shared {
            let _ = file.unlock();
        }
        if file.try_lock().is_ok() {
            self.held = Held::Alone;
            return true;
        }
        self.held = Held::Nothing;
        if before == Held::Shared {
            self.shared();
        }
        false
    }

    /// From alone back to shared, for the builds after the removal (another run may take it
    /// alone in between; then this waits for its removal to end).
    pub fn share(&mut self) {
        if self.held != Held::Alone {
            return;
        }
        if let Some(file) = self.file() {
            let _ = file.unlock();
        }
        self.held = Held::Nothing;
        self.shared();
    }
}

fn open_or_create(path: &std::path::Path) -> std::io::Result<File> {
    use std::os::unix::fs::PermissionsExt as _;
    match File::open(path) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            match OpenOptions::new().write(true).create_new(true).open(path) {
                Ok(f) => {
                    let _ = f.set_permissions(std::fs::Permissions::from_mode(0o666));
                    Ok(f)
                }
                // another run created it meanwhile
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => File::open(path),
                Err(e) => Err(e),
            }
        }
        other => other,
    }
}

static ENGINE: Mutex<Option<EngineUse>> = Mutex::new(None);

/// This process's lock of the engine the environment names.
pub fn with<T>(f: impl FnOnce(&mut EngineUse) -> T) -> T {
    let mut guard = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(EngineUse::of_environment))
}

/// Before any build of this process: the engine held at least shared, until the process ends.
pub fn hold_shared() {
    with(EngineUse::shared)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn lock_names_follow_the_engine() {
        assert_eq!(
            lock_name(Some("unix:///var/run/x.sock"), Some("ignored")),
            "attune-xtask-engine-unix____var_run_x.sock.lock"
        );
        assert_eq!(
            lock_name(None, Some("ci")),
            "attune-xtask-engine-context-ci.lock"
        );
        assert_eq!(
            lock_name(Some(""), None),
            "attune-xtask-engine-default.lock"
        );
        assert_eq!(
            lock_name(Some("unix:///var/run/docker.sock"), None),
            "attune-xtask-engine-default.lock"
        );
        assert_ne!(
            lock_name(Some("tcp://a:1"), None),
            lock_name(Some("tcp://b:1"), None)
        );
    }

    #[test]
    fn the_removal_is_alone_or_does_not_run() {
        let d = dir();
        let p = d.path().join("alone");
        let (mut a, mut b) = (EngineUse::at(p.clone()), EngineUse::at(p.clone()));
        a.shared();
        assert_eq!(a.held(), Held::Shared);
        assert!(!b.try_alone(), "another run builds: no removal");
        assert_eq!(b.held(), Held::Nothing);
        b.shared();
        assert_eq!(b.held(), Held::Shared, "two runs build side by side");
        assert!(!a.try_alone(), "b still builds");
        assert_eq!(a.held(), Held::Shared, "a failed try keeps a's shared hold");
        drop(b);
        assert!(a.try_alone(), "alone once b has ended");
        let mut c = EngineUse::at(p.clone());
        assert!(!c.try_alone());
        a.share();
        assert_eq!(a.held(), Held::Shared);
        c.shared();
        assert_eq!(
            c.held(),
            Held::Shared,
            "after the removal, other runs build"
        );
    }

    #[test]
    fn a_new_lock_file_is_open_to_every_user_and_an_existing_one_opens_read_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let d = dir();
        let p = d.path().join("lock");
        let mut a = EngineUse::at(p.clone());
        a.shared();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o666
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o444)).unwrap();
        let mut b = EngineUse::at(p);
        b.shared();
        assert_eq!(b.held(), Held::Shared, "a read-only file still locks");
    }

    #[test]
    fn an_unopenable_lock_holds_nothing_and_removes_nothing() {
        let d = dir();
        let mut u = EngineUse::at(d.path().join("no").join("lock"));
        assert!(!u.try_alone());
        u.shared();
        assert_eq!(u.held(), Held::Nothing);
    }
}
