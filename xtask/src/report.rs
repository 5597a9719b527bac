//! The report of a docker-build run: what each image's build did, the totals, and what the
//! phases added (publish, timings, cache). Plain data below every module that fills or reads it
//! (the session runs the plan into one, the pipeline's phases add to it, the summary and `--json`
//! show it).

use std::path::PathBuf;

use serde::Serialize;

use crate::{
    exec::{
        events::CargoStep,
        runner::{JobResult, Outcome},
    },
    util::Status,
};

/// The outcome of one image's build, as the summary and `--json` show it.
#[derive(Debug, Clone, Serialize)]
pub struct ImageReport {
    pub image: String,
    pub result: Outcome,
    pub exit_code: Option<i32>,
    pub wall_seconds: f64,
    /// Whether the cargo step executed or came from the layer cache.
    pub cargo_step: CargoStep,
    pub cargo_seconds: Option<f64>,
    /// The cargo step's Dockerfile text, as BuildKit names it, and when it started by BuildKit's
    /// clock (seconds since the Unix epoch).
    pub cargo_name: Option<String>,
    pub cargo_started: Option<f64>,
    pub fully_cached: bool,
    /// The recorded inputs showed the image current: no build ran.
    pub up_to_date: bool,
    pub tag: Option<String>,
    pub image_id: Option<String>,
    pub size_bytes: Option<u64>,
    pub output_dir: Option<PathBuf>,
    pub log: PathBuf,
    /// Where it ran (with `--builders`), and where it failed first when it was retried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub builder: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retried_from: Option<String>,
    /// The pushed manifest's digest (`sha256:...`), from buildx's metadata file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// `REPO:TAG@DIGEST` once an atomic publish moved the tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub published: Option<String>,
    /// Why the cargo step ran (the history's first differing input), when it ran: the summary's
    /// `why IMAGE: ...` line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    #[serde(skip)]
    pub job: JobResult,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub strategy: String,
    pub images: Vec<ImageReport>,
    pub totals: Totals,
    /// An atomic publish: whether the tags moved, and why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish: Option<PublishReport>,
    /// With `--timings`: cargo's timing report and the slowest crates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timings: Option<crate::timings::TimingsReport>,
    /// With `--cache`: what the import and the export did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheReport>,
    /// What writing the history record took (the record, the git state, the append), when one
    /// was written: `bench` compares it with the whole no-op run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording_seconds: Option<f64>,
    /// The builder's binaries' digests, exported before or beside the images
    /// ([`crate::binaries`]): which images they left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binaries: Option<crate::binaries::BinariesReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Totals {
    pub images: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub interrupted: usize,
    pub not_started: usize,
    pub wall_seconds: f64,
}

/// What `--cache` did: the import before (or beside) the builds, the export after them.
#[derive(Debug, Clone, Serialize)]
pub struct CacheReport {
    /// The location, as given.
    pub location: String,
    /// The key of the entry for these builds.
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub import: Option<CacheStep>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export: Option<CacheStep>,
}

/// One side of [`CacheReport`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CacheStep {
    /// `done`, `cold` (nothing carried: the builds ran cold, or the location stays as it was),
    /// `skipped` (not needed) or `interrupted`.
    pub result: String,
    /// What was carried, or why not, in one line.
    pub line: String,
    /// A cold step under `--cache-strict`: the run fails.
    pub failed: bool,
}

impl CacheReport {
    pub fn steps(&self) -> impl Iterator<Item = &CacheStep> + Clone {
        self.import.iter().chain(&self.export)
    }
}

impl Report {
    pub fn status(&self) -> Status {
        let cache: Vec<&CacheStep> = self.cache.iter().flat_map(CacheReport::steps).collect();
        if self.totals.interrupted + self.totals.not_started > 0
            || cache.iter().any(|s| s.result == "interrupted")
        {
            Status::Interrupted
        } else {
            let published = self.publish.as_ref().is_none_or(|p| p.moved);
            let carried = !cache.iter().any(|s| s.failed);
            Status::from_ok(self.totals.failed == 0 && published && carried)
        }
    }
}

/// What the publish did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PublishReport {
    /// Whether every tag moved.
    pub moved: bool,
    /// `REPO:TAG@DIGEST` of each tag that moved.
    pub tags: Vec<String>,
    /// Why nothing (or not everything) moved, one line per image.
    pub failed: Vec<String>,
}
