//! Physical lines -> logical instructions, the way BuildKit's Dockerfile parser reads them.
//!
//! - Parser directives (`# escape=`` ` ``, `# syntax=...`) are read from the top of the file until
//!   the first line that is not one; `escape` sets the escape character (`\` or `` ` ``).
//! - A line whose content ends with the escape character (then only spaces or tabs) continues on
//!   the next line. The escape character and the newline are dropped from the logical text; comment
//!   lines and blank lines between continuation lines are skipped, as Docker does.
//! - Comment lines and blank lines outside instructions are skipped.
//! - `RUN`, `COPY` and `ADD` may open heredocs (`<<EOF`, `<<-EOF`, `<<'EOF'`, `<<"EOF"`, several on
//!   one line): their bodies are the lines that follow, up to each terminator, and are not
//!   instructions.
//!
//! Every logical instruction keeps a map from each byte of its logical text to the source byte it
//! came from, so later passes can name lines and rewrite exact byte ranges.

use std::ops::Range;

use super::ParseError;

/// A lexed Dockerfile: the escape character and the logical instructions in source order.
#[derive(Debug, Clone)]
pub struct Lexed {
    /// The escape character in force (the lexer applies it itself; the tests pin it).
    #[allow(dead_code)]
    pub escape: char,
    pub instructions: Vec<RawInstruction>,
    pub lines: LineIndex,
}

/// One logical instruction: continuation lines joined, comment lines inside it dropped.
#[derive(Debug, Clone)]
pub struct RawInstruction {
    /// 1-based line of the instruction's keyword.
    pub line: usize,
    /// 1-based last line, heredoc terminators included.
    pub end_line: usize,
    /// Source bytes from the keyword to the end of the last line (newline excluded).
    pub span: Range<usize>,
    /// The logical text: leading whitespace of the first line stripped, escape characters of
    /// continuations and the newlines after them dropped, comment lines inside skipped.
    pub text: String,
    /// `map[i]` is the source byte offset of `text`'s byte `i`.
    pub map: Vec<usize>,
    pub heredocs: Vec<Heredoc>,
}

/// A heredoc opened by an instruction: its body is raw source, not instructions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    pub name: String,
    /// `<<-`: leading tabs are stripped from the body and the terminator.
    pub chomp: bool,
    /// The delimiter was quoted (`<<'EOF'`, `<<"EOF"`): no expansion in the body.
    pub quoted: bool,
    /// 1-based line of the first body line.
    pub line: usize,
    /// Source bytes of the body, from the first body line to the start of the terminator line.
    pub body: Range<usize>,
}

/// Byte offset -> 1-based line number.
#[derive(Debug, Clone)]
pub struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(src: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(src.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    pub fn line_of(&self, offset: usize) -> usize {
        match self.starts.binary_search(&offset) {
            Ok(i) => i + 1,
            Err(i) => i,
        }
    }
}

impl RawInstruction {
    /// The source range of the logical range `r` (from the first byte's source offset to just
    /// after the last byte's); an empty `r` maps to an empty range at its position.
    pub fn source_range(&self, r: Range<usize>) -> Range<usize> {
        if r.is_empty() {
            let at = if r.start < self.map.len() {
                self.map[r.start]
            } else {
                self.map.last().map_or(self.span.start, |&last| last + 1)
            };
            return at..at;
        }
        self.map[r.start]..self.map[r.end - 1] + 1
    }

    /// Whether the logical range `r` is one unbroken run of source bytes (no continuation or
    /// skipped comment line inside it).
    pub fn is_contiguous(&self, r: Range<usize>) -> bool {
        r.is_empty() || self.map[r.end - 1] - self.map[r.start] == r.end - 1 - r.start
    }
}

/// Splits `src` into logical instructions.
pub fn lex(src: &str) -> Result<Lexed, ParseError> {
    let lines = physical_lines(src);
    let escape = parse_directives(src, &lines)?;
    let index = LineIndex::new(src);
    let mut instructions = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let first = &lines[i];
        let raw = &src[first.clone()];
        let lead = raw.len() - raw.trim_start().len();
        let content = &raw[lead..];
        if content.is_empty() || content.starts_with('#') {
            i += 1;
            continue;
        }
        let start_line = i + 1;
        let mut text = String::new();
        let mut map = Vec::new();
        let (end, mut continuing) = trim_continuation(raw, escape);
        push_range(
            &mut text,
            &mut map,
            src,
            first.start + lead..first.start + end.max(lead),
        );
        let mut span_end = first.end;
        i += 1;
        while continuing && i < lines.len() {
            let line = &lines[i];
            let raw = &src[line.clone()];
            i += 1;
            let trimmed = raw.trim_start();
            if trimmed.starts_with('#') || trimmed.is_empty() {
                continue;
            }
            let (end, more) = trim_continuation(raw, escape);
            push_range(&mut text, &mut map, src, line.start..line.start + end);
            span_end = line.end;
            continuing = more;
        }
        if text.trim().is_empty() {
            continue;
        }
        let mut heredocs = Vec::new();
        let keyword = text
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        if matches!(keyword.as_str(), "RUN" | "COPY" | "ADD") {
            for (name, chomp, quoted) in heredoc_words(&text) {
                let body_start = lines.get(i).map_or(src.len(), |l| l.start);
                let body_line = i + 1;
                let mut terminated = false;
                while i < lines.len() {
                    let line = &lines[i];
                    i += 1;
                    let mut candidate = &src[line.clone()];
                    if chomp {
                        candidate = candidate.trim_start_matches('\t');
                    }
                    if candidate == name {
                        heredocs.push(Heredoc {
                            name: name.clone(),
                            chomp,
                            quoted,
                            line: body_line,
                            body: body_start..line.start,
                        });
                        span_end = line.end;
                        terminated = true;
                        break;
                    }
                }
                if !terminated {
                    return Err(ParseError::new(
                        start_line,
                        format!("unterminated heredoc <<{name}: no line `{name}` after it"),
                    ));
                }
            }
        }
        instructions.push(RawInstruction {
            line: start_line,
            end_line: index.line_of(span_end),
            span: map[0]..span_end,
            text,
            map,
            heredocs,
        });
    }
    Ok(Lexed {
        escape,
        instructions,
        lines: index,
    })
}

