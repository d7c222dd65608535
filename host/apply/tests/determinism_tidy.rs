//! Guards the apply path's determinism by inspection: code that runs when a committed entry is
//! applied must be a pure function of the log. Time arrives only as `leader_time_ms` inside log
//! entries, so the modules below may not read a clock or draw random numbers. (Test-only files
//! are exempt; they may use seeded randomness.)

use std::path::{Path, PathBuf};

/// Modules on the apply path, relative to this crate (the store's writes are on it too).
const APPLY_PATH_DIRS: &[&str] = &[
    "src/sm",
    "src/entry",
    "src/refusal.rs",
    "../store/src/mvcc",
    "../store/src/ops",
    "../store/src/lease",
    "../store/src/storage",
    "../wasm/src",
];
/// Anything that makes a result depend on when or where it ran.
const FORBIDDEN: &[&str] = &[
    "Instant::now",
    "SystemTime",
    "thread_rng",
    "rand::",
    "getrandom",
    "RandomState",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn is_test_file(path: &Path) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    name.ends_with("test.rs") || name.ends_with("tests.rs")
}

#[test]
fn apply_path_reads_no_clock_and_no_randomness() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in APPLY_PATH_DIRS {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(
        files.len() >= 5,
        "expected apply-path sources, found {files:?}"
    );
    let mut offences = Vec::new();
    for file in files.iter().filter(|f| !is_test_file(f)) {
        let text = std::fs::read_to_string(file).expect("readable source file");
        // Unit tests at the bottom of a file may use seeded randomness.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (n, line) in code.lines().enumerate() {
            let line_code = line.split("//").next().unwrap_or_default();
            for word in FORBIDDEN {
                if line_code.contains(word) {
                    offences.push(format!("{}:{}: {word}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(
        offences.is_empty(),
        "non-determinism on the apply path:\n{}",
        offences.join("\n")
    );
}
