//! The library's layering, checked from its source: the top-level modules import each other
//! without cycles, and none of them prints. Each file's `crate::` and `super::` paths are read
//! with comments, literals and `#[cfg(test)]` items left out; the binary (`src/main.rs`,
//! `src/cli/`) is not part of the library's module tree and is not read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A word (identifier, keyword or number), `::`, or any other single character.
#[derive(Debug, Clone, PartialEq)]
struct Token {
    text: String,
    line: usize,
}

impl Token {
    fn is(&self, text: &str) -> bool {
        self.text == text
    }

    fn is_word(&self) -> bool {
        self.text
            .chars()
            .next()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
    }
}

/// The code of a Rust file with comments removed and string and character literals emptied;
/// line breaks are kept, so lines still count as in the file.
fn code_only(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    let is_word_char = |c: char| c.is_alphanumeric() || c == '_';
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if chars[i] == '\n' {
                        out.push('\n');
                    }
                    i += 1;
                }
            }
        } else if c == 'r'
            && !i
                .checked_sub(1)
                .is_some_and(|p| is_word_char(chars[p]) && chars[p] != 'b')
            && matches!(next, Some('"' | '#'))
        {
            let hashes = chars[i + 1..].iter().take_while(|&&h| h == '#').count();
            if chars.get(i + 1 + hashes) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            out.push_str("\"\"");
            i += 2 + hashes;
            while i < chars.len() {
                if chars[i] == '"'
                    && chars[i + 1..].iter().take_while(|&&h| h == '#').count() >= hashes
                {
                    i += 1 + hashes;
                    break;
                }
                if chars[i] == '\n' {
                    out.push('\n');
                }
                i += 1;
            }
        } else if c == '"' {
            out.push_str("\"\"");
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                if chars.get(i) == Some(&'\n') {
                    out.push('\n');
                }
                i += 1;
            }
            i += 1;
        } else if c == '\'' && next == Some('\\') {
            out.push_str("' '");
            i += 2;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            out.push_str("' '");
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn tokens(code: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    for (index, line) in code.lines().enumerate() {
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let start = i;
            if c.is_alphanumeric() || c == '_' {
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            } else if c == ':' && chars.get(i + 1) == Some(&':') {
                i += 2;
            } else {
                i += 1;
                if c.is_whitespace() {
                    continue;
                }
            }
            tokens.push(Token {
                text: chars[start..i].iter().collect(),
                line: index + 1,
            });
        }
    }
    tokens
}

/// The index after the item that starts at `start`: after its `;`, or after the block closing its
/// first `{`, whichever ends it.
fn item_end(tokens: &[Token], start: usize) -> usize {
    let mut depth = 0usize;
    for (i, token) in tokens.iter().enumerate().skip(start) {
        match token.text.as_str() {
            "{" => depth += 1,
            "}" => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1;
                }
            }
            ";" if depth == 0 => return i + 1,
            _ => {}
        }
    }
    tokens.len()
}

/// The tokens without the items under `#[cfg(test)]` (test modules, test-only imports).
fn without_test_items(tokens: Vec<Token>) -> Vec<Token> {
    let texts: Vec<&str> = tokens.iter().map(|t| t.text.as_str()).collect();
    let mut kept = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        if texts[i..].starts_with(&["#", "[", "cfg", "(", "test", ")", "]"]) {
            i = item_end(&tokens, i + 7);
        } else {
            kept.push(tokens[i].clone());
            i += 1;
        }
    }
    kept
}

/// Names of the modules declared as files (`mod name;`).
fn declared_modules(tokens: &[Token]) -> Vec<String> {
    tokens
        .windows(3)
        .filter(|w| w[0].is("mod") && w[1].is_word() && w[2].is(";"))
        .map(|w| w[1].text.clone())
        .collect()
}

