//! The README's quick start is `examples/quick_start.rs`, which cargo builds with the tests:
//! the README quotes it verbatim (from its first `use` on), and the versions it names are the
//! ones Cargo.toml pins.

use std::path::Path;

/// A file of this repository.
fn read(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The text between `<!-- {marker} -->` and `<!-- /{marker} -->`, without its code fence.
fn quoted<'a>(readme: &'a str, marker: &str) -> &'a str {
    let open = format!("<!-- {marker} -->\n");
    let close = format!("<!-- /{marker} -->");
    let start = readme
        .find(&open)
        .unwrap_or_else(|| panic!("README.md has no `{open}`"))
        + open.len();
    let end = start
        + readme[start..]
            .find(&close)
            .unwrap_or_else(|| panic!("README.md has no `{close}`"));
    let block = &readme[start..end];
    let body = block
        .split_once('\n')
        .filter(|(fence, _)| fence.starts_with("```"))
        .unwrap_or_else(|| panic!("`{marker}` is not a fenced block: {block:?}"))
        .1;
    body.strip_suffix("```\n")
        .unwrap_or_else(|| panic!("`{marker}` does not end with a fence: {body:?}"))
}

#[test]
fn the_quick_start_is_the_example_verbatim() {
    let example = read("examples/quick_start.rs");
    let code = &example[example.find("use ").expect("the example has a `use`")..];
    let readme = read("README.md");
    assert_eq!(
        quoted(&readme, "quick-start"),
        code,
        "README.md's quick start differs from examples/quick_start.rs"
    );
}

#[test]
fn the_dependency_lines_name_the_pinned_versions() {
    let manifest = read("Cargo.toml");
    let readme = read("README.md");
    let dependencies = quoted(&readme, "dependencies");
    for crate_name in ["rocketmq-client-rust", "rocketmq-model"] {
        let pin = manifest
            .lines()
            .find(|l| l.starts_with(&format!("{crate_name} = ")))
            .unwrap_or_else(|| panic!("Cargo.toml pins no {crate_name}"));
        assert!(
            dependencies.lines().any(|l| l == pin),
            "README.md's dependency lines lack `{pin}`:\n{dependencies}"
        );
    }
    let msrv = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .expect("Cargo.toml has a rust-version")
        .trim_matches('"');
    assert!(
        readme.contains(&format!("Rust {msrv} or later")),
        "README.md does not state the MSRV {msrv}"
    );
}
