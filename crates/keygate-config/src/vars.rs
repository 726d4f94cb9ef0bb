//! Serverless variables: `${opt:..}`, `${self:..}`, `${env:..}`, `${sls:stage}`, with fallbacks
//! and nesting.
//!
//! Resolution is lazy: the loader asks for the parts of the document it uses
//! ([`Resolver::expand`] for one level, [`Resolver::deep`] for a whole subtree), so a variable
//! keygate does not support is only an error where keygate would use its value. `${self:..}`
//! resolves the referenced part of the document first; results are memoised per document path,
//! and a path met again while it is being resolved is a cycle.
//!
//! A scalar that is exactly one variable keeps the type of what it resolves to (number, map...);
//! variables embedded in text must resolve to strings, numbers or booleans. Messages show the
//! variable with quoted literals masked, so a fallback literal (which may be an API key value)
//! never reaches an error.
//!
//! Resolution is bounded: a value may grow to [`MAX_VALUE_BYTES`], all values together to
//! [`MAX_NODES`] nodes and [`MAX_TOTAL_BYTES`] of text, and variables nest at most [`MAX_DEPTH`]
//! deep, so references that double each other are refused instead of taking gigabytes.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::diag::{Diag, FieldPath, Mark};
use crate::yaml::{Entry, Node, Value, is_number};

/// The longest string a value may become once its variables are resolved (64 KiB).
pub(crate) const MAX_VALUE_BYTES: usize = 64 * 1024;
/// The most text all resolved values together may hold (4 MiB): with [`MAX_NODES`], bounds what
/// `${self:..}` references that repeat or double each other can produce.
pub(crate) const MAX_TOTAL_BYTES: usize = 4 * 1024 * 1024;
/// The most nodes all resolved values together may hold.
pub(crate) const MAX_NODES: usize = 100_000;
/// The deepest chain of variables: `${...}` inside `${...}` and `${self:..}` references to
/// values that hold variables themselves.
pub(crate) const MAX_DEPTH: usize = 32;

/// Sources Serverless has that keygate does not resolve (yet).
const UNSUPPORTED: &[&str] =
    &["file", "ssm", "aws", "param", "cf", "s3", "git", "sm", "strToBool", "terraform", "vault"];

/// Where the variable being resolved is written, for messages.
struct Site<'p> {
    mark: Mark,
    path: &'p FieldPath,
}

/// Why one alternative of a variable gave no value.
struct Miss {
    /// e.g. `environment variable FOO is not set`.
    reason: String,
    /// e.g. `set it or give a default: ${env:FOO, 'value'}`.
    hint: String,
}

/// The outcome of one variable or one alternative of it.
enum Alt {
    Found(Node),
    /// No value (a fallback may still give one).
    Missing(Vec<Miss>),
    /// An error is already reported.
    Failed,
}

/// One piece of a string: literal text or a whole `${...}`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Part<'s> {
    Text(&'s str),
    Var(&'s str),
}

/// Splits a string into text and `${...}` variables (nested variables stay inside their parent).
pub(crate) fn split(text: &str) -> Result<Vec<Part<'_>>, String> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        if start > 0 {
            parts.push(Part::Text(&rest[..start]));
        }
        let end = closing(&rest[start..]).ok_or_else(|| {
            format!(
                "the variable starting with {} has no closing `}}`",
                quote_masked(&rest[start..])
            )
        })?;
        parts.push(Part::Var(&rest[start..start + end]));
        rest = &rest[start + end..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest));
    }
    Ok(parts)
}

/// Length of the `${...}` at the start of `s` (through its matching `}`), if it is closed.
fn closing(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut depth = 0usize;
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'$' && bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            None if b == b'\'' || b == b'"' => quote = Some(b),
            None if b == b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            None => {}
        }
        i += 1;
    }
    None
}

/// Splits the inside of a variable on the commas that separate alternatives.
fn alternatives(inner: &str) -> Vec<&str> {
    let bytes = inner.as_bytes();
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut quote: Option<u8> = None;
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'$' && bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            None if b == b'}' => depth = depth.saturating_sub(1),
            None if b == b'\'' || b == b'"' => quote = Some(b),
            None if b == b',' && depth == 0 => {
                out.push(inner[start..i].trim());
                start = i + 1;
            }
            None => {}
        }
        i += 1;
    }
    out.push(inner[start..].trim());
    out
}

