//! The server crate is a stack of layers, and no file may reach up: config and ops (metric
//! names, the shutdown signal, the HTTP endpoint) at the bottom, then transport, state, the
//! transaction layer, the core, the server that assembles them, and the CLI on top. Each file's
//! `crate::` paths are read and checked against that order (the README's Layout section draws
//! it).

use std::path::Path;

/// Bottom first. Modules of one layer may use each other.
const LAYERS: [&[&str]; 7] =
    [&["config", "ops"], &["transport"], &["state"], &["transaction"], &["core"], &["server"], &["cli"]];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read server/src").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_file_reaches_up_the_stack() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut upward = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src");
        let top = relative.components().next().and_then(|c| c.as_os_str().to_str()).unwrap_or_default();
        let top = top.trim_end_matches(".rs");
        if matches!(top, "lib" | "main") {
            continue;
        }
        let own =
            layer(top).unwrap_or_else(|| panic!("{top} (of {}) is in no layer: add it to LAYERS", relative.display()));
        let text = std::fs::read_to_string(file).expect("read a source file");
        for (n, line) in text.lines().enumerate() {
            for (at, _) in line.match_indices("crate::") {
                let used: String = line[at + "crate::".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                match layer(&used) {
                    Some(l) if l > own => upward.push(format!("{}:{}: {top} uses {used}", relative.display(), n + 1)),
                    _ => {}
                }
            }
        }
    }
    assert!(files.len() > 40, "found the sources ({} files)", files.len());
    assert!(upward.is_empty(), "arrows pointing up the stack:\n{}", upward.join("\n"));
}
