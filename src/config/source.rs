//! The located source tree: YAML and TOML documents (and, for the static configuration,
//! command-line flags and environment variables) turned into one [`Node`] tree whose every
//! key and value remembers the file, line and column it came from.
//!
//! This module only reads syntax. What the keys mean is the business of the schema types,
//! which are deserialized from the tree by [`crate::config::de`].

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use super::ConfigError;

/// Where a key or value was written. Lines and columns are 1-based; flags and environment
/// variables have no lines and use 0.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Location {
    pub file: Arc<str>,
    pub line: u32,
    pub column: u32,
}

impl Location {
    /// A location without a line: a flag or an environment variable.
    pub fn whole(file: impl Into<Arc<str>>) -> Location {
        Location {
            file: file.into(),
            line: 0,
            column: 0,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file)
        } else {
            write!(f, "{}:{}:{}", self.file, self.line, self.column)
        }
    }
}

/// How a scalar was written, which decides what an untyped reader (`deserialize_any`) makes
/// of it. Typed readers (a `bool` field, a duration) convert from the text whatever the kind,
/// as Traefik's decoder does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScalarKind {
    /// A YAML plain scalar, a flag or an environment value: may read as a bool or a number.
    Plain,
    /// A quoted YAML scalar or a TOML string: always text.
    Str,
    /// A TOML integer (text is its decimal form).
    Int,
    /// A TOML float.
    Float,
    /// A TOML boolean.
    Bool,
}

/// A map key with its own location, so an unknown key can be pointed at.
#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    pub name: String,
    pub location: Location,
}

#[derive(Clone, Debug, PartialEq)]
pub enum NodeKind {
    /// Entries in source order (TOML: key order).
    Map(Vec<(Key, Node)>),
    Seq(Vec<Node>),
    Scalar(String, ScalarKind),
    Null,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub kind: NodeKind,
    pub location: Location,
}

impl Node {
    pub fn new(kind: NodeKind, location: Location) -> Node {
        Node { kind, location }
    }

    /// The entries of a map node (`None` for anything else).
    pub fn entries(&self) -> Option<&[(Key, Node)]> {
        match &self.kind {
            NodeKind::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// The value of a map entry whose key matches `name` case-insensitively.
    pub fn get_ci(&self, name: &str) -> Option<&Node> {
        self.entries()?
            .iter()
            .find(|(k, _)| k.name.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Whether this node is an empty document (no content at all).
    pub fn is_empty_document(&self) -> bool {
        match &self.kind {
            NodeKind::Null => true,
            NodeKind::Map(entries) => entries.is_empty(),
            _ => false,
        }
    }

    /// Merges `over` into `self`: maps merge key by key (keys compared case-insensitively,
    /// since Traefik keys are), anything else is replaced. Used to layer flags and
    /// environment variables over a static configuration file.
    pub fn merge(&mut self, over: Node) {
        match (&mut self.kind, over.kind) {
            (NodeKind::Map(mine), NodeKind::Map(theirs)) => {
                for (key, value) in theirs {
                    match mine
                        .iter_mut()
                        .find(|(k, _)| k.name.eq_ignore_ascii_case(&key.name))
                    {
                        Some((_, existing)) => existing.merge(value),
                        None => mine.push((key, value)),
                    }
                }
            }
            (_, kind) => {
                self.kind = kind;
                self.location = over.location;
            }
        }
    }
}

/// The format of a configuration file, chosen by its extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Toml,
}

impl Format {
    /// `.toml` → TOML, `.yaml`/`.yml` → YAML (case-insensitive), anything else → `None`.
    pub fn from_path(path: &std::path::Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "toml" => Some(Format::Toml),
            "yaml" | "yml" => Some(Format::Yaml),
            _ => None,
        }
    }
}

/// Deepest nesting of maps and lists accepted in a file. Traefik's schema needs about ten
/// levels; the limit keeps a hostile `- - - - …` file from exhausting the stack in the
/// recursive steps after parsing (deserializing, cloning, dropping the tree).
pub const MAX_DEPTH: usize = 64;

/// Most values that YAML aliases may copy into one document: a few anchors that alias each
/// other several times would otherwise expand exponentially ("billion laughs").
pub const MAX_ALIAS_VALUES: usize = 100_000;

fn too_deep(location: Location) -> ConfigError {
    ConfigError::at(
        location,
        format!("maps and lists nest more than {MAX_DEPTH} levels deep here"),
    )
}

/// Parses `text` in the given format. `file` names the source in locations.
pub fn parse(text: &str, format: Format, file: &Arc<str>) -> Result<Node, ConfigError> {
    match format {
        Format::Yaml => parse_yaml(text, file),
        Format::Toml => parse_toml(text, file),
    }
}

// ---------------------------------------------------------------------------------------
// YAML

/// Parses the first YAML document of `text`. An empty stream is a `Null` node.
/// Anchors and aliases are expanded, `<<` merge keys applied (explicit keys win, then
/// earlier merge sources over later ones, as YAML 1.1 specifies), duplicate keys rejected.
/// Nesting is limited to [`MAX_DEPTH`] and alias expansion to [`MAX_ALIAS_VALUES`];
/// characters YAML does not allow (controls such as NUL) are errors.
pub fn parse_yaml(text: &str, file: &Arc<str>) -> Result<Node, ConfigError> {
    let text = without_bom(text);
    let end = scan_yaml_text(text, file)?;
    let mut builder = YamlBuilder {
        file: file.clone(),
        end,
        stack: Vec::new(),
        anchors: Vec::new(),
        alias_values: 0,
        root: None,
    };
    let mut in_document = false;
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| {
            let mark = e.marker();
            ConfigError::at(
                located_in_text(file, (mark.line(), mark.col()), end),
                format!("YAML syntax error: {}", e.info()),
            )
        })?;
        match event {
            Event::DocumentStart(_) => {
                if builder.root.is_some() {
                    // Like Traefik's decoder, only the first document is read.
                    break;
                }
                in_document = true;
            }
            Event::DocumentEnd => in_document = false,
            Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
            _ if !in_document => {}
            other => builder.event(other, span)?,
        }
    }
    Ok(builder.root.unwrap_or_else(|| {
        Node::new(
            NodeKind::Null,
            Location {
                file: file.clone(),
                line: 1,
                column: 1,
            },
        )
    }))
}

