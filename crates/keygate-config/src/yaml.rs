//! A small spanned YAML tree built from yaml-rust2's event parser.
//!
//! Every [`Node`] keeps the 1-based line and column where it starts, so later stages can point
//! at the exact scalar that is wrong. Plain scalars are typed with the YAML 1.2 core schema (as
//! js-yaml, which Serverless uses, does); strings containing `${` become [`Value::Template`] for
//! the variable resolver. Anchors/aliases are expanded and `<<` merge keys applied here.
//! Problems of the tree itself (syntax errors, duplicate keys, bad merges) are reported as
//! [`Diag`]s. A hostile document is stopped while it is read: nesting past [`MAX_DEPTH`],
//! aliases producing more than [`MAX_ALIAS_NODES`] nodes, or a second document end the parse
//! with one located error.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::diag::{Diag, FieldPath, Mark};

/// The 1-based position of a yaml-rust2 marker.
fn mark_of(m: &Marker) -> Mark {
    // yaml-rust2 counts lines from 1 and columns from 0.
    Mark { line: m.line().max(1), col: m.col() + 1 }
}

/// A node of the tree and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub(crate) value: Value,
    pub(crate) mark: Mark,
    /// A non-core tag such as `!Ref` (a CloudFormation function), kept to explain why the value
    /// cannot be used.
    pub(crate) tag: Option<String>,
}

/// One `key: value` of a mapping. Keys are plain text and never hold variables.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub(crate) key: String,
    pub(crate) key_mark: Mark,
    pub(crate) value: Node,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    /// A number, as written (`128`, `0x1F`, `1.5`).
    Num(String),
    Str(String),
    /// A string with `${...}` variables still to resolve.
    Template(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
    /// A value whose variables could not be resolved; the error is already reported, so whoever
    /// reads it reports nothing more.
    Invalid,
}

impl Node {
    pub(crate) fn new(value: Value, mark: Mark) -> Self {
        Self { value, mark, tag: None }
    }

    /// The value of `key` when this node is a mapping.
    pub(crate) fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|e| e.key == key).map(|e| &e.value),
            _ => None,
        }
    }

    /// A short description of the node for "found ..." messages, quoting scalars.
    pub(crate) fn describe(&self) -> String {
        if let Some(tag) = &self.tag {
            return format!("`{tag}` (a CloudFormation function, which keygate does not evaluate)");
        }
        match &self.value {
            Value::Null => "nothing".to_owned(),
            Value::Bool(b) => b.to_string(),
            Value::Num(n) => n.clone(),
            Value::Str(s) | Value::Template(s) => quote(s),
            Value::Map(entries) => match entries.first() {
                Some(e) if entries.len() == 1 && (e.key == "Ref" || e.key.starts_with("Fn::")) => {
                    format!(
                        "`{}` (a CloudFormation function, which keygate does not evaluate)",
                        e.key
                    )
                }
                _ => "a map".to_owned(),
            },
            Value::Seq(_) => "a list".to_owned(),
            Value::Invalid => "an unresolved value".to_owned(),
        }
    }

    /// Like [`Node::describe`] but never shows the content, for values that may be secrets.
    pub(crate) fn kind(&self) -> &'static str {
        match &self.value {
            Value::Null => "nothing",
            Value::Bool(_) => "a boolean",
            Value::Num(_) => "a number",
            Value::Str(_) | Value::Template(_) => "a string",
            Value::Map(_) => "a map",
            Value::Seq(_) => "a list",
            Value::Invalid => "an unresolved value",
        }
    }

    /// The text of a scalar (`Str`, `Num`, `Bool`), as it is embedded in a string.
    pub(crate) fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Num(n) => Some(int_value(n).map_or_else(|| n.clone(), |i| i.to_string())),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

/// A string quoted for a message, cut when long.
pub(crate) fn quote(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() > MAX {
        let cut: String = s.chars().take(MAX).collect();
        format!("{:?}...", cut)
    } else {
        format!("{s:?}")
    }
}

