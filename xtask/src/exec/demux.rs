//! `docker buildx bake`'s one stream of statuses for all its targets -> each target's own, as
//! its own `docker buildx build` would have printed them.
//!
//! bake names every step after its target (`[api builder 6/6] RUN ...`, `[api] exporting to
//! image`); steps that several targets share (one builder stage) keep one digest and are named
//! once per target. A step's output and progress carry only its digest, so they go to every
//! target that named that digest. The prefix is taken off the names, so a target's log reads like
//! a single build's (`[builder 6/6] RUN ...`) and everything that reads logs
//! ([`crate::cache::records::copy_steps`], the history) reads it the same way. (Measured with
//! buildx 0.29: a shared step's output arrives once, not once per target; a bake of one target
//! names nothing after it.)

use std::collections::HashMap;

use super::events::SolveStatus;

/// Splits bake's statuses by target (targets are indexes into the names it was made with).
#[derive(Debug, Default)]
pub struct Demux {
    targets: Vec<String>,
    /// A step's digest -> the targets that named it.
    owners: HashMap<String, Vec<usize>>,
}

impl Demux {
    pub fn new(targets: Vec<String>) -> Demux {
        Demux {
            targets,
            owners: HashMap::new(),
        }
    }

    /// One status of bake's stream -> one status per target it concerns (in target order). A
    /// step named after no target (bake's own `[internal] load local bake definitions`) and
    /// output of a step no target named yet are dropped.
    pub fn split(&mut self, status: &SolveStatus) -> Vec<(usize, SolveStatus)> {
        // buildx names steps after their target only when a bake has two or more
        if self.targets.len() == 1 {
            return vec![(0, status.clone())];
        }
        let mut out: Vec<SolveStatus> = vec![SolveStatus::default(); self.targets.len()];
        let mut touched = vec![false; self.targets.len()];
        for vertex in &status.vertexes {
            let Some((target, name)) = owner(&self.targets, &vertex.name) else {
                continue;
            };
            let owners = self.owners.entry(vertex.digest.clone()).or_default();
            if !owners.contains(&target) {
                owners.push(target);
            }
            let mut own = vertex.clone();
            own.name = name;
            out[target].vertexes.push(own);
            touched[target] = true;
        }
        for log in &status.logs {
            for &target in self.owners.get(&log.vertex).into_iter().flatten() {
                out[target].logs.push(log.clone());
                touched[target] = true;
            }
        }
        (out.into_iter().enumerate())
            .filter(|(i, _)| touched[*i])
            .collect()
    }
}

impl Demux {
    /// The one target a plain-text line names (`ERROR: target api: ...`, `target "api"`), if
    /// exactly one does: bake's own messages at its end, otherwise for every target.
    pub fn text_owner(&self, line: &str) -> Option<usize> {
        let mut named = (self.targets.iter().enumerate()).filter(|(_, t)| {
            [
                format!("target {t}:"),
                format!("target \"{t}\""),
                format!("target {t} "),
            ]
            .iter()
            .any(|form| line.contains(form.as_str()))
        });
        match (named.next(), named.next()) {
            (Some((i, _)), None) => Some(i),
            _ => None,
        }
    }
}

/// The target a step's name starts with, and the name without it: `[api builder 6/6] RUN x` ->
/// (api, `[builder 6/6] RUN x`), `[api] exporting to image` -> (api, `exporting to image`). A
/// target's name must end at the space or bracket (`worker` does not own `[worker-shell ...]`).
fn owner(targets: &[String], name: &str) -> Option<(usize, String)> {
    let rest = name.strip_prefix('[')?;
    targets.iter().enumerate().find_map(|(i, target)| {
        let after = rest.strip_prefix(target.as_str())?;
        if let Some(tail) = after.strip_prefix(']') {
            Some((i, tail.trim_start().to_string()))
        } else {
            after.strip_prefix(' ').map(|tail| (i, format!("[{tail}")))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::events::{Chunk, Splitter, Tracker};

    fn status(line: &str) -> SolveStatus {
        match Splitter::default().push_line(line) {
            Some(Chunk::Status(s)) => *s,
            other => panic!("not a status: {other:?}"),
        }
    }

    fn names() -> Vec<String> {
        ["worker", "worker-shell", "api"].map(String::from).to_vec()
    }

    #[test]
    fn a_step_goes_to_the_target_named_before_it_and_loses_the_name() {
        let mut demux = Demux::new(names());
        let line = r#"{"vertexes":[{"digest":"sha256:a","name":"[worker-shell builder 6/6] RUN cargo build","started":"2026-12-07T02:15:10.7Z"},{"digest":"sha256:b","name":"[api] exporting to image"},{"digest":"sha256:c","name":"[internal] load local bake definitions"}]}"#;
        let split = demux.split(&status(line));
        let got: Vec<(usize, Vec<&str>)> = (split.iter())
            .map(|(i, s)| (*i, s.vertexes.iter().map(|v| v.name.as_str()).collect()))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, vec!["[builder 6/6] RUN cargo build"]),
                (2, vec!["exporting to image"])
            ]
        );
    }

    #[test]
    fn a_shared_steps_output_goes_to_every_target_that_named_it() {
        let mut demux = Demux::new(names());
        let mut api = Vec::new();
        for target in ["worker", "api"] {
            let line = format!(
                r#"{{"vertexes":[{{"digest":"sha256:shared","name":"[{target} builder 6/6] RUN cargo build","started":"2026-12-07T02:15:10.7Z"}}]}}"#
            );
            api.extend(
                demux
                    .split(&status(&line))
                    .into_iter()
                    .filter(|(i, _)| *i == 2),
            );
        }
        // "Compiling x\n" in base64
        let log = r#"{"logs":[{"vertex":"sha256:shared","data":"Q29tcGlsaW5nIHgK","timestamp":"2026-12-07T02:15:11Z"}]}"#;
        let split = demux.split(&status(log));
        assert_eq!(split.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 2]);
        api.push(split[1].clone());
        // the target's tracker renders them as its own build's lines
        let mut tracker = Tracker::default();
        let text: String = api.iter().map(|(_, s)| tracker.apply(s).0).collect();
        assert!(
            text.contains("#1 [builder 6/6] RUN cargo build\n"),
            "{text}"
        );
        assert!(text.contains("#1 Compiling x\n"), "{text}");
    }

    #[test]
    fn a_bake_of_one_target_passes_through_whole() {
        let mut demux = Demux::new(vec!["api".into()]);
        let line = r#"{"vertexes":[{"digest":"sha256:a","name":"[builder 6/6] RUN cargo build"}],"logs":[{"vertex":"sha256:a","data":"eAo="}]}"#;
        assert_eq!(demux.split(&status(line)), vec![(0, status(line))]);
    }

    #[test]
    fn bakes_own_text_goes_to_the_one_target_it_names() {
        let demux = Demux::new(names());
        let line = "ERROR: target worker-shell: failed to solve: process did not complete";
        assert_eq!(demux.text_owner(line), Some(1));
        assert_eq!(demux.text_owner(r#"target "api" failed"#), Some(2));
        assert_eq!(
            demux.text_owner("ERROR: failed to build: 2 targets failed"),
            None
        );
    }

    #[test]
    fn output_of_a_step_no_target_named_is_dropped() {
        let mut demux = Demux::new(names());
        let log = r#"{"logs":[{"vertex":"sha256:unknown","data":"eAo="}]}"#;
        assert!(demux.split(&status(log)).is_empty());
    }
}
