//! Replays every file of `fuzz/corpus/parse/` through the fuzz target's body, so CI runs the
//! seeds (and any crash reproducer saved there) without cargo-fuzz.

#[path = "../../fuzz/exercise.rs"]
mod target;

pub use target::exercise;

#[test]
fn fuzz_corpus_replays() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/parse");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "{} seeds in {}",
        files.len(),
        dir.display()
    );
    for file in files {
        let data = std::fs::read(&file).unwrap();
        let outcome = std::panic::catch_unwind(|| exercise(&data));
        assert!(outcome.is_ok(), "panicked on {}", file.display());
    }
}