/// The integer a YAML number denotes (`12`, `-3`, `0x1F`, `0o17`), when it is one.
pub(crate) fn int_value(text: &str) -> Option<i64> {
    if let Some(hex) = text.strip_prefix("0x") {
        return i64::from_str_radix(hex, 16).ok();
    }
    if let Some(oct) = text.strip_prefix("0o") {
        return i64::from_str_radix(oct, 8).ok();
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Whether a plain scalar is a number in the YAML 1.2 core schema.
pub(crate) fn is_number(text: &str) -> bool {
    let hex_or_oct = |s: &str, radix: u32| !s.is_empty() && s.chars().all(|c| c.is_digit(radix));
    if let Some(h) = text.strip_prefix("0x") {
        return hex_or_oct(h, 16);
    }
    if let Some(o) = text.strip_prefix("0o") {
        return hex_or_oct(o, 8);
    }
    if matches!(text, ".nan" | ".NaN" | ".NAN") {
        return true;
    }
    let t = text.strip_prefix(['-', '+']).unwrap_or(text);
    if matches!(t, ".inf" | ".Inf" | ".INF") {
        return true;
    }
    let (mantissa, exponent) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let (int_part, frac) = match mantissa.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (mantissa, None),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = digits(int_part)
        && frac.is_none_or(digits)
        && (!int_part.is_empty() || frac.is_some_and(|f| !f.is_empty()));
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    mantissa_ok && exponent_ok
}

/// Result of [`parse`]: the first document (`None` when the text has none or is not valid YAML)
/// and the problems found.
pub(crate) struct Parsed {
    pub(crate) root: Option<Node>,
    pub(crate) diags: Vec<Diag>,
    /// Whether the text is not valid YAML at all (then `root` is `None`).
    pub(crate) syntax_error: bool,
}

/// The deepest nesting of lists and maps keygate reads (a real `serverless.yml` needs about 10).
/// Checked as each collection opens, so no nesting costs recursion or stack.
pub(crate) const MAX_DEPTH: usize = 64;

/// The most nodes aliases may produce in one document, all aliases together. A real file's
/// `<<: *defaults` produce a few hundred; a "billion laughs" document produces billions.
pub(crate) const MAX_ALIAS_NODES: usize = 10_000;

/// Parses the one YAML document of `text` into a spanned tree.
///
/// Reads yaml-rust2's events one at a time (its own `load` recurses once per nesting level), so
/// the [`MAX_DEPTH`] and [`MAX_ALIAS_NODES`] limits stop a hostile document before it costs
/// stack or memory.
pub(crate) fn parse(text: &str) -> Parsed {
    let mut builder = TreeBuilder::default();
    let mut parser = Parser::new_from_str(text);
    let mut documents = 0;
    loop {
        let (ev, marker) = match parser.next_token() {
            Ok(next) => next,
            Err(e) => {
                let mark = mark_of(e.marker());
                // The scanner's own limit on flow nesting (`[[[[...`, 255 levels), met while it
                // looks ahead, before the parser hands over the event past ours.
                if e.info() == "recursion limit exceeded" {
                    return Parsed::fatal(too_deep(mark, &FieldPath::root()));
                }
                let mut message = format!("invalid YAML: {}", e.info());
                if let Some(hint) = indentation_hint(text, mark) {
                    message.push_str(&hint);
                }
                return Parsed::fatal(Diag::new(mark, &FieldPath::root(), message));
            }
        };
        let mark = mark_of(&marker);
        match ev {
            Event::StreamEnd => break,
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    return Parsed::fatal(Diag::new(
                        mark,
                        &FieldPath::root(),
                        "a second YAML document starts here (after `---`); a serverless.yml holds \
                         one document: remove the `---` line and merge or delete what follows",
                    ));
                }
            }
            ev => {
                if let Err(stop) = builder.on_event(ev, mark) {
                    return Parsed::fatal(stop);
                }
            }
        }
    }
    Parsed { root: builder.root, diags: builder.diags, syntax_error: false }
}

