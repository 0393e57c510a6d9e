//! `PROTOCOL.md` and `SECURITY.md` name the tests behind every rule they list: each named test
//! must exist, so the checklist cannot point at a test that was renamed or removed.
//!
//! A name is `FILE::TEST` (a `#[test]` function in `tests/FILE.rs`), `MODULE::tests::TEST` (a
//! unit test in `src/MODULE.rs` or `src/MODULE/tests.rs`) or `fuzz TARGET`
//! (`fuzz/fuzz_targets/TARGET.rs`).

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The backticked spans of `text`.
fn code_spans(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// Whether `source` defines a function `name` marked `#[test]` (among the attributes and
/// comments right above it; proptest's `#[test]` inside `proptest!` counts too).
fn defines_test(source: &str, name: &str) -> bool {
    let needle = format!("fn {name}(");
    source.match_indices(&needle).any(|(at, _)| {
        // The lines above the definition's own line.
        let above = &source[..source[..at].rfind('\n').unwrap_or(0)];
        above
            .lines()
            .rev()
            .map(str::trim)
            .take_while(|l| l.starts_with("#[") || l.starts_with("//"))
            .any(|l| l.starts_with("#[test]"))
    })
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Checks one named test; returns what is wrong, if anything.
fn check(name: &str) -> Result<(), String> {
    let root = root();
    let parts: Vec<&str> = name.split("::").collect();
    match parts[..] {
        [module, "tests", test] => {
            let candidates = [
                root.join("src").join(format!("{module}.rs")),
                root.join("src").join(module).join("tests.rs"),
            ];
            if candidates
                .iter()
                .filter_map(|p| read(p))
                .any(|s| defines_test(&s, test))
            {
                Ok(())
            } else {
                Err(format!(
                    "{name}: no unit test `{test}` in src/{module}.rs or src/{module}/tests.rs"
                ))
            }
        }
        [file, test] => {
            let path = root.join("tests").join(format!("{file}.rs"));
            let source = read(&path).ok_or_else(|| format!("{name}: no tests/{file}.rs"))?;
            if defines_test(&source, test) {
                Ok(())
            } else {
                Err(format!("{name}: no test `{test}` in tests/{file}.rs"))
            }
        }
        _ => Err(format!("{name}: not FILE::TEST or MODULE::tests::TEST")),
    }
}

/// Whether a code span looks like a test name (`snake::snake` or `snake::tests::snake`).
fn is_test_name(span: &str) -> bool {
    let parts: Vec<&str> = span.split("::").collect();
    (2..=3).contains(&parts.len())
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
        && (parts.len() == 2 || parts[1] == "tests")
}

#[test]
fn every_test_the_protocol_checklist_names_exists() {
    let text = read(&root().join("PROTOCOL.md")).expect("PROTOCOL.md at the repository root");
    let mut named = 0;
    let mut fuzz = 0;
    let mut wrong = Vec::new();
    for span in code_spans(&text) {
        let target = span
            .strip_prefix("fuzz ")
            .filter(|t| t.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        if let Some(target) = target {
            fuzz += 1;
            if !root()
                .join("fuzz/fuzz_targets")
                .join(format!("{target}.rs"))
                .is_file()
            {
                wrong.push(format!("fuzz {target}: no fuzz/fuzz_targets/{target}.rs"));
            }
        } else if is_test_name(span) {
            named += 1;
            if let Err(e) = check(span) {
                wrong.push(e);
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "PROTOCOL.md names tests that do not exist:\n{}",
        wrong.join("\n")
    );
    // Every section cites tests: a checklist that lost them all would pass the loop above.
    assert!(named >= 150, "only {named} tests named in PROTOCOL.md");
    assert!(fuzz >= 5, "only {fuzz} fuzz targets named in PROTOCOL.md");
}

#[test]
fn every_test_security_md_names_exists() {
    let text = read(&root().join("SECURITY.md")).expect("SECURITY.md");
    let tests_dir = root().join("tests");
    let mut named = 0;
    let mut wrong = Vec::new();
    for span in code_spans(&text) {
        // Only names whose first part is a test file (SECURITY.md also shows Rust paths).
        let first = span.split("::").next().unwrap_or("");
        if is_test_name(span) && tests_dir.join(format!("{first}.rs")).is_file() {
            named += 1;
            if let Err(e) = check(span) {
                wrong.push(e);
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "SECURITY.md names tests that do not exist:\n{}",
        wrong.join("\n")
    );
    assert!(named >= 50, "only {named} tests named in SECURITY.md");
}

#[test]
fn the_checker_tells_a_missing_test() {
    assert!(check("codec::encode_every_packet_type").is_ok());
    assert!(check("codec::no_such_test_anywhere").is_err());
    assert!(check("no_such_file::encode_every_packet_type").is_err());
    assert!(check("netascii::tests::encode_lf_cr_crlf").is_ok());
    assert!(check("netascii::tests::not_a_test").is_err());
    assert!(is_test_name("engine_scenarios::mail_mode_refused"));
    assert!(!is_test_name("tftp_proto::adapter::Server"));
}