/// Drops a leading byte-order mark, which editors on Windows write and do not show: it would
/// otherwise become part of the first YAML key (and shift TOML columns on line 1).
fn without_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Checks that `text` holds only characters YAML allows, as Traefik's YAML reader does (the
/// parser would take a NUL for the end of the input and silently drop the rest), and
/// returns the line and column just after the last character, counting CRLF, CR and LF as
/// one line break each, as YAML does.
fn scan_yaml_text(text: &str, file: &Arc<str>) -> Result<(u32, u32), ConfigError> {
    let (mut line, mut column) = (1, 1);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' if chars.peek() == Some(&'\n') => {}
            '\r' | '\n' => (line, column) = (line + 1, 1),
            '\t'
            | ' '..='~'
            | '\u{85}'
            | '\u{a0}'..='\u{d7ff}'
            | '\u{e000}'..='\u{fffd}'
            | '\u{10000}'.. => column += 1,
            _ => {
                return Err(ConfigError::at(
                    Location {
                        file: file.clone(),
                        line: to_u32(line),
                        column: to_u32(column),
                    },
                    format!(
                        "character U+{:04X} is not allowed in YAML (only printable characters are)",
                        u32::from(c)
                    ),
                ));
            }
        }
    }
    Ok((to_u32(line), to_u32(column)))
}

/// The location of the parser's 1-based line and 0-based column. At the end of the input the
/// parser can be on the line after the last one (when the text does not end with a line
/// break); such places are pointed at the end of the text instead.
fn located_in_text(file: &Arc<str>, (line, col): (usize, usize), end: (u32, u32)) -> Location {
    let mut at = (to_u32(line), to_u32(col.saturating_add(1)));
    if at.0 > end.0 {
        at = end;
    }
    Location {
        file: file.clone(),
        line: at.0,
        column: at.1,
    }
}

enum Frame {
    Seq {
        items: Vec<Node>,
        location: Location,
        anchor: usize,
    },
    Map {
        entries: Vec<(Key, Node)>,
        /// The keys of `entries`, so that a duplicate is found without a scan (a
        /// configuration may have a hundred thousand routers).
        keys: HashSet<String>,
        merges: Vec<Node>,
        pending_key: Option<Key>,
        location: Location,
        anchor: usize,
    },
}