impl Parsed {
    /// A document that cannot be read on: only `diag` is reported.
    fn fatal(diag: Diag) -> Self {
        Self { root: None, diags: vec![diag], syntax_error: true }
    }
}

/// The error for nesting past [`MAX_DEPTH`].
fn too_deep(mark: Mark, path: &FieldPath) -> Diag {
    Diag::new(
        mark,
        path,
        format!(
            "lists and maps nest more than {MAX_DEPTH} levels deep here; keygate reads at most \
             {MAX_DEPTH} (a serverless.yml needs about 10)"
        ),
    )
}

/// How many nodes `node` holds (itself included) and how deep it nests (a scalar is 0).
fn measure(node: &Node) -> (usize, usize) {
    match &node.value {
        Value::Seq(items) => items.iter().fold((1, 1), |(n, d), i| {
            let (ni, di) = measure(i);
            (n + ni, d.max(di + 1))
        }),
        Value::Map(entries) => entries.iter().fold((1, 1), |(n, d), e| {
            let (ne, de) = measure(&e.value);
            (n + ne, d.max(de + 1))
        }),
        _ => (1, 0),
    }
}

/// When the error is on a `- ` list item indented less than the `key:` above it, say so: it is
/// the usual mistake (as in the seed article's snippet, with `- http:` at column 1 under
/// `events:`).
fn indentation_hint(text: &str, mark: Mark) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let line = lines.get(mark.line.checked_sub(1)?)?;
    let dash_col = line.len() - line.trim_start().len();
    if !line.trim_start().starts_with("- ") && line.trim() != "-" {
        return None;
    }
    let (prev_no, prev) = lines[..mark.line - 1]
        .iter()
        .enumerate()
        .rev()
        .find(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))?;
    let key_col = prev.len() - prev.trim_start().len();
    let key = prev.trim();
    if !key.ends_with(':') || key_col <= dash_col {
        return None;
    }
    Some(format!(
        " (the list item on line {} starts at column {}, left of `{}` on line {} at column {}; \
         indent the `-` to at least column {} so the list belongs to `{}`)",
        mark.line,
        dash_col + 1,
        key,
        prev_no + 1,
        key_col + 1,
        key_col + 1,
        key
    ))
}

/// What a mapping frame expects next.
enum Pending {
    /// A key has been read; its value comes next.
    Key(String, Mark),
    /// `<<` has been read; the maps to merge come next.
    Merge,
    /// A key that is not text; its value is dropped.
    Bad,
}

enum FrameKind {
    Seq(Vec<Node>),
    Map {
        entries: Vec<Entry>,
        pending: Option<Pending>,
        merges: Vec<Node>,
        first_key: Option<Mark>,
        /// The index in `entries` of each key, so a key is checked for duplicates in constant
        /// time (a map with 100,000 keys would otherwise cost billions of comparisons).
        index: HashMap<String, usize>,
    },
}

struct Frame {
    mark: Mark,
    anchor: usize,
    tag: Option<String>,
    kind: FrameKind,
}

/// An anchored node, with its size and depth for the alias limits.
struct Anchored {
    node: Node,
    nodes: usize,
    depth: usize,
}

#[derive(Default)]
struct TreeBuilder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Anchored>,
    /// Nodes produced by aliases so far.
    alias_nodes: usize,
    root: Option<Node>,
    diags: Vec<Diag>,
}

impl TreeBuilder {
    /// The field path of the child currently being built in the innermost open collection.
    fn path(&self) -> FieldPath {
        let mut p = FieldPath::root();
        for frame in &self.stack {
            match &frame.kind {
                FrameKind::Seq(items) => p.push_index(items.len()),
                FrameKind::Map { pending: Some(Pending::Key(k, _)), .. } => p.push_key(k),
                FrameKind::Map { pending: Some(Pending::Merge), .. } => p.push_key("<<"),
                FrameKind::Map { .. } => {}
            }
        }
        p
    }

    fn expecting_key(&self) -> bool {
        matches!(self.stack.last(), Some(Frame { kind: FrameKind::Map { pending: None, .. }, .. }))
    }

