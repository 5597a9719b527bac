//! What cargo compiled, read from a build log: its `Compiling NAME vVERSION` status lines, which
//! it prints on stderr whatever the message format, and which BuildKit's log keeps inside a
//! step's output (`#12 41.3    Compiling serde v1.0.200`). Pure.

use std::collections::BTreeSet;

/// A crate cargo compiled.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Unit {
    pub name: String,
    pub version: String,
}

/// The distinct units a log says cargo compiled, in name order.
pub fn compiled(text: &str) -> BTreeSet<Unit> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let Some(at) = line.find("Compiling ") else {
            continue;
        };
        let mut words = line[at + "Compiling ".len()..].split_whitespace();
        let (Some(name), Some(version)) = (words.next(), words.next()) else {
            continue;
        };
        let Some(version) = version.strip_prefix('v') else {
            continue;
        };
        if !version.starts_with(|c: char| c.is_ascii_digit()) {
            continue;
        }
        out.insert(Unit {
            name: name.to_string(),
            version: version.to_string(),
        });
    }
    out
}

/// How many of `units` are the workspace's own crates (`members`, by package name) and how many
/// are dependencies.
pub fn split(units: &BTreeSet<Unit>, members: &[String]) -> (usize, usize) {
    let own = units.iter().filter(|u| members.contains(&u.name)).count();
    (own, units.len() - own)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiling_lines_in_buildkit_and_cargo_logs() {
        let log = "#12 [builder 6/6] RUN cargo build\n\
                   #12 41.3    Compiling serde v1.0.200\n\
                   #12 44.0    Compiling attune-common v0.1.0 (/build/crates/common)\n\
                   #12 44.1 warning: Compiling is a word\n\
                      Compiling serde v1.0.200\n\
                      Compiling attune-api v0.1.0 (/src/crates/api)\n\
                   #12 DONE 60.1s\n";
        let units = compiled(log);
        let names: Vec<&str> = units.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["attune-api", "attune-common", "serde"]);
        assert_eq!(
            split(&units, &["attune-api".into(), "attune-common".into()]),
            (2, 1)
        );
    }

    #[test]
    fn a_log_without_compiling_lines_compiled_nothing() {
        assert!(compiled("#12 0.4     Finished `release` profile\n").is_empty());
    }
}
