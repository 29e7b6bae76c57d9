//! Every environment variable `hcp serve --help` names is documented in docs/configuration.md.

use std::path::Path;
use std::process::Command;

/// Returns the environment variable names in `text`: words of capitals, digits and `_` that
/// start with one of HCP's prefixes.
fn variables(text: &str) -> Vec<String> {
    const PREFIXES: &[&str] = &["HCP_", "OIDC_", "INVENTORY_", "WINRM_", "SCRIPT_", "ISO_"];
    let mut names: Vec<String> = text
        .split(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .filter(|w| {
            PREFIXES
                .iter()
                .any(|p| w.starts_with(p) && w.len() > p.len())
        })
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn every_variable_serve_help_lists_is_in_the_configuration_docs() {
    let out = Command::new(env!("CARGO_BIN_EXE_hcp"))
        .args(["serve", "--help"])
        .env_remove("HCP_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let help = String::from_utf8(out.stdout).unwrap();
    let listed = variables(&help);
    // The list is long; a parse that finds few names means the help changed shape.
    assert!(listed.len() >= 25, "only {listed:?} found in:\n{help}");
    let docs_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
    let docs = std::fs::read_to_string(&docs_path).unwrap();
    let missing: Vec<&String> = listed
        .iter()
        .filter(|name| !docs.contains(&format!("`{name}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "hcp serve --help lists variables that docs/configuration.md does not document: {missing:?}"
    );
}

#[test]
fn the_scanner_finds_names_and_skips_prose() {
    assert_eq!(
        variables("HCP_LISTEN the address; OIDC_ROLE_NAME), HCP_ and HCPX_Y [env: HCP_URL=]"),
        ["HCP_LISTEN", "HCP_URL", "OIDC_ROLE_NAME"]
    );
}