    /// Places a finished node into the innermost collection (or makes it the root).
    fn place(&mut self, node: Node, anchor: usize) {
        if anchor != 0 {
            let (nodes, depth) = measure(&node);
            self.anchors.insert(anchor, Anchored { node: node.clone(), nodes, depth });
        }
        let Some(mut frame) = self.stack.pop() else {
            if self.root.is_none() {
                self.root = Some(node);
            }
            return;
        };
        match &mut frame.kind {
            FrameKind::Seq(items) => items.push(node),
            FrameKind::Map { entries, pending, merges, first_key, index } => match pending.take() {
                None => {
                    // A non-scalar key (`? [a, b]: x` or an alias to a collection).
                    let text = node.scalar_text().or(match node.value {
                        Value::Null => Some(String::new()),
                        _ => None,
                    });
                    match text {
                        Some(t) => {
                            first_key.get_or_insert(node.mark);
                            *pending = Some(Pending::Key(t, node.mark));
                        }
                        None => {
                            self.diags.push(Diag::new(
                                node.mark,
                                &self.path(),
                                format!("a key must be plain text, found {}", node.describe()),
                            ));
                            *pending = Some(Pending::Bad);
                        }
                    }
                }
                Some(Pending::Key(key, key_mark)) => {
                    if let Some(first) = index.get(&key).map(|&i| &entries[i]) {
                        let line = first.key_mark.line;
                        self.diags.push(Diag::new(
                            key_mark,
                            &self.path().key(&key),
                            format!(
                                "duplicate key `{key}` (first defined on line {line}); keep \
                             only one"
                            ),
                        ));
                    } else {
                        index.insert(key.clone(), entries.len());
                        entries.push(Entry { key, key_mark, value: node });
                    }
                }
                Some(Pending::Merge) => merges.push(node),
                Some(Pending::Bad) => {}
            },
        }
        self.stack.push(frame);
    }

    /// Builds the node of a closed collection, applying `<<` merges.
    fn finish(&mut self, frame: Frame) -> Node {
        let value = match frame.kind {
            FrameKind::Seq(items) => Value::Seq(items),
            FrameKind::Map { mut entries, merges, first_key, mut index, .. } => {
                for merge in merges {
                    let sources: Vec<Node> = match merge.value {
                        Value::Map(_) => vec![merge],
                        Value::Seq(items)
                            if items.iter().all(|i| matches!(i.value, Value::Map(_))) =>
                        {
                            items
                        }
                        _ => {
                            let path = self.path().key("<<");
                            self.diags.push(Diag::new(
                                merge.mark,
                                &path,
                                format!(
                                    "a merge key `<<` needs a map or a list of maps (usually an \
                                    alias such as *defaults), found {}",
                                    merge.describe()
                                ),
                            ));
                            continue;
                        }
                    };
                    for source in sources {
                        if let Value::Map(more) = source.value {
                            for e in more {
                                if !index.contains_key(&e.key) {
                                    index.insert(e.key.clone(), entries.len());
                                    entries.push(e);
                                }
                            }
                        }
                    }
                }
                let mark = first_key.unwrap_or(frame.mark);
                return Node { value: Value::Map(entries), mark, tag: frame.tag };
            }
        };
        Node { value, mark: frame.mark, tag: frame.tag }
    }
}

impl TreeBuilder {
    /// A collection opens at `mark`: refused past [`MAX_DEPTH`].
    fn open(&self, mark: Mark, extra: usize) -> Result<(), Diag> {
        if self.stack.len() + extra <= MAX_DEPTH {
            return Ok(());
        }
        Err(too_deep(mark, &self.path()))
    }