/// An anchored node with its measurements, so that an alias can be checked against the
/// limits before it is copied.
struct Anchor {
    id: usize,
    node: Node,
    depth: usize,
    values: usize,
}

struct YamlBuilder {
    file: Arc<str>,
    /// Where the text ends (see [`located_in_text`]).
    end: (u32, u32),
    stack: Vec<Frame>,
    anchors: Vec<Anchor>,
    /// Values copied by aliases so far.
    alias_values: usize,
    root: Option<Node>,
}

/// How deep `node` nests maps and lists (0 for a scalar) and how many values it holds.
/// Recursion is safe: every node was built under [`MAX_DEPTH`].
fn measure(node: &Node) -> (usize, usize) {
    let add = |(depth, values): (usize, usize), child: &Node| {
        let (d, v) = measure(child);
        (depth.max(d + 1), values + v)
    };
    match &node.kind {
        NodeKind::Map(entries) => entries.iter().map(|(_, v)| v).fold((1, 1), add),
        NodeKind::Seq(items) => items.iter().fold((1, 1), add),
        NodeKind::Scalar(..) | NodeKind::Null => (0, 1),
    }
}

impl YamlBuilder {
    fn location(&self, span: Span) -> Location {
        located_in_text(&self.file, (span.start.line(), span.start.col()), self.end)
    }

    fn event(&mut self, event: Event<'_>, span: Span) -> Result<(), ConfigError> {
        let location = self.location(span);
        match event {
            Event::Scalar(text, style, anchor, _tag) => {
                let kind = if style == ScalarStyle::Plain {
                    if matches!(&*text, "" | "~" | "null" | "Null" | "NULL") {
                        NodeKind::Null
                    } else {
                        NodeKind::Scalar(text.into_owned(), ScalarKind::Plain)
                    }
                } else {
                    NodeKind::Scalar(text.into_owned(), ScalarKind::Str)
                };
                let node = Node::new(kind, location);
                self.remember(anchor, &node);
                self.complete(node, style == ScalarStyle::Plain)
            }
            Event::Alias(id) => {
                let anchor = self
                    .anchors
                    .iter()
                    .rev()
                    .find(|a| a.id == id)
                    .ok_or_else(|| ConfigError::at(location.clone(), "unknown YAML alias"))?;
                if self.stack.len() + anchor.depth > MAX_DEPTH {
                    return Err(too_deep(location));
                }
                self.alias_values = self.alias_values.saturating_add(anchor.values);
                if self.alias_values > MAX_ALIAS_VALUES {
                    return Err(ConfigError::at(
                        location,
                        format!("YAML aliases expand to more than {MAX_ALIAS_VALUES} values"),
                    ));
                }
                let node = anchor.node.clone();
                self.complete(node, false)
            }
            Event::SequenceStart(anchor, _) => {
                if self.stack.len() >= MAX_DEPTH {
                    return Err(too_deep(location));
                }
                self.stack.push(Frame::Seq {
                    items: Vec::new(),
                    location,
                    anchor,
                });
                Ok(())
            }
            Event::MappingStart(anchor, _) => {
                if self.stack.len() >= MAX_DEPTH {
                    return Err(too_deep(location));
                }
                self.stack.push(Frame::Map {
                    entries: Vec::new(),
                    keys: HashSet::new(),
                    merges: Vec::new(),
                    pending_key: None,
                    location,
                    anchor,
                });
                Ok(())
            }
            Event::SequenceEnd => match self.stack.pop() {
                Some(Frame::Seq {
                    items,
                    location,
                    anchor,
                }) => {
                    let node = Node::new(NodeKind::Seq(items), location);
                    self.remember(anchor, &node);
                    self.complete(node, false)
                }
                _ => Err(ConfigError::at(location, "unbalanced YAML sequence")),
            },
            Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Map {
                    mut entries,
                    merges,
                    location,
                    anchor,
                    ..
                }) => {
                    apply_merges(&mut entries, merges)?;
                    let node = Node::new(NodeKind::Map(entries), location);
                    self.remember(anchor, &node);
                    self.complete(node, false)
                }
                _ => Err(ConfigError::at(location, "unbalanced YAML mapping")),
            },
            _ => Ok(()),
        }
    }

    fn remember(&mut self, anchor: usize, node: &Node) {
        if anchor > 0 {
            let (depth, values) = measure(node);
            self.anchors.push(Anchor {
                id: anchor,
                node: node.clone(),
                depth,
                values,
            });
        }
    }

    /// Places a finished node in its parent: an element, a key, or a key's value.
    fn complete(&mut self, node: Node, plain: bool) -> Result<(), ConfigError> {
        match self.stack.last_mut() {
            None => {
                self.root = Some(node);
                Ok(())
            }
            Some(Frame::Seq { items, .. }) => {
                items.push(node);
                Ok(())
            }
            Some(Frame::Map {
                entries,
                keys,
                merges,
                pending_key,
                ..
            }) => match pending_key.take() {
                None => {
                    let name = match node.kind {
                        NodeKind::Scalar(text, _) => text,
                        NodeKind::Null => String::new(),
                        _ => {
                            return Err(ConfigError::at(
                                node.location,
                                "a map key must be a scalar",
                            ));
                        }
                    };
                    // `<<` marks a merge only when written plain; `"<<"` is an ordinary key.
                    let name = if plain && name == "<<" {
                        MERGE_KEY.to_owned()
                    } else {
                        name
                    };
                    *pending_key = Some(Key {
                        name,
                        location: node.location,
                    });
                    Ok(())
                }
                Some(key) => {
                    if key.name == MERGE_KEY {
                        merges.push(node);
                        return Ok(());
                    }
                    if !keys.insert(key.name.clone()) {
                        return Err(ConfigError::at(
                            key.location,
                            format!("duplicate key \"{}\"", key.name),
                        ));
                    }
                    entries.push((key, node));
                    Ok(())
                }
            },
        }
    }
}