/// The top-level modules that a file of the module at `module_path` names, each with its line.
/// `crate::a::b`, `crate::{a, b::c}` and, from a top-level module, `super::a` name `a` (and `b`).
fn named_modules(tokens: &[Token], module_path: &[String]) -> Vec<(String, usize)> {
    let mut named = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let starts_path = i == 0 || !tokens[i - 1].is("::");
        let mut next = i + 1;
        let at_root = if tokens[i].is("crate") && tokens.get(i + 1).is_some_and(|t| t.is("::")) {
            next = i + 2;
            true
        } else if starts_path && tokens[i].is("super") {
            let mut ups = 0;
            let mut j = i;
            while tokens.get(j).is_some_and(|t| t.is("super"))
                && tokens.get(j + 1).is_some_and(|t| t.is("::"))
            {
                ups += 1;
                j += 2;
            }
            next = j;
            ups > 0 && ups == module_path.len()
        } else {
            false
        };
        if at_root {
            match tokens.get(next) {
                Some(t) if t.is("{") => {
                    let end = item_end(tokens, next);
                    let mut depth = 0;
                    let mut item_start = true;
                    for t in &tokens[next..end] {
                        match t.text.as_str() {
                            "{" => {
                                depth += 1;
                                item_start = depth == 1;
                            }
                            "}" => depth -= 1,
                            "," if depth == 1 => item_start = true,
                            _ if item_start && depth == 1 => {
                                item_start = false;
                                if t.is_word() && !t.is("self") {
                                    named.push((t.text.clone(), t.line));
                                }
                            }
                            _ => {}
                        }
                    }
                    next = end;
                }
                Some(t) if t.is_word() && !t.is("self") => named.push((t.text.clone(), t.line)),
                _ => {}
            }
        }
        i = next.max(i + 1);
    }
    named
}

/// A library file: its module path from the crate root and its tokens, test items left out.
struct ModuleFile {
    path: PathBuf,
    module_path: Vec<String>,
    tokens: Vec<Token>,
}

/// Every file of the module tree that `src/lib.rs` declares.
fn library_files(lib_rs: &Path) -> Vec<ModuleFile> {
    let mut files = Vec::new();
    let mut pending = vec![(lib_rs.to_path_buf(), Vec::<String>::new())];
    while let Some((path, module_path)) = pending.pop() {
        let source = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let tokens = without_test_items(tokens(&code_only(&source)));
        let is_dir_module = path
            .file_name()
            .is_some_and(|n| n == "lib.rs" || n == "mod.rs");
        let children_dir = if is_dir_module {
            path.parent().unwrap().to_path_buf()
        } else {
            path.with_extension("")
        };
        for name in declared_modules(&tokens) {
            let file = children_dir.join(format!("{name}.rs"));
            let dir_file = children_dir.join(&name).join("mod.rs");
            let child = if file.exists() { file } else { dir_file };
            assert!(
                child.exists(),
                "module {name} of {} has no file",
                path.display()
            );
            let mut child_path = module_path.clone();
            child_path.push(name);
            pending.push((child, child_path));
        }
        files.push(ModuleFile {
            path,
            module_path,
            tokens,
        });
    }
    files
}

/// Imports between top-level modules: `graph[a][b]` is one place where `a` names `b`.
type Graph = BTreeMap<String, BTreeMap<String, String>>;

fn module_graph(files: &[ModuleFile], root: &Path) -> Graph {
    let top_level: Vec<&String> = files
        .iter()
        .filter(|f| f.module_path.len() == 1)
        .map(|f| &f.module_path[0])
        .collect();
    let mut graph: Graph = top_level
        .iter()
        .map(|m| ((*m).clone(), BTreeMap::new()))
        .collect();
    for file in files.iter().filter(|f| !f.module_path.is_empty()) {
        let from = &file.module_path[0];
        for (to, line) in named_modules(&file.tokens, &file.module_path) {
            assert!(
                top_level.contains(&&to),
                "{}:{line} names crate::{to}, which is not a module: name the item through its module so that this test sees the import",
                file.path.display()
            );
            if &to != from {
                let place = format!(
                    "{}:{line}",
                    file.path.strip_prefix(root).unwrap_or(&file.path).display()
                );
                graph.get_mut(from).unwrap().entry(to).or_insert(place);
            }
        }
    }
    graph
}