/// The variable text with quoted literals replaced by `'...'`, for messages.
fn mask(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut quote: Option<char> = None;
    for c in s.chars() {
        match quote {
            Some(q) if c == q => {
                out.push_str("...");
                out.push(c);
                quote = None;
            }
            Some(_) => {}
            None => {
                out.push(c);
                if c == '\'' || c == '"' {
                    quote = Some(c);
                }
            }
        }
    }
    if quote.is_some() {
        out.push_str("...");
    }
    out
}

fn quote_masked(s: &str) -> String {
    let masked = mask(s);
    let short: String = masked.chars().take(40).collect();
    if short.len() < masked.len() { format!("`{short}...`") } else { format!("`{short}`") }
}

/// The literal an alternative denotes (`'text'`, `"text"`, a number, `true`, `false`, `null`).
fn literal(alt: &str, mark: Mark) -> Option<Node> {
    let value = match alt {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        "null" => Value::Null,
        _ if alt.len() >= 2
            && ((alt.starts_with('\'') && alt.ends_with('\''))
                || (alt.starts_with('"') && alt.ends_with('"'))) =>
        {
            Value::Str(alt[1..alt.len() - 1].to_owned())
        }
        _ if is_number(alt) && !alt.starts_with('.') => Value::Num(alt.to_owned()),
        _ => return None,
    };
    Some(Node::new(value, mark))
}

/// Resolves the variables of one document.
pub(crate) struct Resolver<'a> {
    root: &'a Node,
    stage: Option<&'a str>,
    region: Option<&'a str>,
    env: &'a dyn Fn(&str) -> Option<String>,
    /// Resolved templates by document path.
    memo: HashMap<String, Node>,
    /// Document paths of the templates being resolved, outermost first.
    stack: Vec<String>,
    /// How many variables are being resolved inside each other now.
    depth: usize,
    /// Nodes and text bytes of the values resolved so far (see [`MAX_NODES`]).
    spent_nodes: usize,
    spent_bytes: usize,
    /// A budget was exceeded (already reported): nothing more is resolved.
    exhausted: bool,
    /// Every problem found so far (the loader adds its own here too).
    pub(crate) diags: Vec<Diag>,
}

impl<'a> Resolver<'a> {
    pub(crate) fn new(
        root: &'a Node,
        stage: Option<&'a str>,
        region: Option<&'a str>,
        env: &'a dyn Fn(&str) -> Option<String>,
    ) -> Self {
        Self {
            root,
            stage,
            region,
            env,
            memo: HashMap::new(),
            stack: Vec::new(),
            depth: 0,
            spent_nodes: 0,
            spent_bytes: 0,
            exhausted: false,
            diags: Vec::new(),
        }
    }

    pub(crate) fn error(&mut self, mark: Mark, path: &FieldPath, message: impl Into<String>) {
        self.diags.push(Diag::new(mark, path, message));
    }

    /// The node with its own variables resolved (children of a mapping or list are left as
    /// they are, unless the node itself was a variable, whose value is always fully resolved).
    pub(crate) fn expand(&mut self, node: &Node, path: &FieldPath) -> Node {
        match &node.value {
            Value::Template(text) => self.template(node, text, path),
            _ => node.clone(),
        }
    }

    /// The node with every variable in it resolved.
    pub(crate) fn deep(&mut self, node: &Node, path: &FieldPath) -> Node {
        match &node.value {
            Value::Template(text) => self.template(node, text, path),
            Value::Seq(items) => {
                let items =
                    items.iter().enumerate().map(|(i, n)| self.deep(n, &path.index(i))).collect();
                Node { value: Value::Seq(items), ..node.clone_shallow() }
            }
            Value::Map(entries) => {
                let entries = entries
                    .iter()
                    .map(|e| Entry {
                        key: e.key.clone(),
                        key_mark: e.key_mark,
                        value: self.deep(&e.value, &path.key(&e.key)),
                    })
                    .collect();
                Node { value: Value::Map(entries), ..node.clone_shallow() }
            }
            _ => node.clone(),
        }
    }

