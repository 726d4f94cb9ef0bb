//! `keygate.toml`: every setting a flag with an environment variable has, in one file, so that
//! a service unit needs no long command line (`keygate --config /etc/keygate/keygate.toml
//! serve`).
//!
//! A setting is named after its flag without the dashes (`listen`, `tls-cert`, `access-log`,
//! `function-user`, ...), at the top level of the file. Precedence: a flag on the command line,
//! then its environment variable, then the file, then keygate's default. The file's values
//! become the defaults of the flags with that environment variable, in every command, and are
//! parsed by the same parsers as the flags. Fail closed: an unknown or misspelt setting, or a
//! value that is not a string, a number or a boolean, is an error at `file:line:column`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Command;

/// One setting from the file.
#[derive(Debug, Clone)]
pub(crate) struct Setting {
    /// `tls-cert`
    pub(crate) key: String,
    pub(crate) value: String,
    /// The environment variable it stands for: `KEYGATE_TLS_CERT`.
    pub(crate) env: String,
}

/// What every command accepts from the file: setting name → (environment variable, help).
pub(crate) fn known(cmd: &Command) -> BTreeMap<String, (String, String)> {
    let mut known = BTreeMap::new();
    collect(cmd, &mut known);
    known
}

fn collect(cmd: &Command, known: &mut BTreeMap<String, (String, String)>) {
    for arg in cmd.get_arguments() {
        let Some(env) = arg.get_env().and_then(|e| e.to_str()) else { continue };
        // The file cannot name another file.
        let Some(key) = env.strip_prefix("KEYGATE_").filter(|k| *k != "CONFIG") else { continue };
        let key = key.to_ascii_lowercase().replace('_', "-");
        let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
        known.entry(key).or_insert_with(|| (env.to_owned(), help));
    }
    for sub in cmd.get_subcommands() {
        collect(sub, known);
    }
}

/// Reads and checks `path` against the settings `cmd` accepts.
///
/// # Errors
/// A message naming `path:line:column` and what to do: the file cannot be read, is not TOML, or
/// holds an unknown setting or a value of the wrong kind.
pub(crate) fn load(path: &Path, cmd: &Command) -> Result<Vec<Setting>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the configuration file {}: {e}", path.display()))?;
    let at = |offset: usize| {
        let before = &text[..offset.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!("{}:{line}:{column}", path.display())
    };
    let doc = toml_edit::Document::parse(text.as_str()).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        format!("{}: not valid TOML: {}", at(offset), e.message())
    })?;
    let known = known(cmd);
    let table = doc.as_table();
    let mut settings = Vec::new();
    let mut errors = Vec::new();
    for (name, item) in table.iter() {
        let offset = table.get_key_value(name).and_then(|(k, _)| k.span()).map_or(0, |s| s.start);
        if !item.is_value() {
            errors.push(format!(
                "{}: `{name}` must be a string, a number or true/false (settings are flat: no \
                 tables or arrays)",
                at(offset)
            ));
            continue;
        }
        let Some((env, _)) = known.get(name) else {
            let close = known
                .keys()
                .map(|k| (strsim::jaro_winkler(k, name), k))
                .filter(|(score, _)| *score > 0.85)
                .max_by(|a, b| a.0.total_cmp(&b.0));
            let hint = match close {
                Some((_, k)) => format!("did you mean `{k}`?"),
                None => "settings are the flags of keygate's commands without the dashes; \
                         `keygate config settings` lists them"
                    .to_owned(),
            };
            errors.push(format!("{}: unknown setting `{name}`; {hint}", at(offset)));
            continue;
        };
        let value = match item.as_value() {
            Some(toml_edit::Value::String(s)) => s.value().clone(),
            Some(toml_edit::Value::Integer(i)) => i.value().to_string(),
            Some(toml_edit::Value::Boolean(b)) => b.value().to_string(),
            Some(toml_edit::Value::Float(f)) => f.value().to_string(),
            _ => {
                let offset = item.span().map_or(offset, |s| s.start);
                errors.push(format!(
                    "{}: `{name}` must be a string, a number or true/false (settings are flat: \
                     no tables or arrays)",
                    at(offset)
                ));
                continue;
            }
        };
        settings.push(Setting { key: name.to_owned(), value, env: env.clone() });
    }
    if errors.is_empty() { Ok(settings) } else { Err(errors.join("\n")) }
}

/// `cmd` with the file's values as the defaults of the flags they stand for, in every command.
pub(crate) fn apply(cmd: Command, settings: &[Setting]) -> Command {
    if settings.is_empty() {
        return cmd;
    }
    let mut cmd = cmd;
    let ids: Vec<(String, String)> = cmd
        .get_arguments()
        .filter_map(|a| {
            let env = a.get_env()?.to_str()?;
            let s = settings.iter().find(|s| s.env == env)?;
            Some((a.get_id().to_string(), s.value.clone()))
        })
        .collect();
    for (id, value) in ids {
        cmd = cmd.mut_arg(id, |a| a.default_value(value));
    }
    let subs: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().to_owned()).collect();
    for name in subs {
        cmd = cmd.mut_subcommand(name, |sub| apply(sub, settings));
    }
    cmd
}

/// The configuration file the command line or `KEYGATE_CONFIG` names, read before the command
/// line is parsed (the file's values become its defaults).
pub(crate) fn path_from(args: &[std::ffi::OsString]) -> Option<PathBuf> {
    let mut it = args.iter().skip(1);
    while let Some(arg) = it.next() {
        if arg == "--" {
            break;
        }
        if arg == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(path) = arg.to_str().and_then(|a| a.strip_prefix("--config=")) {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os("KEYGATE_CONFIG").filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// `keygate config check`: the file's settings, each value run through its flag's parser (as
/// `keygate serve` would read them), and the TLS certificate and key loaded when set.
///
/// # Errors
/// Every problem found, one a line.
pub(crate) fn check(path: &Path, cmd: &Command) -> Result<String, String> {
    let settings = load(path, cmd)?;
    let applied = apply(cmd.clone(), &settings);
    // Run as `serve` would be, without the environment deciding instead of the file.
    let matches = applied
        .try_get_matches_from(["keygate", "serve"])
        .map_err(|e| format!("{}: {}", path.display(), e.to_string().trim_end()))?;
    let serve = matches.subcommand_matches("serve");
    let file = |id: &str| serve.and_then(|m| m.get_one::<PathBuf>(id)).cloned();
    if let (Some(cert), Some(key)) = (file("tls_cert"), file("tls_key")) {
        keygate_http::Tls::load(&cert, &key).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let names: Vec<&str> = settings.iter().map(|s| s.key.as_str()).collect();
    Ok(format!(
        "{}: ok ({} setting{}{}{})",
        path.display(),
        names.len(),
        if names.len() == 1 { "" } else { "s" },
        if names.is_empty() { "" } else { ": " },
        names.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_found_in_either_flag_form_before_the_command_line_is_parsed() {
        let args = |a: &[&str]| a.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        let found = |a: &[&str]| path_from(&args(a));
        assert_eq!(found(&["keygate", "--config", "a.toml", "serve"]), Some("a.toml".into()));
        assert_eq!(found(&["keygate", "serve", "--config=b.toml"]), Some("b.toml".into()));
        // After `--`, arguments are not keygate's.
        let after = found(&["keygate", "invoke", "--", "--config", "c.toml"]);
        assert_ne!(after, Some("c.toml".into()));
    }
}
