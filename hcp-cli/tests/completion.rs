//! Shell completions and the manual page: `hcp completion bash` loads into a real bash and
//! completes subcommands and flags; zsh's script is generated; `hcp man` renders roff, and
//! `--dir` writes one page per command.

use std::process::Command;

fn hcp() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hcp"))
}

fn stdout_of(args: &[&str]) -> String {
    let out = hcp().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "hcp {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Sources the bash completion and completes the words `line` (the last one may be partial);
/// returns the candidates.
fn complete_in_bash(script: &std::path::Path, words: &[&str]) -> Vec<String> {
    let words_list = words
        .iter()
        .map(|w| format!("'{w}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let program = format!(
        "source '{}' || exit 3\n\
         complete -p hcp >/dev/null || exit 4\n\
         COMP_WORDS=({words_list})\n\
         COMP_CWORD={}\n\
         COMP_LINE=\"${{COMP_WORDS[*]}}\"\n\
         COMP_POINT=${{#COMP_LINE}}\n\
         _hcp hcp \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script.display(),
        words.len() - 1
    );
    let out = Command::new("bash")
        .arg("--norc")
        .arg("--noprofile")
        .arg("-c")
        .arg(program)
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "bash: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completion_loads_and_completes_commands_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("hcp.bash");
    std::fs::write(&script, stdout_of(&["completion", "bash"])).unwrap();
    let top = complete_in_bash(&script, &["hcp", ""]);
    for c in ["vm", "job", "host", "catalog", "serve", "completion", "man"] {
        assert!(top.contains(&c.to_string()), "`{c}` missing from {top:?}");
    }
    let vm = complete_in_bash(&script, &["hcp", "vm", ""]);
    for c in ["create", "list", "show", "delete"] {
        assert!(vm.contains(&c.to_string()), "`{c}` missing from {vm:?}");
    }
    let flags = complete_in_bash(&script, &["hcp", "vm", "create", "--fl"]);
    assert_eq!(flags, vec!["--flavor".to_string()], "{flags:?}");
    let shells = complete_in_bash(&script, &["hcp", "completion", ""]);
    for c in ["bash", "zsh", "fish", "powershell"] {
        assert!(
            shells.contains(&c.to_string()),
            "`{c}` missing from {shells:?}"
        );
    }
}

#[test]
fn zsh_fish_and_powershell_scripts_are_generated() {
    let zsh = stdout_of(&["completion", "zsh"]);
    assert!(
        zsh.starts_with("#compdef hcp"),
        "{}",
        &zsh[..zsh.len().min(200)]
    );
    assert!(zsh.contains("'create:"), "zsh lists the vm subcommands");
    let fish = stdout_of(&["completion", "fish"]);
    assert!(
        fish.contains("complete -c hcp"),
        "{}",
        &fish[..fish.len().min(200)]
    );
    let ps = stdout_of(&["completion", "powershell"]);
    assert!(
        ps.contains("Register-ArgumentCompleter"),
        "{}",
        &ps[..ps.len().min(200)]
    );
    let out = hcp().args(["completion", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("possible values"), "{err}");
}

#[test]
fn man_page_renders_and_writes_one_page_per_command() {
    let page = stdout_of(&["man"]);
    assert!(
        page.starts_with(".ie \\n(.g .ds Aq"),
        "{}",
        &page[..page.len().min(200)]
    );
    assert!(page.contains(".TH hcp 1"), "a section-1 title");
    assert!(
        page.contains("Exit codes"),
        "the page carries the exit codes"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man1");
    stdout_of(&["man", "--dir", out.to_str().unwrap()]);
    for name in [
        "hcp.1",
        "hcp-vm.1",
        "hcp-vm-create.1",
        "hcp-serve.1",
        "hcp-job-watch.1",
    ] {
        let p = out.join(name);
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(text.contains(".TH"), "{name} is a roff page");
    }
    // man(1) itself reads it, where it is installed.
    if let Ok(o) = Command::new("man")
        .arg("-l")
        .arg(out.join("hcp-vm-create.1"))
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
        && o.status.success()
    {
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains("--flavor"), "{text}");
    }
}
