//! Logical instructions -> a Dockerfile model: keywords, leading `--flag` options, `--mount`
//! option lists with the source byte span of every option, and stages.
//!
//! Flag words are read like BuildKit's `extractBuilderFlags`: words starting with `--` at the
//! start of the arguments, up to the first unquoted whitespace, with `'...'`, `"..."` and
//! backslash escapes. A `--mount=` value is a comma-separated list of `key=value` options (commas
//! inside quotes do not split); an option without `=` must be one of the known booleans
//! (`ro`, `readonly`, `rw`, `readwrite`, `required`).

use std::collections::HashMap;

use std::ops::Range;

use super::lexer::{self, LineIndex, RawInstruction};
use super::ParseError;

pub use super::lexer::Heredoc;

/// A parsed Dockerfile.
#[derive(Debug, Clone)]
pub struct Dockerfile {
    pub instructions: Vec<Instruction>,
    /// Indexes into `instructions` of the instructions before the first `FROM` (global `ARG`s).
    pub global: Vec<usize>,
    pub stages: Vec<Stage>,
    /// Lowercased stage name -> index of the first stage with that name.
    names: HashMap<String, usize>,
}

/// `FROM base [AS name]` and the instructions up to the next `FROM`.
#[derive(Debug, Clone)]
pub struct Stage {
    pub index: usize,
    /// The stage name, lowercased (Docker matches stage names case-insensitively).
    pub name: Option<String>,
    pub base: String,
    pub line: usize,
    /// Indexes into `Dockerfile::instructions`, the `FROM` excluded.
    pub instructions: Vec<usize>,
}

/// One instruction with its flags and arguments.
#[derive(Debug, Clone)]
pub struct Instruction {
    /// Uppercased keyword (`RUN`, `COPY`...).
    pub keyword: String,
    /// For `ONBUILD`, the uppercased keyword of its trigger (`RUN`...), whose flags and
    /// arguments are this instruction's `flags` and `args`.
    pub trigger: Option<String>,
    pub line: usize,
    pub end_line: usize,
    pub span: Range<usize>,
    pub flags: Vec<Flag>,
    /// The logical text after the keyword and the flags, trimmed.
    pub args: String,
    /// Index in the logical text where `args` starts.
    pub args_start: usize,
    /// `--mount` flags of a `RUN` (or `ONBUILD RUN`), parsed.
    pub mounts: Vec<Mount>,
    pub heredocs: Vec<Heredoc>,
    pub raw: RawInstruction,
}

/// A leading `--name[=value]` option, value unquoted.
#[derive(Debug, Clone)]
pub struct Flag {
    pub name: String,
    pub value: Option<String>,
    /// Source bytes of the whole flag word.
    pub span: Range<usize>,
}

/// A `--mount=...` flag.
#[derive(Debug, Clone)]
pub struct Mount {
    pub line: usize,
    /// Source bytes of the whole `--mount=...` word (the tests pin it; no pass reads it yet).
    #[allow(dead_code)]
    pub span: Range<usize>,
    /// Source offset just after the last option (where `,key=value` can be appended).
    pub end: usize,
    pub options: Vec<MountOption>,
}

/// One `key=value` (or boolean `key`) of a mount.
#[derive(Debug, Clone)]
pub struct MountOption {
    /// Lowercased key, quotes removed.
    pub key: String,
    /// Value with quotes and escapes removed; None for a boolean option.
    pub value: Option<String>,
    pub line: usize,
    /// Source bytes of the option as written (the tests pin it; no pass reads it yet).
    #[allow(dead_code)]
    pub span: Range<usize>,
    /// Source bytes of the value's characters, when they are one unbroken run of source bytes
    /// (quotes around the value excluded): what a rewrite of the value replaces.
    pub value_span: Option<Range<usize>>,
}

impl Mount {
    /// The last value given for `key` (the one BuildKit uses).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|o| o.key == key)
            .and_then(|o| o.value.as_deref())
    }

    /// `type=`, lowercased; `bind` when absent.
    pub fn kind(&self) -> String {
        self.get("type").unwrap_or("bind").to_ascii_lowercase()
    }

    pub fn is_cache(&self) -> bool {
        self.kind() == "cache"
    }

    /// `target=`, `dst=` or `destination=`.
    pub fn target(&self) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|o| matches!(o.key.as_str(), "target" | "dst" | "destination"))
            .and_then(|o| o.value.as_deref())
    }

    pub fn id(&self) -> Option<&str> {
        self.get("id")
    }

    /// Every `sharing=` option, in order.
    pub fn sharing_options(&self) -> impl Iterator<Item = &MountOption> {
        self.options.iter().filter(|o| o.key == "sharing")
    }
}