/// Byte ranges of the physical lines, without the newline and a trailing `\r`; a UTF-8 byte
/// order mark at the start is left out of the first line.
fn physical_lines(src: &str) -> Vec<Range<usize>> {
    let mut lines = Vec::new();
    let mut start = if src.starts_with('\u{feff}') {
        '\u{feff}'.len_utf8()
    } else {
        0
    };
    while start <= src.len() {
        let end = src[start..].find('\n').map_or(src.len(), |i| start + i);
        let content_end = if src[start..end].ends_with('\r') {
            end - 1
        } else {
            end
        };
        lines.push(start..content_end);
        if end == src.len() {
            break;
        }
        start = end + 1;
    }
    if lines
        .last()
        .is_some_and(|l| l.is_empty() && l.start == src.len())
    {
        lines.pop();
    }
    lines
}

/// Reads the parser directives at the top of the file and returns the escape character.
fn parse_directives(src: &str, lines: &[Range<usize>]) -> Result<char, ParseError> {
    let mut escape = None;
    for (n, line) in lines.iter().enumerate() {
        let Some((key, value)) = directive(&src[line.clone()]) else {
            break;
        };
        if key != "escape" {
            continue;
        }
        if escape.is_some() {
            return Err(ParseError::new(
                n + 1,
                "only one escape parser directive can be used",
            ));
        }
        escape = Some(match value {
            "\\" => '\\',
            "`" => '`',
            _ => {
                return Err(ParseError::new(
                    n + 1,
                    format!("invalid escape token `{value}` (expected \\ or `)"),
                ))
            }
        });
    }
    Ok(escape.unwrap_or('\\'))
}

/// `# key=value` with a lowercase key, or None when the line is not a parser directive.
fn directive(line: &str) -> Option<(String, &str)> {
    let rest = line.strip_prefix('#')?;
    let (key, value) = rest.split_once('=')?;
    let key = key.trim_matches([' ', '\t']);
    let value = value.trim_matches([' ', '\t']);
    let mut chars = key.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric()) || value.is_empty() {
        return None;
    }
    Some((key.to_ascii_lowercase(), value))
}

/// Where `raw`'s content ends and whether it continues: the escape character followed only by
/// spaces or tabs at the end of the line is a continuation.
fn trim_continuation(raw: &str, escape: char) -> (usize, bool) {
    let trimmed = raw.trim_end_matches([' ', '\t']);
    match trimmed.strip_suffix(escape) {
        Some(content) => (content.len(), true),
        None => (raw.len(), false),
    }
}

fn push_range(text: &mut String, map: &mut Vec<usize>, src: &str, range: Range<usize>) {
    text.push_str(&src[range.clone()]);
    map.extend(range);
}

/// The heredocs a logical line opens, in order: shell words of the form `[n]<<[-]WORD`, with the
/// quotes removed from WORD. Quoted words (`"<<EOF"`) are not heredocs.
pub fn heredoc_words(text: &str) -> Vec<(String, bool, bool)> {
    let mut docs = Vec::new();
    for word in shell_words(text) {
        let rest = word.trim_start_matches(|c: char| c.is_ascii_digit());
        let Some(rest) = rest.strip_prefix("<<") else {
            continue;
        };
        let (chomp, rest) = match rest.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, rest),
        };
        if rest.is_empty() || rest.contains('<') {
            continue;
        }
        let quoted = rest.contains(['\'', '"']);
        let name: String = rest.chars().filter(|c| !matches!(c, '\'' | '"')).collect();
        if name.is_empty() {
            continue;
        }
        docs.push((name, chomp, quoted));
    }
    docs
}

