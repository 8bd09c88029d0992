//! Runs every fuzz target (`fuzz/targets.rs`) over its committed corpus (`fuzz/corpus/`),
//! so the properties the fuzzers check hold in the normal suite too, on stable Rust,
//! where cargo-fuzz (nightly) is not available.

#[path = "../fuzz/targets.rs"]
mod targets;

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus for {target}");
    files
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).expect("corpus file");
            (p, data)
        })
        .collect()
}

fn run(target: &str, f: fn(&[u8])) {
    for (path, data) in corpus(target) {
        let outcome = std::panic::catch_unwind(|| f(&data));
        assert!(outcome.is_ok(), "{target} failed on {}", path.display());
    }
}

#[test]
fn path_corpus_holds_the_canonicalization_properties() {
    run("path", targets::path);
}

#[test]
fn cookie_corpus_parses_safely() {
    run("cookie", targets::cookie);
}

#[test]
fn redirect_corpus_never_leaves_the_site() {
    run("redirect", targets::redirect);
}

#[test]
fn forward_auth_corpus_parses_safely() {
    run("forward_auth", targets::forward_auth);
}
