// SPDX-License-Identifier: GPL-2.0

//! Keeps Documentation/uapi.md and the examples in step with the code: the C example must
//! compile against shadowvm.h, both examples must appear verbatim in the document, and every
//! name the header defines must be documented.

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn doc() -> String {
    std::fs::read_to_string(root().join("../../Documentation/uapi.md"))
        .expect("read Documentation/uapi.md")
}

#[test]
fn c_example_compiles() {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("minimal-c");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let status = Command::new(&cc)
        .args(["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&out)
        .arg("-I")
        .arg(root())
        .arg(root().join("examples/minimal.c"))
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler `{cc}` (set CC): {e}"));
    assert!(status.success(), "examples/minimal.c failed to compile");
}

#[test]
fn examples_are_in_the_document() {
    let doc = doc();
    for ex in ["examples/minimal.c", "examples/minimal.rs"] {
        let text = std::fs::read_to_string(root().join(ex)).expect("read example");
        assert!(
            doc.contains(text.trim_end()),
            "Documentation/uapi.md must contain {ex} verbatim"
        );
    }
}

#[test]
fn every_header_name_is_documented() {
    let doc = doc();
    let header = std::fs::read_to_string(root().join("shadowvm.h")).expect("read header");
    let mut missing = Vec::new();
    for line in header.lines() {
        let name = line
            .strip_prefix("#define ")
            .and_then(|r| r.split_whitespace().next())
            .or_else(|| {
                line.strip_prefix("struct ")
                    .and_then(|r| r.split_whitespace().next())
            });
        if let Some(name) = name {
            if (name.starts_with("SHADOWVM_") || name.starts_with("shadowvm_"))
                && !doc.contains(name)
            {
                missing.push(name.to_string());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not in Documentation/uapi.md: {missing:?}"
    );
}
