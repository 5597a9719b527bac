//! The architecture invariant of ARCHITECTURE.md, checked on the source: a command module
//! (`cmd/<name>`) never refers to another command, and no library module refers to `cmd` at all.
//! Every `crate::` and `super::` path of every file under `xtask/src/` is resolved to the module
//! it names (groups like `use crate::{a, b::{c, d}}` expanded), comments and strings left out.

use std::{fs, path::Path};

/// The module a file is: `cmd/verify/mod.rs` -> `[cmd, verify]`, `main.rs` and `lib.rs` (the
/// roots of the binary and of the library) -> `[]`.
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "main" | "lib")
    ) {
        parts.pop();
    }
    parts
}

/// The text without comments, string and char literals (their content could look like a path).
fn code_only(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("/*") {
            i += rest.find("*/").map_or(rest.len(), |e| e + 2);
        } else if let Some(raw) = rest.strip_prefix("r#\"") {
            i += 3 + raw.find("\"#").map_or(raw.len(), |e| e + 2);
            out.push_str("\"\"");
        } else if rest.starts_with('"') {
            let mut j = 1;
            while j < rest.len() && rest.as_bytes()[j] != b'"' {
                j += if rest.as_bytes()[j] == b'\\' { 2 } else { 1 };
            }
            i += (j + 1).min(rest.len());
            out.push_str("\"\"");
        } else if rest.starts_with("'\\")
            || rest.len() > 2 && rest.as_bytes()[2] == b'\'' && rest.starts_with('\'')
        {
            // a char literal ('x', '\n'); a lifetime ('a) has no closing quote right after
            let end = rest[1..].find('\'').map_or(1, |e| e + 2);
            i += end;
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// Every path that starts at `crate::` or `super::`, groups expanded, as segments from the root.
fn references(module: &[String], code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(pos) = find_root(&code[i..]) {
        let start = i + pos;
        let (base, len) = if code[start..].starts_with("crate::") {
            (Vec::new(), "crate::".len())
        } else {
            (
                module[..module.len().saturating_sub(1)].to_vec(),
                "super::".len(),
            )
        };
        let mut base = base;
        let mut j = start + len;
        // super::super::...
        while code[j..].starts_with("super::") {
            base.pop();
            j += "super::".len();
        }
        let tree = &code[j..];
        let end = tree_end(tree);
        for path in expand(&tree[..end]) {
            let mut full = base.clone();
            full.extend(path);
            out.push(full);
        }
        i = j + end.max(1);
    }
    out
}

fn find_root(code: &str) -> Option<usize> {
    let mut from = 0;
    loop {
        let c = code[from..].find("crate::");
        let s = code[from..].find("super::");
        let pos = from
            + match (c, s) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) | (None, Some(a)) => a,
                (None, None) => return None,
            };
        // a whole word: not `$crate::` nor the tail of an identifier
        let before = code[..pos].chars().next_back();
        if before.is_some_and(|b| b.is_alphanumeric() || b == '_' || b == '$') {
            from = pos + 1;
            continue;
        }
        return Some(pos);
    }
}

/// Where a use tree (`a::b`, `a::{b, c::d}`, `a::*`) ends.
fn tree_end(tree: &str) -> usize {
    let mut depth = 0i32;
    for (k, c) in tree.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return k,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return k + 1;
                }
            }
            c if depth == 0 && !(c.is_alphanumeric() || c == '_' || c == ':' || c == '*') => {
                return k
            }
            _ => {}
        }
    }
    tree.len()
}

/// `a::{b, c::{d, e}}` -> `[a, b]`, `[a, c, d]`, `[a, c, e]` (`self` and `*` name the prefix).
fn expand(tree: &str) -> Vec<Vec<String>> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(brace) = tree.find('{') else {
        let segs: Vec<String> = tree
            .split("::")
            .filter(|s| !s.is_empty() && *s != "*" && *s != "self")
            .map(|s| s.split(" as ").next().unwrap().to_string())
            .collect();
        return vec![segs];
    };
    let prefix: Vec<String> = tree[..brace]
        .split("::")
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let inner = &tree[brace + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut parts = Vec::new();
    let (mut depth, mut from) = (0, 0);
    for (k, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[from..k]);
                from = k + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[from..]);
    let mut out = Vec::new();
    for part in parts.into_iter().filter(|p| !p.is_empty()) {
        for tail in expand(part) {
            let mut path = prefix.clone();
            path.extend(tail);
            out.push(path);
        }
    }
    out
}