    /// Resolves the string `text` of the scalar `node` at document path `path`.
    fn template(&mut self, node: &Node, text: &str, path: &FieldPath) -> Node {
        if self.exhausted {
            return Node::new(Value::Invalid, node.mark);
        }
        let key = path.to_string();
        if let Some(done) = self.memo.get(&key) {
            let done = done.clone();
            return self.charge(done, node.mark, path);
        }
        if let Some(pos) = self.stack.iter().position(|p| *p == key) {
            let mut chain: Vec<&str> = self.stack[pos..].iter().map(String::as_str).collect();
            chain.push(&key);
            let chain = chain.join(" -> ");
            self.error(
                node.mark,
                path,
                format!("the variables here refer back to this value ({chain}); break the cycle"),
            );
            return Node::new(Value::Invalid, node.mark);
        }
        self.stack.push(key.clone());
        let site = Site { mark: node.mark, path };
        let mut out = self.text(text, &site);
        self.stack.pop();
        out.mark = node.mark;
        out.tag = None;
        if let Value::Str(s) = &out.value
            && s.len() > MAX_VALUE_BYTES
        {
            self.too_long(node.mark, path);
            out = Node::new(Value::Invalid, node.mark);
        }
        self.memo.insert(key, out.clone());
        self.charge(out, node.mark, path)
    }

    /// Counts a resolved value against the budgets; past them, reports once and gives
    /// [`Value::Invalid`] from then on.
    fn charge(&mut self, node: Node, mark: Mark, path: &FieldPath) -> Node {
        if self.exhausted {
            return Node::new(Value::Invalid, mark);
        }
        let (nodes, bytes) = cost(&node);
        self.spent_nodes = self.spent_nodes.saturating_add(nodes);
        self.spent_bytes = self.spent_bytes.saturating_add(bytes);
        if self.spent_nodes <= MAX_NODES && self.spent_bytes <= MAX_TOTAL_BYTES {
            return node;
        }
        self.exhausted = true;
        self.error(
            mark,
            path,
            format!(
                "the variables of this file expand to more than {} values or {} MiB of text; \
                 keygate stops resolving here (do `${{self:..}}` references repeat or double \
                 each other?)",
                MAX_NODES,
                MAX_TOTAL_BYTES / (1024 * 1024)
            ),
        );
        Node::new(Value::Invalid, mark)
    }

    fn too_long(&mut self, mark: Mark, path: &FieldPath) {
        self.error(
            mark,
            path,
            format!(
                "this value is longer than {} KiB once its variables are resolved; keygate \
                 refuses it (do `${{self:..}}` references repeat or double each other?)",
                MAX_VALUE_BYTES / 1024
            ),
        );
    }

