//! `ovl2 completions` and `ovl2 man`: generated from the clap definitions, covering every
//! command `ovl2 --help` lists, and never touching a store.

use std::process::Command;

mod common;
use common::*;

/// The command names `ovl2 --help` lists (its "Commands:" section).
fn commands(h: &Home) -> Vec<String> {
    let help = h.ok(&["--help"]);
    let section = help.split("Commands:\n").nth(1).expect("a Commands: section in --help");
    let names: Vec<String> = section
        .lines()
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != "help")
        .map(str::to_owned)
        .collect();
    for expected in ["create", "rm", "apply", "diff", "mount", "container", "completions", "man"] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from --help's commands {names:?}");
    }
    names
}

/// Whether `shell` is installed, to also have it parse the script.
fn have(shell: &str) -> bool {
    Command::new(shell).arg("-c").arg("true").output().is_ok_and(|o| o.status.success())
}

#[test]
fn completions_for_bash_zsh_fish_name_every_command() {
    let h = Home::new("completions");
    let commands = commands(&h);
    for shell in ["bash", "zsh", "fish"] {
        let script = h.ok(&["completions", shell]);
        assert!(script.len() > 1000, "{shell}: {} bytes", script.len());
        for c in &commands {
            assert!(script.contains(c.as_str()), "{shell} completion lacks the command {c}");
        }
        // Global options and the values of an enum argument are completed too.
        assert!(script.contains("max-depth"), "{shell}: no --max-depth");
        if have(shell) {
            let file = h.scratch().join(format!("ovl2.{shell}"));
            std::fs::write(&file, &script).unwrap();
            let o = Command::new(shell).arg("-n").arg(&file).output().unwrap();
            assert!(o.status.success(), "{shell} -n: {}", String::from_utf8_lossy(&o.stderr));
        }
    }
    assert!(h.ok(&["completions", "bash"]).contains("complete -F"));
    // Generating never opens, let alone creates, a store.
    assert!(!h.home().exists());
    let err = String::from_utf8(h.run(&["completions", "tcsh"]).stderr).unwrap();
    assert!(err.contains("tcsh") && err.contains("bash"), "{err}");
}

#[test]
fn man_page_documents_every_command() {
    let h = Home::new("man");
    let commands = commands(&h);
    let page = h.ok(&["man"]);
    assert!(page.starts_with(".ie") || page.contains(".TH ovl2 1"), "not roff: {}", &page[..page.len().min(200)]);
    assert!(page.contains(".TH ovl2 1"), "no title header");
    assert!(page.contains(".SH SUBCOMMANDS"), "no subcommands section");
    for c in &commands {
        assert!(page.contains(&format!("ovl2\\-{}", c.replace('-', "\\-"))), "man page lacks {c}");
    }
    // One page per command, for installing into share/man/man1.
    let dir = h.scratch().join("man1");
    h.ok(&["man", "--out-dir", dir.to_str().unwrap()]);
    for c in
        commands.iter().map(|c| format!("ovl2-{c}.1")).chain(["ovl2.1".to_owned(), "ovl2-container-create.1".into()])
    {
        let p = dir.join(&c);
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(text.contains(".TH "), "{c} is not a man page");
    }
    assert!(std::fs::read_to_string(dir.join("ovl2-apply.1")).unwrap().contains("expect\\-digest"));
    assert!(!h.home().exists());
    // man(1) renders it (when installed), without warnings.
    if Command::new("man").arg("--version").output().is_ok_and(|o| o.status.success()) {
        let o = Command::new("man")
            .arg("-l")
            .arg(dir.join("ovl2.1"))
            .env("MANWIDTH", "100")
            .env("MAN_KEEP_FORMATTING", "")
            .env("MANPAGER", "cat")
            .env("PAGER", "cat")
            .output()
            .unwrap();
        assert!(o.status.success(), "man -l: {}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stdout).contains("completions"));
    }
}

#[test]
fn a_failed_write_is_an_error_not_a_panic() {
    let h = Home::new("gen-full");
    for args in [&["completions", "bash"][..], &["man"]] {
        // Every write to /dev/full fails with ENOSPC, as a closed pipe or a full disk would.
        let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        let o = h.cmd().args(args).stdout(full).output().unwrap();
        let err = String::from_utf8(o.stderr).unwrap();
        assert!(!o.status.success(), "{args:?}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(err.starts_with("ovl2: ") && err.contains("No space left"), "{args:?}: {err}");
    }
}

/// Issue 14: the README's synopsis is exactly `ovl2 --help`, so neither drifts from the other.
#[test]
fn readme_synopsis_is_ovl2_help() {
    let h = Home::new("readme");
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let section = readme.split("## The command line\n").nth(1).expect("a \"The command line\" section");
    let block = section.split("```\n").nth(1).expect("a code block in it");
    let help = h.ok(&["--help"]);
    assert_eq!(block, help, "README.md's synopsis differs from `ovl2 --help`; paste the new help in");
}