/// The broken rules of one file, as `file: refers to path`.
fn violations(rel: &Path, text: &str) -> Vec<String> {
    let module = module_of(rel);
    let own_command = (module.first().map(String::as_str) == Some("cmd")).then(|| module.get(1));
    let mut out = Vec::new();
    for path in references(&module, &code_only(text)) {
        if path.first().map(String::as_str) != Some("cmd") || module.is_empty() {
            continue; // not a command, or main.rs (which dispatches to every command)
        }
        let broken = match own_command {
            // a command may use itself, and `cmd` alone names no command
            Some(own) => path.len() > 1 && path.get(1) != own,
            None => true,
        };
        if broken {
            out.push(format!(
                "{}: refers to crate::{}",
                rel.display(),
                path.join("::")
            ));
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// xtask/src and its modules' files: bin/ holds separate programs (the fake docker), not
/// modules of the xtask.
fn xtask_files() -> (std::path::PathBuf, Vec<std::path::PathBuf>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.retain(|f| !f.starts_with(src.join("bin")));
    (src, files)
}

#[test]
fn commands_stand_on_the_library_and_never_on_each_other() {
    let (src, files) = xtask_files();
    assert!(files.len() > 20, "found only {} files", files.len());
    assert!(files.iter().any(|f| f.ends_with("cmd/bench/ephemeral.rs")));
    let mut broken = Vec::new();
    for file in &files {
        let text = fs::read_to_string(file).unwrap();
        broken.extend(violations(file.strip_prefix(&src).unwrap(), &text));
    }
    assert!(
        broken.is_empty(),
        "commands import only library modules (ARCHITECTURE.md); move what two commands share \
         into a module outside cmd/:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_check_sees_every_way_of_naming_another_command() {
    let bench = Path::new("cmd/bench.rs");
    let cases = [
        "use crate::cmd::verify::nonce;",
        "use crate::{flags, cmd::{bake, verify::report}};",
        "let x = crate::cmd::bake::bake_file(&plan);",
        "use crate::{\n    cmd::verify,\n    sandbox,\n};",
    ];
    for case in cases {
        assert!(!violations(bench, case).is_empty(), "not seen: {case}");
    }
    // super::super from cmd/verify/strategy.rs reaches cmd::bench
    assert_eq!(
        violations(
            Path::new("cmd/verify/strategy.rs"),
            "use super::super::bench::rows;"
        ),
        ["cmd/verify/strategy.rs: refers to crate::cmd::bench::rows"]
    );
    // a library module may not name a command at all
    assert_eq!(
        violations(Path::new("session.rs"), "use crate::cmd::docker_build;").len(),
        1
    );
    // allowed: itself, the library, main.rs, and text in comments or strings
    let fine = [
        (
            bench,
            "use crate::{session, sandbox::Sandbox};\nuse super::bench;",
        ),
        (
            bench,
            "// crate::cmd::verify::nonce\nlet s = \"crate::cmd::bake\";",
        ),
        (
            Path::new("cmd/verify/report.rs"),
            "use crate::cmd::verify::{analysis::CargoSpan, ImageRun};",
        ),
        (
            Path::new("main.rs"),
            "cmd::bench::run(&root, args); crate::cmd::ci::run(&root, a);",
        ),
    ];
    for (file, text) in fine {
        assert_eq!(violations(file, text), Vec::<String>::new(), "{text}");
    }
}

/// The module a path names: the longest prefix of it that is a module file of `modules`.
fn module_named<'a>(path: &[String], modules: &'a [Vec<String>]) -> Option<&'a Vec<String>> {
    (0..=path.len())
        .rev()
        .find_map(|k| modules.iter().find(|m| m.as_slice() == &path[..k]))
}

/// The import circles among `files` (`(module, code)` each): every strongly connected group of
/// more than one module, each sorted. The code of tests (`#[cfg(test)]` on) is left out.
fn circles(files: &[(Vec<String>, String)]) -> Vec<Vec<String>> {
    let modules: Vec<Vec<String>> = files.iter().map(|(m, _)| m.clone()).collect();
    let edges: Vec<Vec<usize>> = (files.iter())
        .map(|(module, code)| {
            let code = code.split("#[cfg(test)]").next().unwrap_or("");
            let mut to: Vec<usize> = (references(module, &code_only(code)).iter())
                .filter_map(|p| module_named(p, &modules))
                .filter(|m| !m.is_empty() && *m != module && !module.starts_with(m))
                .filter_map(|m| modules.iter().position(|x| x == m))
                .collect();
            to.sort();
            to.dedup();
            to
        })
        .collect();
    // reachability, then the groups that reach each other (a few dozen modules: plain search)
    let reach = |from: usize| {
        let mut seen = vec![false; modules.len()];
        let mut todo = vec![from];
        while let Some(at) = todo.pop() {
            for &next in &edges[at] {
                if !seen[next] {
                    seen[next] = true;
                    todo.push(next);
                }
            }
        }
        seen
    };
    let reached: Vec<Vec<bool>> = (0..modules.len()).map(reach).collect();
    let mut out: Vec<Vec<String>> = Vec::new();
    for (a, from_a) in reached.iter().enumerate() {
        let mut group: Vec<String> = (0..modules.len())
            .filter(|&b| b == a || (from_a[b] && reached[b][a]))
            .map(|b| modules[b].join("::"))
            .collect();
        group.sort();
        if group.len() > 1 && !out.contains(&group) {
            out.push(group);
        }
    }
    out
}

/// Issue 21: no import circle between the xtask's modules (a module and its own submodules
/// aside): what two modules both need lives below both.
#[test]
fn no_module_imports_one_that_imports_it_back() {
    let (src, files) = xtask_files();
    let files: Vec<(Vec<String>, String)> = (files.iter())
        .map(|f| {
            let module = module_of(f.strip_prefix(&src).unwrap());
            (module, fs::read_to_string(f).unwrap())
        })
        .collect();
    let found = circles(&files);
    assert!(
        found.is_empty(),
        "import circles (move what both sides use into a module below them):\n{found:?}"
    );
}

#[test]
fn the_circle_check_finds_a_circle() {
    let files = |a: &str, b: &str| {
        vec![
            (vec!["plan".to_string()], a.to_string()),
            (vec!["farm".to_string()], b.to_string()),
            (vec!["target".to_string()], String::new()),
        ]
    };
    assert_eq!(
        circles(&files("use crate::farm::place;", "use crate::plan::Build;")),
        [["farm", "plan"]]
    );
    assert!(circles(&files(
        "use crate::farm::place;",
        "use crate::target::Target;"
    ))
    .is_empty());
    // a test module's imports do not count
    assert!(circles(&files(
        "use crate::farm::place;",
        "#[cfg(test)]\nmod tests { use crate::plan::Build; }"
    ))
    .is_empty());
}

/// Issue 21: every child process starts through `proc.rs` (logged: argv, duration, status), the
/// concurrent builds through `exec/` (process groups, the supervisor): no other module names
/// `std::process` (but for its own pid or exit) or `duct`, outside its tests.
#[test]
fn processes_start_only_through_proc_and_exec() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let allowed = |rel: &Path| {
        rel.starts_with("bin") || rel.starts_with("exec") || rel == Path::new("proc.rs")
    };
    let mut found = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        if allowed(rel) {
            continue;
        }
        let text = fs::read_to_string(file).unwrap();
        let code = code_only(text.split("#[cfg(test)]").next().unwrap_or(""));
        let code = code
            .replace("std::process::id()", "")
            .replace("std::process::exit", "")
            .replace("std::process::ExitCode", "");
        for word in ["std::process", "process::{", "process::Command", "duct::"] {
            if code.contains(word) {
                found.push(format!("{}: {word}", rel.display()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "start processes through crate::proc (its Command, status, output, capture_with_timeout, spawn, pipe):\n{}",
        found.join("\n")
    );
}

/// `(name, lines)` of every function of `code` (rustfmt's layout: a body closes with a `}` at
/// the indentation its `fn` line opened at).
fn function_lengths(code: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = code.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let after_vis = trimmed
            .strip_prefix("pub(crate) ")
            .or_else(|| trimmed.strip_prefix("pub(super) "))
            .or_else(|| trimmed.strip_prefix("pub "))
            .unwrap_or(trimmed);
        let Some(rest) = after_vis.strip_prefix("fn ") else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let close = format!("{}}}", " ".repeat(indent));
        // a declaration without a body (a trait's) ends with `;` before any `{`
        let opens = lines[i..].iter().position(|l| l.trim_end().ends_with('{'));
        let ends = lines[i..].iter().position(|l| l.trim_end().ends_with(';'));
        if matches!((opens, ends), (Some(o), Some(e)) if e < o) || opens.is_none() {
            continue;
        }
        if let Some(end) = lines[i + 1..].iter().position(|l| l.trim_end() == close) {
            out.push((name, end + 2));
        }
    }
    out
}

/// Issue 21: no function of the xtask is over 100 lines (tests, and the fake docker, aside).
#[test]
fn no_function_is_over_100_lines() {
    let (src, files) = xtask_files();
    let mut long = Vec::new();
    for file in &files {
        let text = fs::read_to_string(file).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for (name, n) in function_lengths(code) {
            if n > 100 {
                let rel = file.strip_prefix(&src).unwrap();
                long.push(format!("{}: fn {name}: {n} lines", rel.display()));
            }
        }
    }
    assert!(
        long.is_empty(),
        "split these functions:\n{}",
        long.join("\n")
    );
}

#[test]
fn function_lengths_are_counted_from_fn_to_its_closing_brace() {
    let code = "pub fn a() {\n    x();\n}\n\nimpl T {\n    fn b(\n        y: u8,\n    ) -> u8 {\n        y\n    }\n}\ntrait U {\n    fn c();\n}\n";
    assert_eq!(
        function_lengths(code),
        [("a".to_string(), 3), ("b".to_string(), 5)]
    );
}