/// Whitespace-separated words, quotes and backslash escapes kept, whitespace inside quotes
/// not splitting.
pub fn shell_words(text: &str) -> Vec<&str> {
    let mut words = Vec::new();
    let mut start = None;
    let mut quote = None;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if let Some(q) = quote {
            if c == q {
                quote = None;
            } else if c == '\\' && q == '"' {
                chars.next();
            }
            continue;
        }
        if c.is_whitespace() {
            if let Some(s) = start.take() {
                words.push(&text[s..i]);
            }
            continue;
        }
        start.get_or_insert(i);
        match c {
            '\'' | '"' => quote = Some(c),
            '\\' => {
                chars.next();
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        words.push(&text[s..]);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(src: &str) -> Vec<String> {
        lex(src)
            .unwrap()
            .instructions
            .into_iter()
            .map(|i| i.text)
            .collect()
    }

    #[test]
    fn joins_continuations_and_skips_comment_lines_inside() {
        let src =
            "FROM a AS b\nRUN one \\\n    # a comment\n\n    two \\\n  three\n# outside\nUSER x\n";
        assert_eq!(
            texts(src),
            ["FROM a AS b", "RUN one     two   three", "USER x"]
        );
        let lexed = lex(src).unwrap();
        let run = &lexed.instructions[1];
        assert_eq!((run.line, run.end_line), (2, 6));
        assert_eq!(
            &src[run.span.clone()],
            "RUN one \\\n    # a comment\n\n    two \\\n  three"
        );
        let two = run.text.find("two").unwrap();
        assert_eq!(&src[run.source_range(two..two + 3)], "two");
        assert_eq!(lexed.lines.line_of(run.map[two]), 5);
        assert!(!run.is_contiguous(0..two + 3));
    }

    #[test]
    fn escape_directive_changes_the_continuation_character() {
        let src = "# escape=`\n\nFROM a\nRUN dir c:\\ `\n  && echo x\n";
        let lexed = lex(src).unwrap();
        assert_eq!(lexed.escape, '`');
        assert_eq!(texts(src), ["FROM a", "RUN dir c:\\   && echo x"]);
    }

    #[test]
    fn directives_only_count_at_the_top() {
        let src = "FROM a\n# escape=`\nRUN a \\\n b\n";
        assert_eq!(lex(src).unwrap().escape, '\\');
        assert_eq!(texts(src), ["FROM a", "RUN a  b"]);
        let err = lex("# escape=x\nFROM a\n").unwrap_err();
        assert_eq!(err.line, 1);
    }

    #[test]
    fn heredoc_bodies_are_not_instructions() {
        let src = "FROM a\nRUN <<EOF cat >/x && <<-'TWO' cat\nRUN --mount=type=cache,target=/y true\nEOF\n\t\tbody\n\tTWO\nUSER z\n";
        let lexed = lex(src).unwrap();
        let kw: Vec<_> = lexed.instructions.iter().map(|i| i.text.clone()).collect();
        assert_eq!(
            kw,
            ["FROM a", "RUN <<EOF cat >/x && <<-'TWO' cat", "USER z"]
        );
        let docs = &lexed.instructions[1].heredocs;
        assert_eq!(docs.len(), 2);
        assert_eq!(
            (docs[0].name.as_str(), docs[0].chomp, docs[0].quoted),
            ("EOF", false, false)
        );
        assert_eq!(
            &src[docs[0].body.clone()],
            "RUN --mount=type=cache,target=/y true\n"
        );
        assert_eq!(
            (docs[1].name.as_str(), docs[1].chomp, docs[1].quoted),
            ("TWO", true, true)
        );
        assert_eq!(lexed.instructions[1].end_line, 6);
    }

    #[test]
    fn quoted_heredoc_markers_are_words_not_heredocs() {
        assert!(heredoc_words(r#"RUN echo "<<EOF" '<<X'"#).is_empty());
        assert_eq!(
            heredoc_words("RUN cat 3<<\"A B\"")[0],
            ("A B".to_string(), false, true)
        );
        assert_eq!(
            heredoc_words("RUN cat <<\"AB\"")[0],
            ("AB".to_string(), false, true)
        );
    }

    #[test]
    fn unterminated_heredoc_is_an_error_at_its_instruction() {
        let err = lex("FROM a\n\nRUN <<EOF\necho\n").unwrap_err();
        assert_eq!(err.line, 3);
        assert!(err.message.contains("unterminated heredoc"), "{err}");
    }

    #[test]
    fn crlf_lines_and_bom() {
        let src = "\u{feff}FROM a\r\nRUN a \\\r\n  b\r\n";
        assert_eq!(texts(src), ["FROM a", "RUN a   b"]);
    }
}
