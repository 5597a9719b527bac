//! Everything that runs processes for builds: the runner, the BuildKit event parser, progress.

pub mod demux;
pub mod events;
pub mod progress;
pub mod runner;
pub mod supervise;