    /// Resolves a whole string: one variable keeps its value's type, several are joined as text.
    fn text(&mut self, text: &str, site: &Site<'_>) -> Node {
        let parts = match split(text) {
            Ok(parts) => parts,
            Err(message) => {
                self.error(site.mark, site.path, message);
                return Node::new(Value::Invalid, site.mark);
            }
        };
        if let [Part::Var(var)] = parts.as_slice() {
            return self.var(var, site).unwrap_or_else(|| Node::new(Value::Invalid, site.mark));
        }
        let mut out = String::new();
        let mut failed = false;
        for part in parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Var(var) => match self.var(var, site) {
                    Some(node) => match self.embed(var, &node, site) {
                        Some(t) => out.push_str(&t),
                        None => failed = true,
                    },
                    None => failed = true,
                },
            }
            if out.len() > MAX_VALUE_BYTES {
                self.too_long(site.mark, site.path);
                return Node::new(Value::Invalid, site.mark);
            }
        }
        if failed {
            Node::new(Value::Invalid, site.mark)
        } else {
            Node::new(Value::Str(out), site.mark)
        }
    }

    /// The text of a variable's value embedded in a string.
    fn embed(&mut self, var: &str, node: &Node, site: &Site<'_>) -> Option<String> {
        if let Value::Invalid = node.value {
            return None;
        }
        let text = node.scalar_text();
        if text.is_none() {
            self.error(
                site.mark,
                site.path,
                format!(
                    "{} resolves to {}, which cannot be placed inside text; only strings, numbers \
                     and booleans can (or make the variable the whole value)",
                    mask(var),
                    node.kind()
                ),
            );
        }
        text
    }

    /// Resolves one `${...}`, reporting why when it has no value.
    fn var(&mut self, var: &str, site: &Site<'_>) -> Option<Node> {
        let inner = &var[2..var.len() - 1];
        match self.alternatives(inner, site) {
            Alt::Found(node) => Some(node),
            Alt::Failed => None,
            Alt::Missing(misses) => {
                let message = match misses.as_slice() {
                    [one] => format!("cannot resolve {}: {}; {}", mask(var), one.reason, one.hint),
                    _ => {
                        let reasons: Vec<&str> = misses.iter().map(|m| m.reason.as_str()).collect();
                        format!(
                            "cannot resolve {}: {}; add a default at the end, e.g. ${{{}, \
                            'value'}}",
                            mask(var),
                            reasons.join(", and "),
                            mask(inner.trim())
                        )
                    }
                };
                self.error(site.mark, site.path, message);
                None
            }
        }
    }

    /// Tries the comma-separated alternatives of a variable in order, one level deeper.
    fn alternatives(&mut self, inner: &str, site: &Site<'_>) -> Alt {
        if self.depth >= MAX_DEPTH {
            self.error(
                site.mark,
                site.path,
                format!(
                    "variables nest more than {MAX_DEPTH} levels deep here (`${{...}}` inside \
                     `${{...}}`, or `${{self:..}}` references to values with variables of their \
                     own); keygate resolves at most {MAX_DEPTH}"
                ),
            );
            return Alt::Failed;
        }
        self.depth += 1;
        let alt = self.alternatives_here(inner, site);
        self.depth -= 1;
        alt
    }

    fn alternatives_here(&mut self, inner: &str, site: &Site<'_>) -> Alt {
        let mut misses = Vec::new();
        for alt in alternatives(inner) {
            match self.alternative(alt, site) {
                Alt::Missing(m) => misses.extend(m),
                done => return done,
            }
        }
        Alt::Missing(misses)
    }

    fn alternative(&mut self, alt: &str, site: &Site<'_>) -> Alt {
        if alt.is_empty() {
            self.error(
                site.mark,
                site.path,
                "a variable or one of its fallbacks is empty; expected e.g. ${self:service} or \
                ${env:NAME, 'default'}",
            );
            return Alt::Failed;
        }
        if let Some(node) = literal(alt, site.mark) {
            return Alt::Found(node);
        }
        if alt.starts_with("${") && closing(alt) == Some(alt.len()) {
            return self.alternatives(&alt[2..alt.len() - 1], site);
        }
        // A reference, perhaps with variables in its address (`self:custom.${opt:stage}.x`).
        let reference: Cow<'_, str> = if alt.contains("${") {
            let parts = match split(alt) {
                Ok(parts) => parts,
                Err(message) => {
                    self.error(site.mark, site.path, message);
                    return Alt::Failed;
                }
            };
            let mut out = String::new();
            for part in parts {
                match part {
                    Part::Text(t) => out.push_str(t),
                    Part::Var(var) => {
                        let Some(node) = self.var(var, site) else { return Alt::Failed };
                        let Some(t) = self.embed(var, &node, site) else { return Alt::Failed };
                        out.push_str(&t);
                    }
                }
            }
            Cow::Owned(out)
        } else {
            Cow::Borrowed(alt)
        };
        self.source(&reference, site)
    }

    /// Resolves `source:address`.
    fn source(&mut self, reference: &str, site: &Site<'_>) -> Alt {
        let name_end =
            reference.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(reference.len());
        let (name, rest) = reference.split_at(name_end);
        let address = match rest.chars().next() {
            Some(':') => rest[1..].trim(),
            Some('(') if !name.is_empty() => return self.unsupported(name, site),
            None if !name.is_empty() => {
                self.error(
                    site.mark,
                    site.path,
                    "a fallback must be a variable (source:address), a quoted string, a number or \
                     true/false; quote text fallbacks, e.g. ${opt:stage, 'dev'}",
                );
                return Alt::Failed;
            }
            _ => {
                self.error(
                    site.mark,
                    site.path,
                    format!(
                        "cannot read the variable {}; expected source:address, e.g. \
                        ${{self:service}}",
                        quote_masked(reference)
                    ),
                );
                return Alt::Failed;
            }
        };
        match name {
            "opt" => self.opt(address),
            "self" => self.self_ref(address, site),
            "env" => self.env(address, site),
            "sls" => match address {
                "stage" => self.sls_stage(site),
                "instanceId" => {
                    self.error(
                        site.mark,
                        site.path,
                        "${sls:instanceId} is not supported by keygate (it changes on every \
                        deploy); \
                         use a fixed value or ${env:NAME}",
                    );
                    Alt::Failed
                }
                other => {
                    self.error(
                        site.mark,
                        site.path,
                        format!("unknown variable sls:{other}; keygate supports ${{sls:stage}}"),
                    );
                    Alt::Failed
                }
            },
            _ if UNSUPPORTED.contains(&name) => self.unsupported(name, site),
            _ => {
                self.error(
                    site.mark,
                    site.path,
                    format!(
                        "unknown variable source `{name}`; keygate supports self, opt, env and sls"
                    ),
                );
                Alt::Failed
            }
        }
    }

    fn unsupported(&mut self, name: &str, site: &Site<'_>) -> Alt {
        let shown = if name == "file" { "file(...)".to_owned() } else { format!("{name}:") };
        self.error(
            site.mark,
            site.path,
            format!(
                "keygate does not support the `{shown}` variable source yet; use a literal value \
                or \
                 ${{env:NAME}} instead"
            ),
        );
        Alt::Failed
    }

    fn opt(&mut self, address: &str) -> Alt {
        match (address, self.stage) {
            ("stage", Some(stage)) => {
                Alt::Found(Node::new(Value::Str(stage.to_owned()), Mark::START))
            }
            ("stage", None) => Alt::Missing(vec![Miss {
                reason: "no --stage option was given".to_owned(),
                hint: "pass --stage or give a default: ${opt:stage, 'dev'}".to_owned(),
            }]),
            ("region", _) => match self.region {
                Some(region) => Alt::Found(Node::new(Value::Str(region.to_owned()), Mark::START)),
                None => Alt::Missing(vec![Miss {
                    reason: "no --region option was given".to_owned(),
                    hint: "pass --region or give a default: ${opt:region, 'us-east-1'}".to_owned(),
                }]),
            },
            (other, _) => Alt::Missing(vec![Miss {
                reason: format!("keygate has no --{other} option"),
                hint: format!("give a default: ${{opt:{other}, 'value'}}"),
            }]),
        }
    }

    fn env(&mut self, name: &str, site: &Site<'_>) -> Alt {
        if name.is_empty() {
            self.error(
                site.mark,
                site.path,
                "${env:} needs a variable name, e.g. ${env:TABLE_NAME}",
            );
            return Alt::Failed;
        }
        match (self.env)(name) {
            Some(v) => Alt::Found(Node::new(Value::Str(v), site.mark)),
            None => Alt::Missing(vec![Miss {
                reason: format!("environment variable {name} is not set"),
                hint: format!("set it or give a default: ${{env:{name}, 'value'}}"),
            }]),
        }
    }

    /// `${sls:stage}`: `--stage`, else `provider.stage`, else `dev`.
    fn sls_stage(&mut self, site: &Site<'_>) -> Alt {
        if let Some(stage) = self.stage {
            return Alt::Found(Node::new(Value::Str(stage.to_owned()), site.mark));
        }
        self.self_ref("provider.stage", site)
    }

    /// `${self:a.b.c}`: the (resolved) value at that path of the document.
    fn self_ref(&mut self, address: &str, site: &Site<'_>) -> Alt {
        let segments: Vec<&str> = address.split('.').map(str::trim).collect();
        if address.is_empty() || segments.iter().any(|s| s.is_empty()) {
            self.error(
                site.mark,
                site.path,
                format!(
                    "${{self:{address}}} is not a path into this file; expected e.g. \
                    ${{self:provider.stage}}"
                ),
            );
            return Alt::Failed;
        }
        let root: &'a Node = self.root;
        let mut current: Cow<'a, Node> = Cow::Borrowed(root);
        let mut path = FieldPath::root();
        for segment in &segments {
            if let Value::Template(text) = &current.value {
                let text = text.clone();
                let resolved = self.template(&current, &text, &path);
                current = Cow::Owned(resolved);
            }
            let (next, next_path) = match (&current.value, segment.parse::<usize>()) {
                (Value::Invalid, _) => return Alt::Failed,
                (Value::Seq(_), Ok(i)) => (child(&current, |n| seq_item(n, i)), path.index(i)),
                _ => (child(&current, |n| n.get(segment)), path.key(segment)),
            };
            match next {
                Some(n) => current = n,
                None => return self.self_default(address, site),
            }
            path = next_path;
        }
        let node = match current {
            Cow::Borrowed(raw) => self.deep(raw, &path),
            Cow::Owned(resolved) => resolved,
        };
        match node.value {
            Value::Invalid => Alt::Failed,
            Value::Null => self.self_default(address, site),
            // The old `service: {name: x}` form: `${self:service}` is the name.
            Value::Map(_) if address == "service" => match node.get("name") {
                Some(name) => Alt::Found(Node { mark: site.mark, ..name.clone() }),
                None => self.self_default(address, site),
            },
            _ => Alt::Found(node),
        }
    }

    /// The defaults Serverless gives `provider.stage` and `provider.region` when they are not
    /// written; anything else is missing.
    fn self_default(&mut self, address: &str, site: &Site<'_>) -> Alt {
        let default = match address {
            "provider.stage" => "dev",
            "provider.region" => "us-east-1",
            _ => {
                return Alt::Missing(vec![Miss {
                    reason: format!("{address} is not defined in this file"),
                    hint: format!("define it or give a default: ${{self:{address}, 'value'}}"),
                }]);
            }
        };
        Alt::Found(Node::new(Value::Str(default.to_owned()), site.mark))
    }
}

