//! Live progress: one indicatif line per image in a terminal, plain prefixed lines elsewhere.
//! Which one is a pure function of (stderr is a terminal, CI is set), tested below.

use std::{collections::HashMap, time::Duration};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::{
    events::{is_instruction, Update},
    runner::{JobResult, Outcome, Reporter},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Bars,
    Plain,
}

/// Bars only for a person at a terminal: never under CI, never into a pipe or file.
pub fn mode(stderr_is_terminal: bool, ci: bool) -> Mode {
    if stderr_is_terminal && !ci {
        Mode::Bars
    } else {
        Mode::Plain
    }
}

pub fn detect_mode() -> Mode {
    use std::io::IsTerminal;
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    mode(std::io::stderr().is_terminal(), ci)
}

pub fn reporter(mode: Mode, names: &[String]) -> Box<dyn Reporter> {
    match mode {
        Mode::Plain => Box::new(Plain::new(names)),
        Mode::Bars => Box::new(Bars::new(names)),
    }
}

/// `api          | #12 [builder 6/6] RUN ...` lines on stderr.
pub struct Plain {
    width: usize,
}

impl Plain {
    pub fn new(names: &[String]) -> Plain {
        Plain {
            width: names.iter().map(String::len).max().unwrap_or(0),
        }
    }
    fn line(&self, job: &str, text: &str) {
        eprintln!("{job:<w$} | {text}", w = self.width);
    }
}

impl Reporter for Plain {
    fn started(&self, job: &str) {
        self.line(job, "started");
    }
    fn update(&self, job: &str, update: &Update) {
        match update {
            Update::Started { number, name } if is_instruction(name) => {
                self.line(job, &format!("#{number} {}", short(name, 110)))
            }
            Update::Finished {
                number,
                name,
                outcome,
            } if is_instruction(name) => self.line(job, &format!("#{number} {outcome}")),
            _ => {}
        }
    }
    fn finished(&self, result: &JobResult) {
        self.line(&result.name, &finished_text(result));
    }
}

/// One spinner line per image with its current step and elapsed time.
pub struct Bars {
    _multi: MultiProgress,
    bars: HashMap<String, ProgressBar>,
}

impl Bars {
    pub fn new(names: &[String]) -> Bars {
        let multi = MultiProgress::new();
        let width = names.iter().map(String::len).max().unwrap_or(0);
        let style = ProgressStyle::with_template(&format!(
            "{{spinner}} {{prefix:<{width}}} {{elapsed:>4}} {{wide_msg}}"
        ))
        .expect("valid template");
        let bars = names
            .iter()
            .map(|name| {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(style.clone());
                bar.set_prefix(name.clone());
                bar.set_message("waiting");
                (name.clone(), bar)
            })
            .collect();
        Bars {
            _multi: multi,
            bars,
        }
    }
}

impl Reporter for Bars {
    fn started(&self, job: &str) {
        if let Some(bar) = self.bars.get(job) {
            bar.reset_elapsed();
            bar.enable_steady_tick(Duration::from_millis(120));
            bar.set_message("starting");
        }
    }
    fn update(&self, job: &str, update: &Update) {
        let Some(bar) = self.bars.get(job) else {
            return;
        };
        if let Update::Started { number, name } = update {
            if is_instruction(name) {
                bar.set_message(format!("#{number} {}", short(name, 100)));
            }
        }
    }
    fn finished(&self, result: &JobResult) {
        if let Some(bar) = self.bars.get(&result.name) {
            bar.finish_with_message(finished_text(result));
        }
    }
}

fn finished_text(result: &JobResult) -> String {
    let cargo = match result.cargo_step {
        super::events::CargoStep::Ran => "cargo ran",
        super::events::CargoStep::Shared => "cargo shared with a concurrent build",
        super::events::CargoStep::Cached => "cargo cached",
        super::events::CargoStep::None => "no cargo step",
    };
    match result.outcome {
        Outcome::Succeeded => format!("done in {:.1}s ({cargo})", result.wall_seconds),
        Outcome::Failed => format!(
            "FAILED after {:.1}s; log {}",
            result.wall_seconds,
            result.log.display()
        ),
        Outcome::Interrupted => format!("interrupted after {:.1}s", result.wall_seconds),
        Outcome::NotStarted => "not started".into(),
    }
}

/// Shortens a step name (`[builder 6/6] RUN --mount=... cargo build ...`) to `max` characters.
pub fn short(name: &str, max: usize) -> String {
    let one_line: String = name.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_only_for_a_terminal_outside_ci() {
        assert_eq!(mode(true, false), Mode::Bars);
        assert_eq!(mode(true, true), Mode::Plain);
        assert_eq!(mode(false, false), Mode::Plain);
        assert_eq!(mode(false, true), Mode::Plain);
    }

    #[test]
    fn short_names() {
        assert_eq!(short("a   b\n c", 10), "a b c");
        assert_eq!(short("abcdefghijkl", 5), "abcd…");
    }
}
