//! Every shipped PowerShell script (and both rendered forms of the wrapper) parses without
//! syntax errors with tree-sitter-powershell.

use std::path::PathBuf;

use hcp_provider_hyperv::scripts::{
    DEPLOY, EMBEDDED, WRAPPER, wrapper_for_deploy, wrapper_for_path,
};

fn first_error(source: &str) -> Option<String> {
    let mut parser = tree_sitter::Parser::new();
    parser
        .set_language(&tree_sitter_powershell::LANGUAGE.into())
        .expect("the PowerShell grammar loads");
    let tree = parser
        .parse(source, None)
        .expect("the parser returns a tree");
    let root = tree.root_node();
    if !root.has_error() {
        return None;
    }
    let mut stack = vec![root];
    while let Some(node) = stack.pop() {
        if node.is_error() || node.is_missing() {
            let p = node.start_position();
            let line = source.lines().nth(p.row).unwrap_or("");
            return Some(format!("line {}: {}: {line}", p.row + 1, node.kind()));
        }
        let mut cursor = node.walk();
        let children: Vec<_> = node.children(&mut cursor).collect();
        stack.extend(children.into_iter().rev());
    }
    Some("an error node somewhere".into())
}

#[test]
fn every_shipped_script_parses() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts");
    let mut seen = 0;
    for sub in [dir.clone(), dir.join("deploy")] {
        for entry in std::fs::read_dir(&sub).unwrap() {
            let path = entry.unwrap().path();
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            if ext != "ps1" && ext != "psm1" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            if let Some(e) = first_error(&text) {
                panic!("{} does not parse: {e}", path.display());
            }
            seen += 1;
        }
    }
    assert_eq!(
        seen,
        EMBEDDED.len() + DEPLOY.len() + 1,
        "scripts, deploy steps and the wrapper"
    );
}

#[test]
fn every_shipped_hook_example_parses() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("hooks/examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("ps1") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        if let Some(e) = first_error(&text) {
            panic!("{} does not parse: {e}", path.display());
        }
        seen += 1;
    }
    assert!(
        seen >= 2,
        "the README's examples are shipped ({seen} found)"
    );
}

#[test]
fn rendered_wrappers_parse() {
    for text in [
        WRAPPER.to_string(),
        wrapper_for_path(r"C:\ProgramData\HCP\scripts\0123456789abcdef\New-HcpVm.ps1"),
    ]
    .into_iter()
    .chain(DEPLOY.iter().map(|(_, body)| wrapper_for_deploy(body)))
    {
        if let Some(e) = first_error(&text) {
            panic!("a rendered wrapper does not parse: {e}");
        }
    }
}

#[test]
fn the_checker_finds_syntax_errors() {
    assert!(first_error("if ($x) { Get-VM").is_some());
    assert!(first_error("$a = @{ b = 1").is_some());
    assert!(first_error("Get-VM -Name 'x' | Select-Object -First 1").is_none());
}

#[test]
fn the_checkpoint_scripts_are_embedded_and_parse() {
    for name in [
        "New-HcpCheckpoint.ps1",
        "Get-HcpCheckpoint.ps1",
        "Restore-HcpCheckpoint.ps1",
        "Remove-HcpCheckpoint.ps1",
    ] {
        let (_, text) = EMBEDDED
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("{name} is embedded"));
        if let Some(e) = first_error(text) {
            panic!("{name} does not parse: {e}");
        }
        // Parameters are data: the checkpoint's name is a validated parameter, never text.
        assert!(
            text.contains(
                "[ValidatePattern('^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$')][string]$CheckpointName"
            ) || name == "Get-HcpCheckpoint.ps1",
            "{name} validates CheckpointName"
        );
        assert!(!text.contains("Invoke-Expression"), "{name}");
    }
}