impl Instruction {
    pub fn flag(&self, name: &str) -> Option<&Flag> {
        self.flags.iter().find(|f| f.name == name)
    }

    /// The 1-based line of a byte of the logical text.
    pub fn line_of_text(&self, lines: &LineIndex, index: usize) -> usize {
        match self.raw.map.get(index) {
            Some(&offset) => lines.line_of(offset),
            None => self.end_line,
        }
    }
}

impl Dockerfile {
    /// The stage a name or index in `--from=` / `FROM` refers to.
    pub fn stage(&self, reference: &str) -> Option<&Stage> {
        let reference = reference.to_ascii_lowercase();
        if let Some(&index) = self.names.get(&reference) {
            return Some(&self.stages[index]);
        }
        reference
            .parse::<usize>()
            .ok()
            .and_then(|i| self.stages.get(i))
    }

    /// The stage's instructions.
    pub fn stage_instructions<'a>(
        &'a self,
        stage: &'a Stage,
    ) -> impl Iterator<Item = &'a Instruction> {
        stage.instructions.iter().map(|&i| &self.instructions[i])
    }

    /// The stage and the stages it is built `FROM`, nearest first.
    pub fn ancestry<'a>(&'a self, stage: &'a Stage) -> Vec<&'a Stage> {
        let mut chain = vec![stage];
        let mut current = stage;
        while let Some(parent) = self
            .stage(&current.base)
            .filter(|p| p.index < current.index)
        {
            chain.push(parent);
            current = parent;
        }
        chain
    }
}

/// Parses a Dockerfile.
pub fn parse(src: &str) -> Result<Dockerfile, ParseError> {
    let lexed = lexer::lex(src)?;
    let mut instructions = Vec::new();
    for raw in lexed.instructions {
        instructions.push(instruction(raw, &lexed.lines)?);
    }
    let mut global = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for (i, ins) in instructions.iter().enumerate() {
        if ins.keyword == "FROM" {
            let words = lexer::shell_words(&ins.args);
            let base = words.first().copied().unwrap_or("").to_string();
            let name = match words.as_slice() {
                [_, kw, name, ..] if kw.eq_ignore_ascii_case("as") => {
                    Some(name.to_ascii_lowercase())
                }
                _ => None,
            };
            stages.push(Stage {
                index: stages.len(),
                name,
                base,
                line: ins.line,
                instructions: Vec::new(),
            });
            continue;
        }
        // instructions before the first FROM (global ARGs) belong to no stage
        match stages.last_mut() {
            Some(stage) => stage.instructions.push(i),
            None => global.push(i),
        }
    }
    let mut names = HashMap::new();
    for stage in &stages {
        if let Some(name) = &stage.name {
            names.entry(name.clone()).or_insert(stage.index);
        }
    }
    Ok(Dockerfile {
        instructions,
        global,
        stages,
        names,
    })
}