    /// Takes one event; an error stops the parse (a limit was passed).
    fn on_event(&mut self, ev: Event, mark: Mark) -> Result<(), Diag> {
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                if self.expecting_key() && tag.is_none() {
                    let pending = if text == "<<" && style == TScalarStyle::Plain {
                        Pending::Merge
                    } else {
                        Pending::Key(text, mark)
                    };
                    if let Some(Frame {
                        kind: FrameKind::Map { pending: p, first_key, .. }, ..
                    }) = self.stack.last_mut()
                    {
                        first_key.get_or_insert(mark);
                        *p = Some(pending);
                    }
                    if anchor != 0 {
                        // An anchored key: remember it as a string for later aliases.
                        if let Some(Frame {
                            kind: FrameKind::Map { pending: Some(Pending::Key(k, _)), .. },
                            ..
                        }) = self.stack.last()
                        {
                            let node = Node::new(Value::Str(k.clone()), mark);
                            self.anchors.insert(anchor, Anchored { node, nodes: 1, depth: 0 });
                        }
                    }
                    return Ok(());
                }
                let node = scalar(text, style, tag, mark);
                self.place(node, anchor);
            }
            Event::SequenceStart(anchor, tag) => {
                self.open(mark, 1)?;
                self.stack.push(Frame {
                    mark,
                    anchor,
                    tag: tag.as_ref().and_then(custom_tag),
                    kind: FrameKind::Seq(Vec::new()),
                });
            }
            Event::MappingStart(anchor, tag) => {
                self.open(mark, 1)?;
                self.stack.push(Frame {
                    mark,
                    anchor,
                    tag: tag.as_ref().and_then(custom_tag),
                    kind: FrameKind::Map {
                        entries: Vec::new(),
                        pending: None,
                        merges: Vec::new(),
                        first_key: None,
                        index: HashMap::new(),
                    },
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(frame) = self.stack.pop() {
                    let anchor = frame.anchor;
                    let node = self.finish(frame);
                    self.place(node, anchor);
                }
            }
            Event::Alias(id) => {
                if let Some((nodes, depth)) = self.anchors.get(&id).map(|a| (a.nodes, a.depth)) {
                    self.open(mark, depth)?;
                    self.alias_nodes = self.alias_nodes.saturating_add(nodes);
                    if self.alias_nodes > MAX_ALIAS_NODES {
                        return Err(Diag::new(
                            mark,
                            &self.path(),
                            format!(
                                "aliases (`*name`) in this file expand to more than \
                                 {MAX_ALIAS_NODES} values; keygate stops here (a document that \
                                 multiplies itself through aliases is refused)"
                            ),
                        ));
                    }
                    let node = self.anchors[&id].node.clone();
                    self.place(node, 0);
                } else {
                    let path = self.path();
                    self.diags.push(Diag::new(
                        mark,
                        &path,
                        "this alias names no anchor defined before it",
                    ));
                    self.place(Node::new(Value::Null, mark), 0);
                }
            }
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
        Ok(())
    }
}

const CORE: &str = "tag:yaml.org,2002:";

/// The name of a tag outside the YAML core schema (e.g. `!Ref`), if it is one.
fn custom_tag(tag: &Tag) -> Option<String> {
    if tag.handle == CORE { None } else { Some(format!("{}{}", tag.handle, tag.suffix)) }
}

fn string(text: String) -> Value {
    if text.contains("${") { Value::Template(text) } else { Value::Str(text) }
}

/// Types a scalar: core tags (`!!str`...) first, then the core schema for plain scalars.
fn scalar(text: String, style: TScalarStyle, tag: Option<Tag>, mark: Mark) -> Node {
    if let Some(tag) = tag {
        if let Some(name) = custom_tag(&tag) {
            return Node { value: Value::Str(text), mark, tag: Some(name) };
        }
        let value = match tag.suffix.as_str() {
            "null" => Value::Null,
            "bool" => match text.as_str() {
                "true" | "True" | "TRUE" => Value::Bool(true),
                "false" | "False" | "FALSE" => Value::Bool(false),
                _ => string(text),
            },
            "int" | "float" if is_number(&text) => Value::Num(text),
            _ => string(text),
        };
        return Node::new(value, mark);
    }
    if style != TScalarStyle::Plain {
        return Node::new(string(text), mark);
    }
    let value = match text.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        "true" | "True" | "TRUE" => Value::Bool(true),
        "false" | "False" | "FALSE" => Value::Bool(false),
        t if is_number(t) => Value::Num(text),
        _ => string(text),
    };
    Node::new(value, mark)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(text: &str) -> Node {
        let p = parse(text);
        assert!(p.diags.is_empty(), "{:?}", p.diags);
        p.root.unwrap()
    }

