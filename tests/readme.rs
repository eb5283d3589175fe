//! The README is part of the product: every subcommand is in it, and every command line its
//! examples show uses flags that subcommand really has (a renamed flag fails here, not in a
//! user's terminal).

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{edgekd, stdout};

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap()
}

/// The subcommands a `--help` lists under `Commands:` (`help` and hidden ones excluded).
fn subcommands(args: &[&str]) -> Vec<String> {
    let mut a = args.to_vec();
    a.push("--help");
    let help = stdout(edgekd().args(&a));
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(String::from)
        .collect()
}

/// Every `edgekd ...` (or `cargo run --release -- ...`) command line in the README's shell
/// code blocks (```sh; transcripts in ```text blocks are output, not commands), continuation
/// lines joined.
fn example_commands(readme: &str) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in readme.lines() {
        if let Some(info) = line.trim_start().strip_prefix("```") {
            in_block = !in_block && matches!(info.trim(), "sh" | "bash" | "shell");
            pending.clear();
            continue;
        }
        if !in_block {
            continue;
        }
        let line = line.split(" #").next().unwrap_or(line).trim_end();
        pending.push_str(line.trim_end_matches('\\'));
        pending.push(' ');
        if line.ends_with('\\') {
            continue;
        }
        let full = std::mem::take(&mut pending);
        // Several commands on one line (`a && b`, `a | b`) are several commands.
        for part in full.split("&&").flat_map(|p| p.split('|')) {
            let words: Vec<&str> = part.split_whitespace().collect();
            let start = match words.as_slice() {
                ["edgekd", ..] => Some(1),
                // `cargo run --release -- demo`, not another package's example.
                ["cargo", "run", ..] if !words.contains(&"-p") && !words.contains(&"--example") => {
                    words.iter().position(|w| *w == "--").map(|i| i + 1)
                }
                _ => None,
            };
            if let Some(start) = start.filter(|&s| s < words.len()) {
                commands.push(words[start..].iter().map(|w| w.to_string()).collect());
            }
        }
    }
    commands
}

#[test]
fn every_subcommand_is_in_the_readme() {
    let readme = readme();
    let mut missing = Vec::new();
    for sub in subcommands(&[]) {
        if !readme.contains(&format!("`{sub}")) {
            missing.push(sub.clone());
        }
        if sub == "data" {
            for inner in subcommands(&["data"]) {
                if !readme.contains(&format!("data {inner}"))
                    && !readme.contains(&format!("/ {inner}"))
                {
                    missing.push(format!("data {inner}"));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "README.md never names these subcommands: {missing:?}"
    );
}

#[test]
fn every_flag_in_the_readme_examples_exists() {
    let readme = readme();
    let commands = example_commands(&readme);
    assert!(
        commands.len() >= 10,
        "found only {} example commands",
        commands.len()
    );
    let top: BTreeSet<String> = subcommands(&[]).into_iter().collect();
    let data: BTreeSet<String> = subcommands(&["data"]).into_iter().collect();
    let mut wrong = Vec::new();
    for words in &commands {
        let Some(first) = words.first() else { continue };
        if !top.contains(first) {
            wrong.push(format!(
                "`edgekd {}`: no subcommand `{first}`",
                words.join(" ")
            ));
            continue;
        }
        let mut path = vec![first.as_str()];
        if first == "data" {
            match words.get(1) {
                Some(s) if data.contains(s) => path.push(s),
                other => {
                    wrong.push(format!("`edgekd data {other:?}`: no such data subcommand"));
                    continue;
                }
            }
        }
        let mut args = path.clone();
        args.push("--help");
        let help = stdout(edgekd().args(&args));
        for w in &words[path.len()..] {
            let flag = w.split('=').next().unwrap_or(w);
            let is_flag = flag.starts_with('-')
                && flag.len() > 1
                && !flag[1..].starts_with(|c: char| c.is_ascii_digit() || c == '.');
            if !is_flag {
                continue;
            }
            let known = if flag.starts_with("--") {
                help.contains(&format!("{flag} "))
                    || help.contains(&format!("{flag}\n"))
                    || help.contains(&format!("{flag}="))
                    || help.contains(&format!("{flag} <"))
            } else {
                help.contains(&format!("{flag},"))
            };
            if !known {
                wrong.push(format!(
                    "`edgekd {}`: {flag} is not a flag of `{}`",
                    words.join(" "),
                    path.join(" ")
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
