//! The engine's own work after a command returned. BuildKit finishes part of a build (its
//! build records) after the client has its result; after a bake of 64 images dockerd kept
//! working for about 4 s (docs/SCALING.md, run 10). The bench adds that time to the command's,
//! so that a step neither hides its own tail nor pays for the one before it.

use std::time::{Duration, Instant};

/// How often dockerd's CPU time is read, and the share of one core below which it is idle.
const WINDOW: Duration = Duration::from_millis(250);
const IDLE_SHARE: f64 = 0.1;

/// The private engine's dockerd (`cargo xtask engine up`), when `DOCKER_HOST` names it and it
/// runs; another engine's work cannot be watched from here.
pub fn private_dockerd() -> Option<u32> {
    let dir = crate::engine::EngineDir::from_env();
    dir.in_use().then(|| dir.running_pid()).flatten()
}

/// Seconds dockerd `pid` stayed busy from now: until a window in which it used under a tenth
/// of a core, or `limit`.
pub fn busy_after(pid: u32, limit: Duration) -> f64 {
    let clock = Instant::now();
    let mut used = Vec::new();
    let Some(mut last) = cpu_seconds(pid) else {
        return 0.0;
    };
    while clock.elapsed() < limit {
        std::thread::sleep(WINDOW);
        let Some(now) = cpu_seconds(pid) else {
            break;
        };
        used.push(now - last);
        last = now;
        if used.last().is_some_and(|u| idle(*u)) {
            break;
        }
    }
    busy(&used)
}

fn idle(used: f64) -> bool {
    used < IDLE_SHARE * WINDOW.as_secs_f64()
}

/// The busy windows before the first idle one, in seconds. Pure.
fn busy(used: &[f64]) -> f64 {
    let windows = used.iter().take_while(|u| !idle(**u)).count();
    windows as f64 * WINDOW.as_secs_f64()
}

/// A process's CPU time so far (user and system, `/proc/PID/stat` fields 14 and 15).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // the fields after the command name, which may hold spaces: field 3 is the first
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / rustix::param::clock_ticks_per_second() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_is_the_busy_windows_before_the_first_idle_one() {
        let w = WINDOW.as_secs_f64();
        assert_eq!(busy(&[0.0]), 0.0);
        assert_eq!(busy(&[0.2, 0.25, 0.01]), 2.0 * w);
        // a busy window after the first idle one is someone else's
        assert_eq!(busy(&[0.2, 0.0, 0.2]), w);
    }

    #[test]
    fn a_busy_process_is_busy_until_it_ends() {
        // a shell counting for about a second, then gone: busy all along
        let mut cmd = crate::proc::Command::new("sh");
        cmd.args(["-c", "i=0; while [ $i -lt 2000000 ]; do i=$((i+1)); done"]);
        let mut child = crate::proc::spawn(&mut cmd).unwrap();
        let busy = busy_after(child.id(), Duration::from_secs(30));
        let _ = child.wait();
        assert!(busy >= WINDOW.as_secs_f64(), "busy {busy}s");
    }

    #[test]
    fn this_process_can_be_read() {
        let me = std::process::id();
        let before = cpu_seconds(me).expect("/proc/self/stat");
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x.wrapping_add(i ^ (x >> 3));
        }
        std::hint::black_box(x);
        assert!(cpu_seconds(me).unwrap() > before, "CPU time did not grow");
    }
}