    #[test]
    fn scalars_follow_the_core_schema() {
        let r =
            root("a: 1\nb: '1'\nc: true\nd: yes\ne: ~\nf: 1.5e3\ng: x${y}\nh: !!str 3\ni: 0x1F\n");
        assert_eq!(r.get("a").unwrap().value, Value::Num("1".into()));
        assert_eq!(r.get("b").unwrap().value, Value::Str("1".into()));
        assert_eq!(r.get("c").unwrap().value, Value::Bool(true));
        assert_eq!(r.get("d").unwrap().value, Value::Str("yes".into()));
        assert_eq!(r.get("e").unwrap().value, Value::Null);
        assert_eq!(r.get("f").unwrap().value, Value::Num("1.5e3".into()));
        assert_eq!(r.get("g").unwrap().value, Value::Template("x${y}".into()));
        assert_eq!(r.get("h").unwrap().value, Value::Str("3".into()));
        assert_eq!(r.get("i").unwrap().scalar_text().unwrap(), "31");
    }

    #[test]
    fn numbers() {
        for yes in
            ["0", "-3", "+4", "1.5", ".5", "1.", "1e9", "2.5E-3", ".inf", "-.Inf", ".nan", "0o17"]
        {
            assert!(is_number(yes), "{yes}");
        }
        for no in ["", ".", "-", "1.2.3", "1e", "abc", "12a", "0x", "1_000", "e5"] {
            assert!(!is_number(no), "{no}");
        }
    }

    #[test]
    fn marks_are_one_based() {
        let r = root("top:\n  key: value\n");
        let top = r.get("top").unwrap();
        assert_eq!(top.mark, Mark { line: 2, col: 3 });
        assert_eq!(top.get("key").unwrap().mark, Mark { line: 2, col: 8 });
    }

    #[test]
    fn aliases_and_merge_keys() {
        let r = root(
            "base: &b\n  x: 1\n  y: 2\nm:\n  <<: *b\n  y: 3\nn: *b\no:\n  <<: [{p: 1}, {p: 2, q: \
            2}]\n",
        );
        let m = r.get("m").unwrap();
        assert_eq!(m.get("x").unwrap().value, Value::Num("1".into()));
        assert_eq!(m.get("y").unwrap().value, Value::Num("3".into()));
        assert_eq!(r.get("n").unwrap().get("y").unwrap().value, Value::Num("2".into()));
        let o = r.get("o").unwrap();
        assert_eq!(o.get("p").unwrap().value, Value::Num("1".into()));
        assert_eq!(o.get("q").unwrap().value, Value::Num("2".into()));
    }

    #[test]
    fn duplicate_keys_and_custom_tags() {
        let p = parse("a: 1\nb:\n  c: 1\n  c: 2\nd: !Ref Table\n");
        assert_eq!(p.diags.len(), 1);
        assert_eq!(p.diags[0].mark, Mark { line: 4, col: 3 });
        assert_eq!(p.diags[0].field, "b.c");
        let d = p.root.unwrap();
        assert_eq!(d.get("d").unwrap().tag.as_deref(), Some("!Ref"));
    }

    #[test]
    fn a_second_document_is_refused() {
        // js-yaml's `load`, which Serverless uses, refuses it too; dropping it would drop keys.
        let p = parse("a: 1\n---\nb: 2\n");
        assert!(p.syntax_error);
        assert_eq!(p.diags[0].mark, Mark { line: 2, col: 1 });
        assert!(p.diags[0].message.starts_with("a second YAML document"));
        assert!(!parse("---\na: 1\n...\n").syntax_error);
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let p = parse("a: [1, 2\n");
        assert!(p.syntax_error);
        assert!(p.diags[0].message.starts_with("invalid YAML: "));
    }
}
