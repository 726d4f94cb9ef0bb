//! The README's transcripts, reproduced: every ```` ```console ```` block is run command by
//! command (`$ ` lines; a line ending in `\` continues on the next) and its output compared with
//! what the README shows, so the README cannot drift from what keygate does.
//!
//! How the run differs from a reader's terminal, and why:
//! - `keygate` is the binary under test (its directory leads `PATH`); the data directory, the
//!   candidates database and `HOME` are temporary; commands run in the repository root.
//! - `keygate up` and `keygate serve` run in the background on free ports (`KEYGATE_LISTEN`,
//!   `KEYGATE_ADMIN_LISTEN`); the README's `127.0.0.1:4000` and `:4001` stand for the ports they
//!   print, in later commands and outputs alike (and `KEYGATE_URL` points `deploy` there).
//! - Generated values are matched by their shape, not their text: API key values and secrets (40
//!   letters and digits), admin tokens, ids (10 or 6 lowercase letters and digits, at least one of each), access
//!   key ids, UUIDs, dates. The first time the README shows one, the value printed in its place is
//!   remembered: later commands get the real value (the key the README's curl sends is the one
//!   `up` printed), and later outputs must show the same one (a key prefix `kgk1F8Wp…` is the
//!   prefix of the value it came from).
//! - A line `...` stands for any number of lines. Log lines (`<date> INFO ...`) are not
//!   compared: the README leaves them out. stderr is compared with stdout, in the order written.
//! - Every command must exit with status 0.
//!
//! A command whose program is missing (`aws`) skips the rest of its block with a message, unless
//! `CI=true`, where it fails.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use regex::Regex;

use crate::support::{bin_dir, workspace_bin};

/// One `$ ` command of a console block, with the output the README shows for it.
#[derive(Debug)]
struct Step {
    /// README line of the command (1-based), for failure messages.
    line: usize,
    command: String,
    expected: Vec<String>,
}

/// The console blocks of `text`, each a list of steps.
fn console_blocks(text: &str) -> Vec<Vec<Step>> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<Step>> = None;
    let mut continued = false;
    for (i, line) in text.lines().enumerate() {
        let Some(steps) = current.as_mut() else {
            if line.trim_end() == "```console" {
                current = Some(Vec::new());
            }
            continue;
        };
        if line.trim_end() == "```" {
            blocks.push(current.take().unwrap_or_default());
            continued = false;
            continue;
        }
        if continued && let Some(step) = steps.last_mut() {
            let part = line.trim();
            continued = part.ends_with('\\');
            step.command.push(' ');
            step.command.push_str(part.trim_end_matches('\\').trim_end());
        } else if let Some(cmd) = line.strip_prefix("$ ") {
            continued = cmd.ends_with('\\');
            steps.push(Step {
                line: i + 1,
                command: cmd.trim_end_matches('\\').trim_end().to_owned(),
                expected: Vec::new(),
            });
        } else if let Some(step) = steps.last_mut() {
            step.expected.push(line.trim_end().to_owned());
        }
    }
    blocks
}

/// The shapes of generated values, most specific first; each README token matching one stands
/// for whatever value of that shape is printed in its place.
fn token_kinds() -> Vec<(Regex, &'static str)> {
    let kinds = [
        // Addresses of the servers the README starts.
        (r"127\.0\.0\.1:400[01]", r"127\.0\.0\.1:[0-9]{1,5}"),
        (
            r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        ),
        (
            r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} [A-Z][a-z]{2} [0-9]{4} [0-9:]{8} GMT",
            r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} [A-Z][a-z]{2} [0-9]{4} [0-9:]{8} GMT",
        ),
        (
            r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}(?:\.[0-9]+)?Z",
            r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}(?:\.[0-9]+)?Z",
        ),
        (r"\bAK[A-Z0-9]{18}\b", r"AK[A-Z0-9]{18}"),
        // Admin tokens (`kgt_` and 40 letters and digits).
        (r"\bkgt_[A-Za-z0-9]{40}\b", r"kgt_[A-Za-z0-9]{40}"),
        (r"\b[A-Za-z0-9]{40}\b", r"[A-Za-z0-9]{40}"),
        // Display prefixes: a self-checking value's marker and 4 characters, else 4 characters.
        (r"\bkgk1[A-Za-z0-9]{4}…", r"kgk1[A-Za-z0-9]{4}…"),
        (r"\b[A-Za-z0-9]{4}…", r"[A-Za-z0-9]{4}…"),
        (r"\b[a-z0-9]{10}\b", r"[a-z0-9]{10}"),
        (r"\b[a-z0-9]{6}\b", r"[a-z0-9]{6}"),
    ];
    kinds.iter().map(|(find, shape)| (Regex::new(find).unwrap(), *shape)).collect()
}