fn instruction(raw: RawInstruction, lines: &LineIndex) -> Result<Instruction, ParseError> {
    let text = raw.text.as_str();
    let keyword_end = text.find(char::is_whitespace).unwrap_or(text.len());
    let keyword = text[..keyword_end].to_ascii_uppercase();
    let mut flags = Vec::new();
    let mut mounts = Vec::new();
    let mut pos = keyword_end;
    // `ONBUILD RUN --mount=...`: the trigger's flags are read as the trigger's own
    let mut trigger = None;
    if keyword == "ONBUILD" {
        let start = pos + (text[pos..].len() - text[pos..].trim_start().len());
        let end = text[start..]
            .find(char::is_whitespace)
            .map_or(text.len(), |i| start + i);
        if end > start {
            trigger = Some(text[start..end].to_ascii_uppercase());
            pos = end;
        }
    }
    let is_run = keyword == "RUN" || trigger.as_deref() == Some("RUN");
    loop {
        let rest = &text[pos..];
        let skipped = rest.len() - rest.trim_start().len();
        pos += skipped;
        if !text[pos..].starts_with("--") {
            break;
        }
        let word = flag_word(&raw, pos, lines)?;
        let unquoted: String = word.chars.iter().map(|&(c, _)| c).collect();
        if unquoted == "--" {
            pos = word.end;
            break;
        }
        let line = lines.line_of(raw.map[pos]);
        let body = &unquoted[2..];
        let (name, value) = match body.split_once('=') {
            Some((name, value)) => (name.to_string(), Some(value.to_string())),
            None => (body.to_string(), None),
        };
        if is_run && name == "mount" {
            let Some(eq) = word.chars.iter().position(|&(c, _)| c == '=') else {
                return Err(ParseError::new(
                    line,
                    "--mount needs a value: --mount=type=...,target=...",
                ));
            };
            mounts.push(mount(
                &raw,
                pos,
                &word.chars[eq + 1..],
                word.end,
                lines,
                line,
            )?);
        }
        flags.push(Flag {
            name,
            value,
            span: raw.source_range(pos..word.end),
        });
        pos = word.end;
    }
    let args = text[pos..].trim().to_string();
    let args_start = pos + (text[pos..].len() - text[pos..].trim_start().len());
    Ok(Instruction {
        keyword,
        trigger,
        line: raw.line,
        end_line: raw.end_line,
        span: raw.span.clone(),
        flags,
        args,
        args_start,
        mounts,
        heredocs: raw.heredocs.clone(),
        raw,
    })
}

/// A flag word: its end in the logical text and its characters with quotes and escapes
/// removed, each with its index in the logical text.
struct Word {
    end: usize,
    chars: Vec<(char, usize)>,
}

fn flag_word(raw: &RawInstruction, start: usize, lines: &LineIndex) -> Result<Word, ParseError> {
    let text = &raw.text;
    let mut chars = Vec::new();
    let mut quote: Option<(char, usize)> = None;
    let mut iter = text[start..]
        .char_indices()
        .map(|(i, c)| (start + i, c))
        .peekable();
    while let Some((i, c)) = iter.next() {
        match quote {
            Some((q, _)) if c == q => quote = None,
            Some(_) if c == '\\' => match iter.next() {
                Some((j, next)) => chars.push((next, j)),
                None => break,
            },
            Some(_) => chars.push((c, i)),
            None if c.is_whitespace() => return Ok(Word { end: i, chars }),
            None if c == '\'' || c == '"' => quote = Some((c, i)),
            None if c == '\\' => {
                if let Some((j, next)) = iter.next() {
                    chars.push((next, j));
                }
            }
            None => chars.push((c, i)),
        }
    }
    if let Some((q, at)) = quote {
        return Err(ParseError::new(
            lines.line_of(raw.map[at]),
            format!("unterminated quote {q} in `{}`", text[start..].trim_end()),
        ));
    }
    Ok(Word {
        end: text.len(),
        chars,
    })
}