/// One cycle of `graph` as its modules, the first repeated at the end; `None` when it has none.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Unseen,
        OnPath,
        Done,
    }
    fn visit<'a>(
        node: &'a str,
        graph: &'a Graph,
        marks: &mut BTreeMap<&'a str, Mark>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        marks.insert(node, Mark::OnPath);
        path.push(node);
        for next in graph.get(node).into_iter().flat_map(|edges| edges.keys()) {
            match marks.get(next.as_str()).copied().unwrap_or(Mark::Unseen) {
                Mark::OnPath => {
                    let start = path.iter().position(|n| *n == next.as_str()).unwrap();
                    let mut cycle: Vec<String> =
                        path[start..].iter().map(|n| n.to_string()).collect();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Mark::Unseen => {
                    if let Some(cycle) = visit(next, graph, marks, path) {
                        return Some(cycle);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks.insert(node, Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if marks.get(node.as_str()).copied().unwrap_or(Mark::Unseen) == Mark::Unseen {
            if let Some(cycle) = visit(node, graph, &mut marks, &mut Vec::new()) {
                return Some(cycle);
            }
        }
    }
    None
}

fn describe_cycle(cycle: &[String], graph: &Graph) -> String {
    let mut text = format!("import cycle: {}", cycle.join(" -> "));
    for pair in cycle.windows(2) {
        text.push_str(&format!(
            "\n  {} -> {}: {}",
            pair[0], pair[1], graph[&pair[0]][&pair[1]]
        ));
    }
    text
}

fn crate_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn synthetic_graph(edges: &[(&str, &str)]) -> Graph {
    let mut graph = Graph::new();
    for (from, to) in edges {
        graph.entry(to.to_string()).or_default();
        graph
            .entry(from.to_string())
            .or_default()
            .insert(to.to_string(), format!("{from}.rs:1"));
    }
    graph
}

#[test]
fn library_modules_have_no_import_cycle() {
    let root = crate_root();
    let files = library_files(&root.join("src/lib.rs"));
    let graph = module_graph(&files, &root);
    assert!(
        graph["ensemble"].contains_key("manifest"),
        "the reader missed `use crate::manifest` in src/ensemble.rs: {graph:?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!("{}", describe_cycle(&cycle, &graph));
    }
}

#[test]
fn library_has_no_command_line_and_never_prints() {
    let root = crate_root();
    let files = library_files(&root.join("src/lib.rs"));
    assert!(
        files
            .iter()
            .all(|f| f.module_path.first().is_none_or(|m| m != "cli")),
        "the command line belongs to the binary (src/main.rs declares `mod cli`)"
    );
    let printing = ["print", "println", "eprint", "eprintln", "dbg"];
    for file in &files {
        for pair in file.tokens.windows(2) {
            assert!(
                !(printing.contains(&pair[0].text.as_str()) && pair[1].is("!")),
                "{}:{}: the library returns values or logs with `log::`; printing is the binary's",
                file.path.display(),
                pair[0].line
            );
        }
    }
}

#[test]
fn finds_a_cycle_and_names_its_imports() {
    let graph = synthetic_graph(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]);
    let cycle = find_cycle(&graph).unwrap();
    assert_eq!(cycle, ["a", "b", "c", "a"]);
    assert_eq!(
        describe_cycle(&cycle, &graph),
        "import cycle: a -> b -> c -> a\n  a -> b: a.rs:1\n  b -> c: b.rs:1\n  c -> a: c.rs:1"
    );
    let two = synthetic_graph(&[("manifest", "preprocess"), ("preprocess", "manifest")]);
    assert_eq!(
        find_cycle(&two).unwrap(),
        ["manifest", "preprocess", "manifest"]
    );
}

#[test]
fn accepts_layers_that_share_a_lower_module() {
    let graph = synthetic_graph(&[
        ("capture", "inputs"),
        ("classify", "inputs"),
        ("bench", "capture"),
        ("bench", "classify"),
        ("bench", "health"),
    ]);
    assert_eq!(find_cycle(&graph), None);
}

#[test]
fn reads_grouped_inline_and_super_paths_but_not_tests_comments_or_literals() {
    let source = r##"
        use crate::{alpha, beta::Thing, gamma::{one, two::Three}, self as root};
        use crate::delta::Item;
        pub(crate) fn f() -> usize {
            let _ = "crate::in_a_string";
            let _ = r#"crate::in_a_raw_string"#;
            let _ = '{';
            // crate::in_a_comment
            /* crate::in_a_block_comment */
            crate::epsilon::call() + super::zeta::VALUE
        }
        #[cfg(test)]
        mod tests {
            use crate::only_in_tests;
        }
        #[cfg(test)]
        use crate::test_only_import;
        pub(super) fn g() {}
        mod child;
    "##;
    let tokens = without_test_items(tokens(&code_only(source)));
    let top_level = ["top".to_string()];
    let names: Vec<String> = named_modules(&tokens, &top_level)
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(
        names,
        ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
    );
    let nested = ["top".to_string(), "inner".to_string()];
    let names: Vec<String> = named_modules(&tokens, &nested)
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert!(!names.contains(&"zeta".to_string()), "{names:?}");
    assert_eq!(declared_modules(&tokens), ["child"]);
    let lines: Vec<usize> = named_modules(&tokens, &top_level)
        .into_iter()
        .map(|(_, line)| line)
        .collect();
    assert_eq!(lines, [2, 2, 2, 3, 10, 10]);
}