/// Internal marker for a plain `<<` key; cannot collide with a real key read from YAML
/// because it contains a NUL.
const MERGE_KEY: &str = "\0<<";

fn apply_merges(entries: &mut Vec<(Key, Node)>, merges: Vec<Node>) -> Result<(), ConfigError> {
    for merge in merges {
        let sources = match merge.kind {
            NodeKind::Map(_) => vec![merge],
            NodeKind::Seq(items) => items,
            _ => {
                return Err(ConfigError::at(
                    merge.location,
                    "a `<<` merge key needs a mapping or a list of mappings",
                ));
            }
        };
        for source in sources {
            let NodeKind::Map(source_entries) = source.kind else {
                return Err(ConfigError::at(
                    source.location,
                    "a `<<` merge key needs a mapping or a list of mappings",
                ));
            };
            for (key, value) in source_entries {
                if !entries.iter().any(|(k, _)| k.name == key.name) {
                    entries.push((key, value));
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// TOML

/// Parses a TOML document. Byte offsets from the parser become 1-based line:column
/// (columns counted in characters). Nesting is limited to [`MAX_DEPTH`].
pub fn parse_toml(text: &str, file: &Arc<str>) -> Result<Node, ConfigError> {
    let text = without_bom(text);
    let lines = LineIndex::new(text);
    // The parser reports some mistakes (bad strings) in a later pass than others (bad
    // structure), so its first error is not always the first one in the file: take the
    // earliest.
    let (table, errors) = toml::de::DeTable::parse_recoverable(text);
    let offset = |e: &toml::de::Error| e.span().map(|s| s.start).unwrap_or(0);
    if let Some(e) = errors.iter().min_by_key(|e| offset(e)) {
        return Err(ConfigError::at(
            lines.location(file, text, offset(e)),
            format!("TOML syntax error: {}", e.message().trim()),
        ));
    }
    let span = table.span();
    let conv = TomlConverter {
        file,
        text,
        lines: &lines,
    };
    conv.table(table.into_inner(), span.start, 1)
}

struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    fn location(&self, file: &Arc<str>, text: &str, offset: usize) -> Location {
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts[line - 1];
        let column = text
            .get(start..offset.min(text.len()))
            .map(|s| s.chars().count())
            .unwrap_or(0);
        Location {
            file: file.clone(),
            line: to_u32(line),
            column: to_u32(column + 1),
        }
    }
}

struct TomlConverter<'a> {
    file: &'a Arc<str>,
    text: &'a str,
    lines: &'a LineIndex,
}

impl TomlConverter<'_> {
    fn at(&self, offset: usize) -> Location {
        self.lines.location(self.file, self.text, offset)
    }

    /// Converts a table nested `depth` levels deep (the document is 1).
    fn table(
        &self,
        table: toml::de::DeTable<'_>,
        offset: usize,
        depth: usize,
    ) -> Result<Node, ConfigError> {
        if depth > MAX_DEPTH {
            return Err(too_deep(self.at(offset)));
        }
        let mut entries = Vec::with_capacity(table.len());
        for (key, value) in table {
            let key_location = self.at(key.span().start);
            let name = key.into_inner().into_owned();
            entries.push((
                Key {
                    name,
                    location: key_location,
                },
                self.value(value, depth)?,
            ));
        }
        Ok(Node::new(NodeKind::Map(entries), self.at(offset)))
    }

    /// Converts a value held by a table or array nested `depth` levels deep.
    fn value(
        &self,
        value: toml::Spanned<toml::de::DeValue<'_>>,
        depth: usize,
    ) -> Result<Node, ConfigError> {
        use toml::de::DeValue;
        let offset = value.span().start;
        let location = self.at(offset);
        let kind = match value.into_inner() {
            DeValue::String(s) => NodeKind::Scalar(s.into_owned(), ScalarKind::Str),
            DeValue::Integer(i) => {
                let digits: String = i.as_str().chars().filter(|c| *c != '_').collect();
                let n = i64::from_str_radix(&digits, i.radix()).map_err(|e| {
                    ConfigError::at(location.clone(), format!("invalid integer: {e}"))
                })?;
                NodeKind::Scalar(n.to_string(), ScalarKind::Int)
            }
            DeValue::Float(f) => NodeKind::Scalar(f.as_str().replace('_', ""), ScalarKind::Float),
            DeValue::Boolean(b) => NodeKind::Scalar(b.to_string(), ScalarKind::Bool),
            DeValue::Datetime(d) => NodeKind::Scalar(d.to_string(), ScalarKind::Str),
            DeValue::Array(items) => {
                if depth >= MAX_DEPTH {
                    return Err(too_deep(location));
                }
                NodeKind::Seq(
                    items
                        .into_iter()
                        .map(|item| self.value(item, depth + 1))
                        .collect::<Result<_, _>>()?,
                )
            }
            DeValue::Table(table) => return self.table(table, offset, depth + 1),
        };
        Ok(Node::new(kind, location))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> Arc<str> {
        Arc::from("test.yml")
    }

    fn scalar<'a>(node: &'a Node, path: &[&str]) -> &'a str {
        let mut n = node;
        for p in path {
            n = n.get_ci(p).unwrap_or_else(|| panic!("missing {p}"));
        }
        match &n.kind {
            NodeKind::Scalar(s, _) => s,
            other => panic!("not a scalar: {other:?}"),
        }
    }

    #[test]
    fn yaml_values_carry_line_and_column() {
        let node = parse_yaml(
            "http:\n  routers:\n    r:\n      rule: Host(`a`)\n",
            &file(),
        )
        .expect("parses");
        let rule = node
            .get_ci("http")
            .and_then(|n| n.get_ci("routers"))
            .and_then(|n| n.get_ci("r"))
            .and_then(|n| n.get_ci("rule"))
            .expect("rule");
        assert_eq!((rule.location.line, rule.location.column), (4, 13));
        let NodeKind::Map(entries) = &node.get_ci("http").expect("http").kind else {
            panic!("map")
        };
        assert_eq!(
            (entries[0].0.location.line, entries[0].0.location.column),
            (2, 3)
        );
    }

    #[test]
    fn yaml_aliases_and_merge_keys_expand() {
        let text = "base: &base\n  a: 1\n  b: 2\nother:\n  <<: *base\n  b: 3\nlist: [*base]\n";
        let node = parse_yaml(text, &file()).expect("parses");
        assert_eq!(scalar(&node, &["other", "a"]), "1");
        assert_eq!(scalar(&node, &["other", "b"]), "3");
        let NodeKind::Seq(items) = &node.get_ci("list").expect("list").kind else {
            panic!("seq")
        };
        assert_eq!(scalar(&items[0], &["b"]), "2");
    }

    #[test]
    fn yaml_merge_of_a_list_prefers_earlier_sources() {
        let text = "x: &x {a: 1}\ny: &y {a: 2, c: 3}\nz:\n  <<: [*x, *y]\n";
        let node = parse_yaml(text, &file()).expect("parses");
        assert_eq!(scalar(&node, &["z", "a"]), "1");
        assert_eq!(scalar(&node, &["z", "c"]), "3");
    }

    #[test]
    fn yaml_duplicate_key_is_an_error_at_the_second_key() {
        let err = parse_yaml("a: 1\na: 2\n", &file()).expect_err("duplicate");
        assert_eq!(err.location.map(|l| l.line), Some(2));
    }

    #[test]
    fn yaml_syntax_error_is_located() {
        let err = parse_yaml("a: [1, 2\nb: 3\n", &file()).expect_err("syntax");
        assert!(err.message.contains("YAML"), "{err}");
        assert!(err.location.is_some());
    }

    #[test]
    fn yaml_error_at_the_end_of_input_points_at_the_last_line() {
        let at = |text: &str| {
            parse_yaml(text, &file())
                .expect_err("unclosed list")
                .location
                .map(|l| (l.line, l.column))
        };
        assert_eq!(at("a: [1, 2"), Some((1, 9)));
        assert_eq!(at("a: [1, 2\rb"), Some((2, 2)));
        // After a final line break the end of the input is the empty last line.
        assert_eq!(at("a: [1, 2\r\n"), Some((2, 1)));
    }

    #[test]
    fn yaml_values_at_the_end_of_input_stay_on_the_last_line() {
        let node = parse_yaml("a: &x", &file()).expect("parses");
        let value = node.get_ci("a").expect("a");
        assert_eq!((value.location.line, value.location.column), (1, 6));
    }

    #[test]
    fn yaml_control_characters_are_located_errors() {
        let err = parse_yaml("a: 1\nb: x\0y: 2\n", &file()).expect_err("NUL");
        assert!(err.message.contains("U+0000"), "{err}");
        assert_eq!(err.location.map(|l| (l.line, l.column)), Some((2, 5)));
        let err = parse_yaml("a: 1\r\nb: \u{7f}\n", &file()).expect_err("DEL");
        assert_eq!(err.location.map(|l| (l.line, l.column)), Some((2, 4)));
        let node = parse_yaml("a:\t\"\u{e9}\u{feff}\u{1f600}\"\r\n", &file()).expect("printable");
        assert_eq!(scalar(&node, &["a"]), "\u{e9}\u{feff}\u{1f600}");
    }

    #[test]
    fn a_leading_byte_order_mark_is_not_part_of_the_first_key() {
        let node = parse_yaml("\u{feff}http: {}\n", &file()).expect("parses");
        let NodeKind::Map(entries) = &node.kind else {
            panic!("map")
        };
        assert_eq!(entries[0].0.name, "http");
        let node = parse_toml("\u{feff}a = 1\n", &Arc::from("t.toml")).expect("parses");
        let NodeKind::Map(entries) = &node.kind else {
            panic!("map")
        };
        assert_eq!(
            (entries[0].0.name.as_str(), entries[0].0.location.column),
            ("a", 1)
        );
    }

    #[test]
    fn yaml_empty_document_is_null() {
        let node = parse_yaml("# only a comment\n", &file()).expect("parses");
        assert!(node.is_empty_document());
    }

    #[test]
    fn yaml_quoted_and_plain_scalars_differ_in_kind() {
        let node = parse_yaml("a: 'true'\nb: true\nc: ~\n", &file()).expect("parses");
        assert!(matches!(
            node.get_ci("a").map(|n| &n.kind),
            Some(NodeKind::Scalar(_, ScalarKind::Str))
        ));
        assert!(matches!(
            node.get_ci("b").map(|n| &n.kind),
            Some(NodeKind::Scalar(_, ScalarKind::Plain))
        ));
        assert!(matches!(
            node.get_ci("c").map(|n| &n.kind),
            Some(NodeKind::Null)
        ));
    }

    #[test]
    fn toml_spans_become_line_and_column() {
        let text = "[http.routers.r]\n  rule = \"Host(`a`)\"\n  priority = 0x10\n";
        let node = parse_toml(text, &Arc::from("t.toml")).expect("parses");
        let r = node
            .get_ci("http")
            .and_then(|n| n.get_ci("routers"))
            .and_then(|n| n.get_ci("r"))
            .expect("router");
        let rule = r.get_ci("rule").expect("rule");
        assert_eq!((rule.location.line, rule.location.column), (2, 10));
        assert_eq!(scalar(r, &["priority"]), "16");
    }

    #[test]
    fn toml_syntax_error_is_located() {
        let err = parse_toml("a = 1\nb = = 2\n", &Arc::from("t.toml")).expect_err("syntax");
        assert_eq!(err.location.map(|l| l.line), Some(2));
    }

    #[test]
    fn yaml_nesting_past_the_limit_is_a_located_error() {
        let text = format!("{}x\n", "- ".repeat(100_000));
        let err = parse_yaml(&text, &file()).expect_err("too deep");
        assert!(err.message.contains("more than 64 levels deep"), "{err}");
        // The 65th `- ` opens the list that is one too many.
        assert_eq!(
            err.location.map(|l| (l.line, l.column)),
            Some((1, 2 * MAX_DEPTH as u32 + 1))
        );
        let flow = format!("a: {}\n", "[".repeat(100_000));
        let err = parse_yaml(&flow, &file()).expect_err("too deep");
        assert_eq!(err.location.map(|l| l.line), Some(1));
    }

    #[test]
    fn yaml_nesting_at_the_limit_parses() {
        let at_limit = format!("{}x{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        let node = parse_yaml(&at_limit, &file()).expect("parses");
        assert_eq!(measure(&node).0, MAX_DEPTH);
        let err = parse_yaml(&format!("[{at_limit}]"), &file()).expect_err("one too deep");
        assert!(err.message.contains("levels deep"), "{err}");
    }

    #[test]
    fn yaml_alias_cannot_nest_past_the_limit() {
        let nested = format!(
            "{}x{}",
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        );
        parse_yaml(&format!("a: &a {nested}\nb: *a\n"), &file()).expect("at the limit");
        let err = parse_yaml(&format!("a: &a {nested}\nb: [*a]\n"), &file())
            .expect_err("alias one level too deep");
        assert!(err.message.contains("levels deep"), "{err}");
        assert_eq!(err.location.map(|l| (l.line, l.column)), Some((2, 5)));
    }

    #[test]
    fn yaml_alias_expansion_is_bounded() {
        let mut text = String::from("l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..5 {
            let prev = format!("*l{}", level - 1);
            let items = [prev.as_str(); 10].join(", ");
            text.push_str(&format!("l{level}: &l{level} [{items}]\n"));
        }
        let err = parse_yaml(&text, &file()).expect_err("exponential expansion");
        assert!(err.message.contains("aliases expand"), "{err}");
        assert_eq!(err.location.map(|l| l.line), Some(5));
    }

    #[test]
    fn toml_nesting_past_the_limit_is_a_located_error() {
        let file: Arc<str> = Arc::from("t.toml");
        let header = |n| vec!["a"; n].join(".");
        let node = parse_toml(&format!("[{}]\nx = 1\n", header(MAX_DEPTH - 1)), &file)
            .expect("the document and 63 tables are at the limit");
        assert_eq!(measure(&node).0, MAX_DEPTH);
        let err =
            parse_toml(&format!("x = 1\n[{}]\n", header(MAX_DEPTH)), &file).expect_err("too deep");
        assert!(err.message.contains("levels deep"), "{err}");
        assert_eq!(err.location.map(|l| l.line), Some(2));
        let arrays = format!(
            "[{}]\nx = {}1{}\n",
            header(40),
            "[".repeat(30),
            "]".repeat(30)
        );
        let err = parse_toml(&arrays, &file).expect_err("tables and arrays add up");
        assert!(err.message.contains("levels deep"), "{err}");
        let err = parse_toml(&format!("x = {}\n", "[".repeat(100_000)), &file)
            .expect_err("the TOML parser's own limit");
        assert_eq!(err.location.map(|l| l.line), Some(1));
    }

    #[test]
    fn toml_reports_the_first_syntax_error_in_the_file() {
        let text = "rule = \"Host(`a.test`)\nservice = = \"x\"\n";
        let err = parse_toml(text, &Arc::from("t.toml")).expect_err("syntax");
        assert_eq!(err.location.map(|l| l.line), Some(1), "{}", err.message);
        assert!(err.message.contains("string"), "{}", err.message);
    }

    #[test]
    fn merge_replaces_scalars_and_merges_maps_case_insensitively() {
        let mut base =
            parse_yaml("entryPoints:\n  web:\n    address: ':80'\n", &file()).expect("parses");
        let over =
            parse_yaml("entrypoints:\n  web:\n    address: ':81'\n", &file()).expect("parses");
        base.merge(over);
        assert_eq!(scalar(&base, &["entryPoints", "web", "address"]), ":81");
    }
}