/// Parses the option list of a `--mount=` flag word: `chars` are the word's characters after
/// `--mount=`, quotes and escapes removed (as BuildKit removes them before splitting the value
/// at commas), and `end` is where the word ends in the logical text.
fn mount(
    raw: &RawInstruction,
    flag_start: usize,
    chars: &[(char, usize)],
    end: usize,
    lines: &LineIndex,
    line: usize,
) -> Result<Mount, ParseError> {
    let text = &raw.text;
    let whole = &text[flag_start..end];
    let mut options = Vec::new();
    for piece in chars.split(|&(c, _)| c == ',') {
        let Some((&(_, first), &(last_char, last))) = piece.first().zip(piece.last()) else {
            return Err(ParseError::new(
                line,
                format!("empty mount option in `{whole}`"),
            ));
        };
        let span = raw.source_range(first..last + last_char.len_utf8());
        let option_line = lines.line_of(span.start);
        let unquoted: String = piece.iter().map(|&(c, _)| c).collect();
        let Some(eq) = piece.iter().position(|&(c, _)| c == '=') else {
            let key = unquoted.to_ascii_lowercase();
            if !matches!(
                key.as_str(),
                "ro" | "readonly" | "rw" | "readwrite" | "required"
            ) {
                return Err(ParseError::new(
                    option_line,
                    format!(
                        "invalid mount option `{unquoted}` in `{whole}`: must be a key=value pair"
                    ),
                ));
            }
            options.push(MountOption {
                key,
                value: None,
                line: option_line,
                span,
                value_span: None,
            });
            continue;
        };
        let key: String = piece[..eq].iter().map(|&(c, _)| c).collect();
        let value_chars = &piece[eq + 1..];
        let value: String = value_chars.iter().map(|&(c, _)| c).collect();
        let value_range = match value_chars.first().zip(value_chars.last()) {
            Some((&(_, first), &(last_char, last))) => first..last + last_char.len_utf8(),
            None => {
                let at = piece[eq].1 + 1;
                at..at
            }
        };
        let contiguous =
            text[value_range.clone()] == value && raw.is_contiguous(value_range.clone());
        options.push(MountOption {
            key: key.trim().to_ascii_lowercase(),
            value: Some(value),
            line: option_line,
            span,
            value_span: contiguous.then(|| raw.source_range(value_range)),
        });
    }
    Ok(Mount {
        line,
        span: raw.source_range(flag_start..end),
        end: raw.source_range(flag_start..end).end,
        options,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mount_options_with_spans() {
        let src = "FROM rust AS builder\nRUN --mount=type=cache,target=/cargo-home,id=cargo-home,sharing=shared \\\n    --mount=type=cache,target=\"/build/target\",'id=t' \\\n    cargo build\n";
        let df = parse(src).unwrap();
        let run = &df.instructions[1];
        assert_eq!(run.keyword, "RUN");
        assert_eq!(run.args, "cargo build");
        assert_eq!(run.mounts.len(), 2);
        let m = &run.mounts[0];
        assert_eq!(
            (m.line, m.kind().as_str(), m.target(), m.id()),
            (2, "cache", Some("/cargo-home"), Some("cargo-home"))
        );
        let sharing = m.sharing_options().next().unwrap();
        assert_eq!(&src[sharing.value_span.clone().unwrap()], "shared");
        assert_eq!(&src[sharing.span.clone()], "sharing=shared");
        assert_eq!(&src[..m.end].chars().last(), &Some('d'));
        let m = &run.mounts[1];
        assert_eq!(
            (m.line, m.target(), m.id()),
            (3, Some("/build/target"), Some("t"))
        );
        assert_eq!(
            &src[m.span.clone()],
            "--mount=type=cache,target=\"/build/target\",'id=t'"
        );
        assert_eq!(
            &src[m.options[1].value_span.clone().unwrap()],
            "/build/target"
        );
        assert_eq!(df.stages[0].name.as_deref(), Some("builder"));
    }

    #[test]
    fn mount_errors_name_their_line() {
        let err = parse("FROM a\nRUN --mount=type=cache,target=/x \\\n  --mount=type=cache,target='/y \\\n  true\n").unwrap_err();
        assert_eq!(err.line, 3);
        assert!(err.message.contains("unterminated quote"), "{err}");
        let err = parse("FROM a\nRUN --mount=type=cache,target=/x,shared true\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.message.contains("key=value"), "{err}");
        assert!(parse("FROM a\nRUN --mount=type=secret,id=x,required,ro true\n").is_ok());
        assert!(parse("FROM a\nRUN --mount type=cache true\n").is_err());
    }

    #[test]
    fn flags_stop_at_the_command_and_at_double_dash() {
        let df = parse("FROM a\nRUN --network=none -- --mount=x echo --mount=y\nCOPY --from=builder --chmod=755 /a /b\n").unwrap();
        assert_eq!(df.instructions[1].mounts.len(), 0);
        assert_eq!(df.instructions[1].args, "--mount=x echo --mount=y");
        let copy = &df.instructions[2];
        assert_eq!(copy.flag("from").unwrap().value.as_deref(), Some("builder"));
        assert_eq!(copy.args, "/a /b");
    }

    #[test]
    fn stages_and_ancestry() {
        let df = parse(
            "ARG V=1\nFROM rust:${V} AS Base\nRUN a\nFROM base AS next\nRUN b\nFROM scratch\n",
        )
        .unwrap();
        assert_eq!(df.stages.len(), 3);
        // the global ARG (instruction 0) is in no stage
        assert!(df.stages.iter().all(|s| !s.instructions.contains(&0)));
        let next = df.stage("next").unwrap();
        let chain: Vec<_> = df.ancestry(next).iter().map(|s| s.index).collect();
        assert_eq!(chain, [1, 0]);
        assert_eq!(df.global, [0]);
        assert_eq!(df.stage("2").unwrap().base, "scratch");
    }
}