/// Whether a README token of a 10- or 6-character id shape really is an id: random ids mix
/// letters and digits (the README's do), words do not.
fn looks_generated(token: &str) -> bool {
    let id_like = token.len() == 10 || token.len() == 6;
    !id_like
        || !token.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        || (token.bytes().any(|b| b.is_ascii_digit())
            && token.bytes().any(|b| b.is_ascii_lowercase()))
}

/// The generated-value tokens of a README line, in order, without overlaps.
fn tokens(line: &str, kinds: &[(Regex, &'static str)]) -> Vec<(usize, usize, &'static str)> {
    let mut found: Vec<(usize, usize, &'static str)> = Vec::new();
    for (find, shape) in kinds {
        for m in find.find_iter(line) {
            let overlaps = found.iter().any(|&(s, e, _)| m.start() < e && s < m.end());
            if !overlaps && looks_generated(m.as_str()) {
                found.push((m.start(), m.end(), shape));
            }
        }
    }
    found.sort_unstable();
    found
}

/// README token -> the real value printed in its place.
type Bindings = HashMap<String, String>;

/// A command of the README with the real values of the tokens seen so far.
fn substitute(command: &str, kinds: &[(Regex, &'static str)], bound: &Bindings) -> String {
    let mut out = String::new();
    let mut at = 0;
    for (s, e, _) in tokens(command, kinds) {
        out.push_str(&command[at..s]);
        let token = &command[s..e];
        out.push_str(bound.get(token).map_or(token, String::as_str));
        at = e;
    }
    out.push_str(&command[at..]);
    out
}

/// Matches one README line against one printed line; on success, the tokens it bound.
fn match_line(
    expected: &str,
    actual: &str,
    kinds: &[(Regex, &'static str)],
    bound: &Bindings,
) -> Option<Vec<(String, String)>> {
    let mut pattern = String::from("^");
    let mut fresh = Vec::new();
    let mut at = 0;
    for (s, e, shape) in tokens(expected, kinds) {
        pattern.push_str(&regex::escape(&expected[at..s]));
        let token = &expected[s..e];
        match bound.get(token) {
            Some(v) => pattern.push_str(&regex::escape(v)),
            None => {
                pattern.push_str(&format!("({shape})"));
                fresh.push(token.to_owned());
            }
        }
        at = e;
    }
    pattern.push_str(&regex::escape(&expected[at..]));
    pattern.push('$');
    let caps = Regex::new(&pattern).unwrap().captures(actual)?;
    let mut out = Vec::new();
    for (i, token) in fresh.into_iter().enumerate() {
        let value = caps.get(i + 1)?.as_str().to_owned();
        // The same README token twice on one line must be the same value.
        if out.iter().any(|(t, v): &(String, String)| *t == token && *v != value) {
            return None;
        }
        out.push((token, value));
    }
    Some(out)
}

/// Binds `token` to `value`, and a key value's display prefix too (8 characters for a
/// self-checking value, `kgk1` and 4 more; else 4).
fn bind(bound: &mut Bindings, token: String, value: String) {
    if token.len() == 40 && value.len() == 40 {
        let n = if token.starts_with("kgk1") && value.starts_with("kgk1") { 8 } else { 4 };
        bound.insert(format!("{}…", &token[..n]), format!("{}…", &value[..n]));
    }
    bound.insert(token, value);
}

/// Matches the README's lines against the printed ones (`...` matches any number of lines) and
/// returns the bindings extended with what the match bound.
fn match_output(
    expected: &[String],
    actual: &[String],
    kinds: &[(Regex, &'static str)],
    bound: &Bindings,
) -> Option<Bindings> {
    let Some((first, rest)) = expected.split_first() else {
        return actual.is_empty().then(|| bound.clone());
    };
    if first.trim() == "..." {
        return (0..=actual.len())
            .find_map(|skip| match_output(rest, &actual[skip..], kinds, bound));
    }
    let (line, more) = actual.split_first()?;
    let fresh = match_line(first, line, kinds, bound)?;
    let mut next = bound.clone();
    for (t, v) in fresh {
        bind(&mut next, t, v);
    }
    match_output(rest, more, kinds, &next)
}

/// Printed output as the README shows it: no colour codes, no `\r`, no log lines, no trailing
/// blank lines.
fn clean(text: &str) -> Vec<String> {
    let ansi = Regex::new(r"\x1b\[[0-9;]*m").unwrap();
    let log =
        Regex::new(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z\s+(TRACE|DEBUG|INFO|WARN|ERROR)\s")
            .unwrap();
    let mut lines: Vec<String> = ansi
        .replace_all(text, "")
        .lines()
        .map(|l| l.trim_end_matches('\r').trim_end().to_owned())
        .filter(|l| !log.is_match(l))
        .collect();
    while lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    lines
}

fn trim_blank_end(lines: &[String]) -> Vec<String> {
    let mut v = lines.to_vec();
    while v.last().is_some_and(String::is_empty) {
        v.pop();
    }
    v
}

/// A server the README started, stopped with SIGTERM when the test ends.
struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..200 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether `program` can be found on `path`.
fn on_path(program: &str, path: &str) -> bool {
    std::env::split_paths(path).any(|d| d.join(program).is_file())
}

/// Runs the README's transcripts in `repo`; returns a description of every mismatch.
fn reproduce(readme: &str, repo: &Path, scratch: &Path) -> Vec<String> {
    let kinds = token_kinds();
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".to_owned())
    );
    // Every curl of the README gives up after 30 s instead of hanging the test, and shows no
    // progress meter (it shows none in a terminal either, where the README's output goes).
    std::fs::write(scratch.join(".curlrc"), "max-time = 30\nno-progress-meter\n").unwrap();
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), path.clone()),
        ("HOME".into(), scratch.display().to_string()),
        ("KEYGATE_DATA_DIR".into(), scratch.join("data").display().to_string()),
        ("KEYGATE_LISTEN".into(), "127.0.0.1:0".into()),
        ("KEYGATE_ADMIN_LISTEN".into(), "127.0.0.1:0".into()),
        (
            "CANDIDATE_SERVICE_ARTIFACT".into(),
            workspace_bin("candidate-service").display().to_string(),
        ),
    ];
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let mut bound = Bindings::new();
    let mut servers = Vec::new();
    let mut failures = Vec::new();
    'blocks: for block in console_blocks(readme) {
        for step in block {
            let command = substitute(&step.command, &kinds, &bound);
            let program = command.split_whitespace().next().unwrap_or_default().to_owned();
            if program != "export" && !on_path(&program, &path) {
                assert!(!ci, "README line {}: {program} is not installed (CI=true)", step.line);
                eprintln!(
                    "README line {}: {program} is not installed: rest of block skipped",
                    step.line
                );
                continue 'blocks;
            }
            let expected = trim_blank_end(&step.expected);
            let printed = if program == "export" {
                for pair in command.split_whitespace().skip(1) {
                    let (k, v) = pair.split_once('=').unwrap();
                    env.push((k.to_owned(), v.to_owned()));
                }
                Vec::new()
            } else if command.starts_with("keygate up") || command.starts_with("keygate serve") {
                let (child, lines) = start(&command, repo, &env);
                servers.push(Background(child));
                lines
            } else {
                let out = Command::new("sh")
                    .arg("-c")
                    .arg(format!("{command} 2>&1"))
                    .current_dir(repo)
                    .env_clear()
                    .envs(env.iter().map(|(k, v)| (k, v)))
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                if !out.status.success() {
                    failures.push(format!(
                        "README line {}: `{command}` exited with {}:\n{text}",
                        step.line, out.status
                    ));
                    continue;
                }
                clean(&text)
            };
            match match_output(&expected, &printed, &kinds, &bound) {
                Some(next) => bound = next,
                None => failures.push(format!(
                    "README line {}: `{command}` printed\n{}\n--- the README shows\n{}",
                    step.line,
                    printed.join("\n"),
                    expected.join("\n")
                )),
            }
            // `deploy` prints URLs of the gateway the README started, wherever it listens.
            if let Some(real) = bound.get("127.0.0.1:4000")
                && !env.iter().any(|(k, _)| k == "KEYGATE_URL")
            {
                env.push(("KEYGATE_URL".to_owned(), format!("http://{real}")));
            }
        }
    }
    drop(servers);
    failures
}

/// Starts a server command in the background and returns it with what it printed up to and
/// including its admin address (stderr too, in order), logs left out.
fn start(command: &str, repo: &Path, env: &[(String, String)]) -> (Child, Vec<String>) {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("exec {command} 2>&1"))
        .current_dir(repo)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = String::new();
        let mut ready = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !ready {
                seen.push_str(&line);
                seen.push('\n');
                if line.contains("keygate console on ") {
                    ready = true;
                    let _ = tx.send(seen.clone());
                }
            }
            // Keep draining, so the server never blocks on a full pipe.
        }
        if !ready {
            let _ = tx.send(seen);
        }
    });
    let printed = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
    (child, clean(&printed))
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

#[test]
fn readme_transcripts_reproduce() {
    let repo = repo_root();
    let readme = std::fs::read_to_string(repo.join("README.md")).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    // Run as root, keygate runs the example's functions as users of their own (see
    // support::Env::new): they must reach the data directory. The candidates live in the
    // stage's state directory in it, as for a user.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    let failures = reproduce(&readme, &repo, scratch.path());
    assert!(failures.is_empty(), "the README drifted:\n\n{}", failures.join("\n\n"));
}

/// The harness itself fails on drift: a transcript whose output differs from what keygate
/// prints is reported, and generated values are matched by shape and must stay consistent.
#[test]
fn the_harness_catches_drift() {
    let kinds = token_kinds();
    let b = Bindings::new();
    let printed = vec!["9s4rpaqu5y  candidate-service-api-key  OmRm…  enabled".to_owned()];
    let shown = vec!["4uliwezn2d  candidate-service-api-key  F8Wp…  enabled".to_owned()];
    let bound = match_output(&shown, &printed, &kinds, &b).expect("generated values match");
    assert_eq!(bound["4uliwezn2d"], "9s4rpaqu5y");
    // A changed word, a missing line, or a value inconsistent with an earlier one: a mismatch.
    let changed = vec!["4uliwezn2d  candidate-service-api-key  F8Wp…  disabled".to_owned()];
    assert!(match_output(&changed, &printed, &kinds, &b).is_none());
    assert!(match_output(&[], &printed, &kinds, &b).is_none());
    let mut other = Bindings::new();
    other.insert("4uliwezn2d".into(), "aaaaaaaaa1".into());
    assert!(match_output(&shown, &printed, &kinds, &other).is_none());
    // `...` skips lines; words of an id's length are literal text.
    let with_gap = vec!["first".to_owned(), "...".to_owned(), "candidates".to_owned()];
    let lines: Vec<String> = ["first", "a", "b", "candidates"].map(String::from).to_vec();
    assert!(match_output(&with_gap, &lines, &kinds, &b).is_some());
    let word = vec!["candidatex".to_owned()];
    assert!(match_output(&word, &["candidates".to_owned()], &kinds, &b).is_none());
    // Commands get the real values bound so far.
    let value = "F8WpE6V72RobQrQInJMFhZsUV0MMU4Op4GEQ7dIT";
    let mut bound = Bindings::new();
    bind(&mut bound, value.into(), "x".repeat(40));
    assert_eq!(
        substitute(&format!("curl -H \"x-api-key: {value}\""), &kinds, &bound),
        format!("curl -H \"x-api-key: {}\"", "x".repeat(40))
    );
    assert_eq!(bound["F8Wp…"], "xxxx…");
    // A self-checking value's prefix is its marker and four more characters.
    let value = "kgk1F8WpE6V72RobQrQInJMFhZsUV0MMU41hhExX";
    let real = "kgk1AbCdE6V72RobQrQInJMFhZsUV0MMU4000000";
    bind(&mut bound, value.into(), real.into());
    assert_eq!(bound["kgk1F8Wp…"], "kgk1AbCd…");
    let shown = vec!["4uliwezn2d  k  kgk1F8Wp…  enabled".to_owned()];
    let printed = vec!["9s4rpaqu5y  k  kgk1AbCd…  enabled".to_owned()];
    assert!(match_output(&shown, &printed, &kinds, &bound).is_some());
    let printed = vec!["9s4rpaqu5y  k  kgk1Zzzz…  enabled".to_owned()];
    assert!(match_output(&shown, &printed, &kinds, &bound).is_none(), "not the same key");
}

/// Every `cargo install` the docs show pins the versions the tests ran (`--locked`): without it
/// cargo resolves newer dependencies than Cargo.lock, and the installed binary runs on code no
/// test has seen.
#[test]
fn every_cargo_install_in_the_docs_is_locked() {
    fn markdown(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if !name.starts_with('.') && name != "target" && name != "node_modules" {
                    markdown(&path, out);
                }
            } else if name.ends_with(".md") {
                out.push(path);
            }
        }
    }
    let repo = repo_root();
    let mut files = Vec::new();
    markdown(&repo, &mut files);
    assert!(files.iter().any(|f| f.ends_with("README.md")), "found no docs in {}", repo.display());
    let mut unlocked = Vec::new();
    let mut seen = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (i, line) in text.lines().enumerate() {
            for (at, _) in line.match_indices("cargo install") {
                seen += 1;
                // The command runs to the end of its code span or line.
                let rest = &line[at..];
                let command = rest.split(['`', '&', ';']).next().unwrap_or(rest);
                if !command.contains("--locked") {
                    let name = file.strip_prefix(&repo).unwrap_or(file).display().to_string();
                    unlocked.push(format!("{name}:{}: {}", i + 1, command.trim()));
                }
            }
        }
    }
    assert!(seen > 0, "the README's first command installs keygate");
    assert!(unlocked.is_empty(), "`cargo install` without --locked:\n{}", unlocked.join("\n"));
}
