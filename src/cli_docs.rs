//! The command line described for other programs: shell completion scripts and the man
//! page, both made from the clap definitions in cli.rs, so that neither can drift from
//! the flags the binary takes.

use clap::{ArgAction, Command, CommandFactory};
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, roman};

use crate::cli::{Cli, Shell};

/// The completion script for `shell`, complete in memory: clap_complete panics on a
/// failed write, which a closed stdout would otherwise turn into a crash.
pub fn completions(shell: Shell) -> Vec<u8> {
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), NAME, &mut script);
    if shell == clap_complete::Shell::Bash {
        script = bash_states_spelled_one_way(&script);
    }
    script
}

const NAME: &str = "tcp-hello";

/// clap_complete's bash script, with the name of each subcommand's state spelled alike
/// where it is set and where it is matched. For a name with a hyphen it spells it two
/// ways (`tcp__hello__subcmd__serve`, `tcp__subcmd__hello__subcmd__serve`), so that no
/// subcommand's options would complete (clap-rs/clap#6421); once it spells it one way,
/// this changes nothing.
fn bash_states_spelled_one_way(script: &[u8]) -> Vec<u8> {
    let matched = format!("{}__subcmd__", NAME.replace('-', "__subcmd__"));
    let set = format!("{}__subcmd__", NAME.replace('-', "__"));
    String::from_utf8_lossy(script)
        .replace(&matched, &set)
        .into_bytes()
}

/// The man page, tcp-hello(1), in roff: the global options, then a section for each
/// subcommand with its usage line and every option (the text of `SUB --help`), so that
/// one page covers the whole command line.
pub fn man_page() -> std::io::Result<Vec<u8>> {
    let mut root = Cli::command().disable_help_subcommand(true);
    root.build();
    let man = Man::new(root.clone());
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    for sub in root.get_subcommands() {
        let sub = own_options_only(sub.clone());
        let mut heading = Roff::default();
        let title = format!("TCP-HELLO {}", sub.get_name().to_uppercase());
        heading.control("SH", [title.as_str()]);
        // clap's usage line (`tcp-hello client [OPTIONS] [NAME]...`), not the synopsis
        // clap_mangen would make, which would list every one of serve's flags twice.
        let usage = sub.clone().render_usage().to_string();
        let usage = usage.strip_prefix("Usage: ").unwrap_or(&usage);
        heading.text([bold(usage)]);
        if let Some(about) = sub.get_long_about().or_else(|| sub.get_about()) {
            heading.control("PP", []);
            heading.text([roman(about.to_string())]);
        }
        heading.to_writer(&mut page)?;
        let mut options = Vec::new();
        Man::new(sub).render_options_section(&mut options)?;
        page.extend_from_slice(&as_subsections(&options));
    }
    man.render_version_section(&mut page)?;
    Ok(page)
}

/// `sub` without the options every subcommand shares (-h, -V and the global -v, -q),
/// which the page describes once, at the top.
fn own_options_only(sub: Command) -> Command {
    let shared: Vec<_> = sub
        .get_arguments()
        .filter(|a| {
            a.is_global_set() || matches!(a.get_action(), ArgAction::Help | ArgAction::Version)
        })
        .map(|a| a.get_id().clone())
        .collect();
    shared
        .into_iter()
        .fold(sub, |sub, id| sub.mut_arg(id, |a| a.hide(true)))
}

/// Roff `sections` with each section heading (`.SH`) made a subsection heading (`.SS`),
/// to nest a subcommand's options under its own section. Only control
/// lines begin with `.SH`: roff escapes a text line's leading dot.
fn as_subsections(sections: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(sections);
    text.split_inclusive('\n')
        .map(|line| match line.strip_prefix(".SH ") {
            Some(rest) => format!(".SS {rest}"),
            None => line.to_string(),
        })
        .collect::<String>()
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bash_matches_each_subcommands_state_as_it_sets_it() {
        let script = String::from_utf8(completions(Shell::Bash)).unwrap();
        for sub in ["serve", "client", "bench", "cert", "completions", "man"] {
            let state = format!("tcp__hello__subcmd__{sub}");
            assert!(script.contains(&format!("cmd=\"{state}\"")), "{sub}");
            assert!(script.contains(&format!("\n        {state})\n")), "{sub}");
        }
        assert!(!script.contains("tcp__subcmd__hello"));
    }

    #[test]
    fn section_headings_become_subsection_headings_and_nothing_else_changes() {
        let roff = b".SH OPTIONS\n.TP\n\\&.SH is text\n.SH TLS\n";
        assert_eq!(
            String::from_utf8(as_subsections(roff)).unwrap(),
            ".SS OPTIONS\n.TP\n\\&.SH is text\n.SS TLS\n"
        );
    }

    #[test]
    fn a_subcommand_section_shows_its_own_options_not_the_shared_ones() {
        let page = String::from_utf8(man_page().unwrap()).unwrap();
        let serve = page
            .split(".SH \"TCP-HELLO SERVE\"")
            .nth(1)
            .expect("a section for serve");
        let serve = serve.split(".SH ").next().unwrap();
        assert!(serve.contains("max\\-line"), "{serve}");
        assert!(!serve.contains("\\-\\-verbose"), "{serve}");
        assert!(!serve.contains("\\-\\-help"), "{serve}");
        // The shared ones are described once, before the subcommands.
        let top = page.split(".SH \"TCP-HELLO SERVE\"").next().unwrap();
        assert!(top.contains("\\-\\-verbose"), "{top}");
    }
}