/// How many nodes a value holds and how many bytes of text, for the budgets.
fn cost(node: &Node) -> (usize, usize) {
    match &node.value {
        Value::Seq(items) => items.iter().fold((1, 0), |(n, b), i| {
            let (ni, bi) = cost(i);
            (n + ni, b + bi)
        }),
        Value::Map(entries) => entries.iter().fold((1, 0), |(n, b), e| {
            let (ne, be) = cost(&e.value);
            (n + ne, b + be + e.key.len())
        }),
        Value::Str(s) | Value::Template(s) | Value::Num(s) => (1, s.len()),
        _ => (1, 0),
    }
}

fn seq_item(node: &Node, i: usize) -> Option<&Node> {
    match &node.value {
        Value::Seq(items) => items.get(i),
        _ => None,
    }
}

/// A child of a borrowed or owned node, borrowed when the parent is.
fn child<'a>(
    parent: &Cow<'a, Node>,
    pick: impl Fn(&Node) -> Option<&Node>,
) -> Option<Cow<'a, Node>> {
    match parent {
        Cow::Borrowed(p) => pick(p).map(Cow::Borrowed),
        Cow::Owned(p) => pick(p).cloned().map(Cow::Owned),
    }
}

impl Node {
    /// The node's mark and tag with an empty value, to rebuild it with resolved children.
    fn clone_shallow(&self) -> Node {
        Node { value: Value::Null, mark: self.mark, tag: self.tag.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitting_text_and_variables() {
        assert_eq!(
            split("a-${opt:stage}-${self:custom.${opt:stage}.x}").unwrap(),
            vec![
                Part::Text("a-"),
                Part::Var("${opt:stage}"),
                Part::Text("-"),
                Part::Var("${self:custom.${opt:stage}.x}")
            ]
        );
        assert_eq!(split("${env:X, '}'}").unwrap(), vec![Part::Var("${env:X, '}'}")]);
        assert!(split("x ${env:X").is_err());
        assert_eq!(split("plain $HOME").unwrap(), vec![Part::Text("plain $HOME")]);
    }

    #[test]
    fn splitting_alternatives() {
        assert_eq!(
            alternatives("opt:stage, self:provider.stage"),
            vec!["opt:stage", "self:provider.stage"]
        );
        assert_eq!(alternatives("env:A, 'a,b'"), vec!["env:A", "'a,b'"]);
        assert_eq!(alternatives("self:c.${env:X, 'y'}, 1"), vec!["self:c.${env:X, 'y'}", "1"]);
    }

    #[test]
    fn masking_hides_literals() {
        assert_eq!(mask("${env:K, 'SecretValue'}"), "${env:K, '...'}");
        assert_eq!(mask("${env:K, \"Secret"), "${env:K, \"...");
    }
}
