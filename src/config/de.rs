//! A serde `Deserializer` over the located [`Node`] tree, converting the way Traefik's
//! decoder (paerser) does, so that the schema types are plain `#[derive(Deserialize)]`
//! structs with `deny_unknown_fields`:
//!
//! - struct field names match case-insensitively (`entrypoints` = `entryPoints`); user-chosen
//!   map keys (router names…) keep their case;
//! - scalars convert by text: `"true"` is a bool, `"8080"` a number, `8080` a string;
//! - a plain value (`true`, or an empty value) where a section is expected enables it with
//!   its defaults (`compress: true`, `--api`), as paerser ignores such values;
//! - every error carries the location of the innermost node it concerns.
//!
//! It also provides [`Located`] (a value with its source location) and [`Duration`]
//! (Go duration syntax, bare integers are seconds).

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};
use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::source::{Key, Location, Node, NodeKind, ScalarKind};

/// Deserializes `T` from `node`. Errors carry the location of the offending node.
pub fn from_node<'de, T: Deserialize<'de>>(node: &'de Node) -> Result<T, ConfigError> {
    T::deserialize(node).map_err(|e| e.or_location(&node.location))
}

impl de::Error for ConfigError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ConfigError {
            location: None,
            message: msg.to_string(),
        }
    }
}

fn type_error(node: &Node, expected: &str) -> ConfigError {
    let found = match &node.kind {
        NodeKind::Map(_) => "a map".to_owned(),
        NodeKind::Seq(_) => "a list".to_owned(),
        NodeKind::Scalar(s, _) => format!("\"{s}\""),
        NodeKind::Null => "an empty value".to_owned(),
    };
    ConfigError::at(
        node.location.clone(),
        format!("expected {expected}, found {found}"),
    )
}

/// Go's `strconv.ParseBool`, which paerser uses.
fn parse_bool(text: &str) -> Option<bool> {
    match text.trim() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

macro_rules! deserialize_number {
    ($method:ident, $visit:ident, $ty:ty, $what:literal) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
            match &self.kind {
                NodeKind::Scalar(text, _) => {
                    let t = text.trim();
                    let t = t.strip_prefix('+').unwrap_or(t);
                    match t.parse::<$ty>() {
                        Ok(n) => visitor.$visit(n),
                        Err(_) => Err(type_error(self, $what)),
                    }
                }
                _ => Err(type_error(self, $what)),
            }
        }
    };
}

impl<'de> Deserializer<'de> for &'de Node {
    type Error = ConfigError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        match &self.kind {
            NodeKind::Map(entries) => visitor.visit_map(NodeMap::new(entries, None)),
            NodeKind::Seq(items) => visitor.visit_seq(NodeSeq { iter: items.iter() }),
            NodeKind::Null => visitor.visit_unit(),
            NodeKind::Scalar(text, kind) => match kind {
                ScalarKind::Str => visitor.visit_borrowed_str(text),
                ScalarKind::Bool => match parse_bool(text) {
                    Some(b) => visitor.visit_bool(b),
                    None => visitor.visit_borrowed_str(text),
                },
                ScalarKind::Int | ScalarKind::Float | ScalarKind::Plain => {
                    if let Ok(n) = text.parse::<i64>() {
                        visitor.visit_i64(n)
                    } else if let Ok(n) = text.parse::<u64>() {
                        visitor.visit_u64(n)
                    } else if *kind != ScalarKind::Int
                        && let Ok(f) = text.parse::<f64>()
                        && (*kind == ScalarKind::Float || looks_numeric(text))
                    {
                        visitor.visit_f64(f)
                    } else if *kind == ScalarKind::Plain
                        && let Some(b) = yaml_bool(text)
                    {
                        visitor.visit_bool(b)
                    } else {
                        visitor.visit_borrowed_str(text)
                    }
                }
            },
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        match &self.kind {
            NodeKind::Scalar(text, _) => match parse_bool(text) {
                Some(b) => visitor.visit_bool(b),
                None => Err(type_error(self, "a boolean")),
            },
            // `key:` with no value is how YAML users write "enabled".
            NodeKind::Null => visitor.visit_bool(true),
            _ => Err(type_error(self, "a boolean")),
        }
    }

    deserialize_number!(deserialize_i8, visit_i8, i8, "an integer");
    deserialize_number!(deserialize_i16, visit_i16, i16, "an integer");
    deserialize_number!(deserialize_i32, visit_i32, i32, "an integer");
    deserialize_number!(deserialize_i64, visit_i64, i64, "an integer");
    deserialize_number!(deserialize_u8, visit_u8, u8, "a non-negative integer");
    deserialize_number!(deserialize_u16, visit_u16, u16, "a non-negative integer");
    deserialize_number!(deserialize_u32, visit_u32, u32, "a non-negative integer");
    deserialize_number!(deserialize_u64, visit_u64, u64, "a non-negative integer");
    deserialize_number!(deserialize_f32, visit_f32, f32, "a number");
    deserialize_number!(deserialize_f64, visit_f64, f64, "a number");

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        match &self.kind {
            NodeKind::Scalar(text, _) => visitor.visit_borrowed_str(text),
            NodeKind::Null => visitor.visit_borrowed_str(""),
            _ => Err(type_error(self, "a string")),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        match &self.kind {
            NodeKind::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        match &self.kind {
            NodeKind::Null => visitor.visit_unit(),
            NodeKind::Map(entries) if entries.is_empty() => visitor.visit_unit(),
            _ => Err(type_error(self, "an empty value")),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ConfigError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ConfigError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        match &self.kind {
            NodeKind::Seq(items) => visitor.visit_seq(NodeSeq { iter: items.iter() }),
            NodeKind::Null => visitor.visit_seq(NodeSeq { iter: [].iter() }),
            // paerser reads a scalar where a list is expected as a comma-separated list
            // (that is how flags and environment variables write lists).
            NodeKind::Scalar(text, _) => visitor.visit_seq(CommaSeq {
                parts: text.split(',').map(str::trim).filter(|s| !s.is_empty()),
                location: &self.location,
            }),
            NodeKind::Map(_) => Err(type_error(self, "a list")),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, ConfigError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, ConfigError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        match &self.kind {
            NodeKind::Map(entries) => visitor.visit_map(NodeMap::new(entries, None)),
            NodeKind::Null => visitor.visit_map(NodeMap::new(&[], None)),
            _ => Err(type_error(self, "a map")),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ConfigError> {
        if name == LOCATED_NAME {
            return visitor.visit_map(LocatedAccess {
                node: self,
                step: 0,
            });
        }
        match &self.kind {
            NodeKind::Map(entries) => visitor.visit_map(NodeMap::new(entries, Some(fields))),
            // An empty section, or `true`, enables the section with its defaults.
            NodeKind::Null => visitor.visit_map(NodeMap::new(&[], Some(fields))),
            // Like Traefik's decoder, a section written as a plain value (`compress: true`,
            // or even a list of values) has no options: it is enabled with its defaults.
            NodeKind::Scalar(..) => visitor.visit_map(NodeMap::new(&[], Some(fields))),
            NodeKind::Seq(items)
                if items
                    .iter()
                    .all(|i| matches!(i.kind, NodeKind::Scalar(..) | NodeKind::Null)) =>
            {
                visitor.visit_map(NodeMap::new(&[], Some(fields)))
            }
            _ => Err(type_error(self, "a map")),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ConfigError> {
        match &self.kind {
            NodeKind::Scalar(text, _) => visitor.visit_enum(NodeEnum {
                variant: canonical(text, variants),
                variant_location: &self.location,
                value: None,
            }),
            NodeKind::Map(entries) if entries.len() == 1 => {
                let (key, value) = &entries[0];
                visitor.visit_enum(NodeEnum {
                    variant: canonical(&key.name, variants),
                    variant_location: &key.location,
                    value: Some(value),
                })
            }
            _ => Err(type_error(self, &format!("one of {}", variants.join(", ")))),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        visitor.visit_unit()
    }
}

fn looks_numeric(text: &str) -> bool {
    let t = text.trim_start_matches(['+', '-']);
    t.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && !t.eq_ignore_ascii_case("inf")
        && !t.eq_ignore_ascii_case("nan")
}

/// Booleans as YAML 1.2's core schema writes them (what an untyped reader should see).
fn yaml_bool(text: &str) -> Option<bool> {
    match text {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// The schema's spelling of `key` when it matches one case-insensitively, else `key`.
fn canonical<'a>(key: &'a str, names: &'static [&'static str]) -> &'a str {
    names
        .iter()
        .find(|n| n.eq_ignore_ascii_case(key))
        .copied()
        .unwrap_or(key)
}

struct NodeMap<'de> {
    iter: std::slice::Iter<'de, (Key, Node)>,
    fields: Option<&'static [&'static str]>,
    value: Option<&'de Node>,
}

impl<'de> NodeMap<'de> {
    fn new(entries: &'de [(Key, Node)], fields: Option<&'static [&'static str]>) -> Self {
        NodeMap {
            iter: entries.iter(),
            fields,
            value: None,
        }
    }
}

impl<'de> MapAccess<'de> for NodeMap<'de> {
    type Error = ConfigError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ConfigError> {
        let Some((key, value)) = self.iter.next() else {
            return Ok(None);
        };
        self.value = Some(value);
        let name = match self.fields {
            Some(fields) => canonical(&key.name, fields),
            None => key.name.as_str(),
        };
        seed.deserialize(KeyDeserializer { name })
            .map(Some)
            .map_err(|e| e.or_location(&key.location))
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<S::Value, ConfigError> {
        let value = self
            .value
            .take()
            .ok_or_else(|| <ConfigError as de::Error>::custom("value requested before key"))?;
        seed.deserialize(value)
            .map_err(|e| e.or_location(&value.location))
    }
}

struct NodeSeq<'de> {
    iter: std::slice::Iter<'de, Node>,
}

impl<'de> SeqAccess<'de> for NodeSeq<'de> {
    type Error = ConfigError;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, ConfigError> {
        match self.iter.next() {
            None => Ok(None),
            Some(node) => seed
                .deserialize(node)
                .map(Some)
                .map_err(|e| e.or_location(&node.location)),
        }
    }
}

struct CommaSeq<'de, I> {
    parts: I,
    location: &'de Location,
}

impl<'de, I: Iterator<Item = &'de str>> SeqAccess<'de> for CommaSeq<'de, I> {
    type Error = ConfigError;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, ConfigError> {
        match self.parts.next() {
            None => Ok(None),
            Some(part) => seed
                .deserialize(KeyDeserializer { name: part })
                .map(Some)
                .map_err(|e| e.or_location(self.location)),
        }
    }
}

/// Deserializes a key (or one part of a comma-separated scalar): text, converted on demand.
struct KeyDeserializer<'de> {
    name: &'de str,
}

impl<'de> Deserializer<'de> for KeyDeserializer<'de> {
    type Error = ConfigError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        visitor.visit_borrowed_str(self.name)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        match parse_bool(self.name) {
            Some(b) => visitor.visit_bool(b),
            None => visitor.visit_borrowed_str(self.name),
        }
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        match self.name.trim().parse::<i64>() {
            Ok(n) => visitor.visit_i64(n),
            Err(_) => visitor.visit_borrowed_str(self.name),
        }
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        match self.name.trim().parse::<u64>() {
            Ok(n) => visitor.visit_u64(n),
            Err(_) => visitor.visit_borrowed_str(self.name),
        }
    }

    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        self.deserialize_i64(visitor)
    }

    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ConfigError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ConfigError> {
        visitor.visit_enum(canonical(self.name, variants).into_deserializer())
    }

    serde::forward_to_deserialize_any! {
        i8 i16 u8 f32 f64 char str string bytes byte_buf unit unit_struct seq tuple
        tuple_struct map struct identifier ignored_any i128 u128
    }
}

struct NodeEnum<'de> {
    variant: &'de str,
    variant_location: &'de Location,
    value: Option<&'de Node>,
}

impl<'de> EnumAccess<'de> for NodeEnum<'de> {
    type Error = ConfigError;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self), ConfigError> {
        let v = seed
            .deserialize(KeyDeserializer { name: self.variant })
            .map_err(|e| e.or_location(self.variant_location))?;
        Ok((v, self))
    }
}

impl<'de> VariantAccess<'de> for NodeEnum<'de> {
    type Error = ConfigError;

    fn unit_variant(self) -> Result<(), ConfigError> {
        match self.value {
            None => Ok(()),
            Some(node) => <() as Deserialize>::deserialize(node),
        }
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<S::Value, ConfigError> {
        match self.value {
            Some(node) => seed.deserialize(node),
            None => Err(ConfigError::at(
                self.variant_location.clone(),
                format!("\"{}\" needs a value", self.variant),
            )),
        }
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, ConfigError> {
        match self.value {
            Some(node) => node.deserialize_seq(visitor),
            None => Err(ConfigError::at(
                self.variant_location.clone(),
                format!("\"{}\" needs a list", self.variant),
            )),
        }
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ConfigError> {
        match self.value {
            Some(node) => node.deserialize_struct("", fields, visitor),
            None => Err(ConfigError::at(
                self.variant_location.clone(),
                format!("\"{}\" needs a map", self.variant),
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Located<T>

/// The magic struct name through which [`Located`] asks this deserializer for a location
/// (the trick `serde_spanned` uses with the TOML deserializer).
const LOCATED_NAME: &str = "$__sallyport_located";
const LOCATED_FILE: &str = "$__sallyport_located_file";
const LOCATED_LINE: &str = "$__sallyport_located_line";
const LOCATED_COLUMN: &str = "$__sallyport_located_column";
const LOCATED_VALUE: &str = "$__sallyport_located_value";
const LOCATED_FIELDS: &[&str] = &[LOCATED_FILE, LOCATED_LINE, LOCATED_COLUMN, LOCATED_VALUE];

/// A value with the location it was read from, so validation can point at it.
/// The location is `None` when the value was built in code or by another deserializer.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(transparent)]
pub struct Located<T> {
    pub value: T,
    #[serde(skip)]
    pub location: Option<Location>,
}

impl<T> Located<T> {
    pub fn new(value: T) -> Located<T> {
        Located {
            value,
            location: None,
        }
    }

    pub fn at(value: T, location: Location) -> Located<T> {
        Located {
            value,
            location: Some(location),
        }
    }
}

impl<T: PartialEq> PartialEq for Located<T> {
    /// Equality is the value's: where it was written does not change what it means.
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl<T> std::ops::Deref for Located<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

struct LocatedAccess<'de> {
    node: &'de Node,
    step: usize,
}

impl<'de> MapAccess<'de> for LocatedAccess<'de> {
    type Error = ConfigError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ConfigError> {
        match LOCATED_FIELDS.get(self.step) {
            Some(name) => seed.deserialize(KeyDeserializer { name }).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<S::Value, ConfigError> {
        let step = self.step;
        self.step += 1;
        let loc = &self.node.location;
        match step {
            0 => seed.deserialize(loc.file.as_ref().into_deserializer()),
            1 => seed.deserialize(loc.line.into_deserializer()),
            2 => seed.deserialize(loc.column.into_deserializer()),
            _ => seed.deserialize(self.node),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LocatedVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for LocatedVisitor<T> {
            type Value = Located<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a located value")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Located<T>, A::Error> {
                let mut file: Option<String> = None;
                let mut line = 0u32;
                let mut column = 0u32;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        LOCATED_FILE => file = Some(map.next_value()?),
                        LOCATED_LINE => line = map.next_value()?,
                        LOCATED_COLUMN => column = map.next_value()?,
                        LOCATED_VALUE => {
                            let value = map.next_value()?;
                            return Ok(Located {
                                value,
                                location: file.map(|f| Location {
                                    file: Arc::from(f),
                                    line,
                                    column,
                                }),
                            });
                        }
                        other => {
                            return Err(de::Error::custom(format!(
                                "unexpected key {other} in a located value"
                            )));
                        }
                    }
                }
                Err(de::Error::custom("located value without a value"))
            }
        }

        deserializer.deserialize_struct(LOCATED_NAME, LOCATED_FIELDS, LocatedVisitor(PhantomData))
    }
}

// ---------------------------------------------------------------------------------------
// Duration

/// A Go-style duration as Traefik reads it: `10s`, `1m30s`, `250ms`, `2.5s`, `1h`, or a bare
/// integer meaning seconds. May be negative (several Traefik options give negative values a
/// meaning, e.g. "never" or "flush on every write"), so it is kept as signed nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration {
    nanos: i64,
}

impl Duration {
    pub const ZERO: Duration = Duration { nanos: 0 };

    pub const fn from_secs(secs: i64) -> Duration {
        Duration {
            nanos: secs.saturating_mul(1_000_000_000),
        }
    }

    pub const fn from_millis(millis: i64) -> Duration {
        Duration {
            nanos: millis.saturating_mul(1_000_000),
        }
    }

    pub const fn from_nanos(nanos: i64) -> Duration {
        Duration { nanos }
    }

    pub const fn as_nanos(self) -> i64 {
        self.nanos
    }

    pub const fn is_zero(self) -> bool {
        self.nanos == 0
    }

    pub const fn is_negative(self) -> bool {
        self.nanos < 0
    }

    /// The duration as a `std::time::Duration`; `None` when negative.
    pub fn to_std(self) -> Option<std::time::Duration> {
        u64::try_from(self.nanos)
            .ok()
            .map(std::time::Duration::from_nanos)
    }

    /// Parses Traefik's syntax: a bare integer is seconds, otherwise Go's
    /// `time.ParseDuration` syntax.
    pub fn parse(text: &str) -> Result<Duration, String> {
        let t = text.trim();
        if let Ok(secs) = t.parse::<i64>() {
            return secs
                .checked_mul(1_000_000_000)
                .map(Duration::from_nanos)
                .ok_or_else(|| format!("duration \"{text}\" is out of range"));
        }
        parse_go_duration(t).ok_or_else(|| {
            format!(
                "invalid duration \"{text}\" (use a number of seconds or a Go duration such as 10s, 1m30s, 250ms)"
            )
        })
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos == 0 {
            return f.write_str("0s");
        }
        if self.nanos % 1_000_000_000 == 0 {
            write!(f, "{}s", self.nanos / 1_000_000_000)
        } else if self.nanos % 1_000_000 == 0 {
            write!(f, "{}ms", self.nanos / 1_000_000)
        } else {
            write!(f, "{}ns", self.nanos)
        }
    }
}

/// Go's `time.ParseDuration`: `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+`, or `0`.
fn parse_go_duration(text: &str) -> Option<Duration> {
    let (negative, mut rest) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    let mut exact: i128 = 0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..num_end];
        if number.is_empty() || number == "." {
            return None;
        }
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        match number.split_once('.') {
            None => exact += number.parse::<i128>().ok()? * scale,
            Some((int, frac)) => {
                let int: i128 = if int.is_empty() { 0 } else { int.parse().ok()? };
                exact += int * scale;
                if !frac.is_empty() {
                    let f: f64 = format!("0.{frac}").parse().ok()?;
                    total += f * scale as f64;
                }
            }
        }
    }
    let nanos = exact + total.round() as i128;
    let nanos = i64::try_from(if negative { -nanos } else { nanos }).ok()?;
    Some(Duration::from_nanos(nanos))
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;

        impl Visitor<'_> for DurationVisitor {
            type Value = Duration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration (seconds, or Go syntax such as 10s)")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                Duration::parse(v).map_err(E::custom)
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                Duration::parse(&v.to_string()).map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Duration::parse(&v.to_string()).map_err(E::custom)
            }
        }

        deserializer.deserialize_str(DurationVisitor)
    }
}

impl Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::source::{parse_toml, parse_yaml};
    use std::collections::BTreeMap;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Router {
        #[serde(default)]
        entry_points: Vec<String>,
        rule: Located<String>,
        #[serde(default)]
        priority: i64,
        tls: Option<Tls>,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Tls {
        #[serde(default)]
        passthrough: bool,
    }

    fn yaml(text: &str) -> Node {
        parse_yaml(text, &Arc::from("t.yml")).expect("valid yaml")
    }

    #[test]
    fn struct_fields_match_case_insensitively_but_map_keys_keep_case() {
        let node = yaml("MyRouter:\n  ENTRYPOINTS: [web]\n  Rule: Host(`a`)\n  priority: '7'\n");
        let routers: BTreeMap<String, Router> = from_node(&node).expect("deserializes");
        let r = &routers["MyRouter"];
        assert_eq!(r.entry_points, vec!["web"]);
        assert_eq!(r.rule.value, "Host(`a`)");
        assert_eq!(r.priority, 7);
    }

    #[test]
    fn unknown_field_is_an_error_at_the_key() {
        let node = yaml("rule: x\n\n  \nbogus: 1\n");
        let err = from_node::<Router>(&node).expect_err("unknown field");
        assert!(err.message.contains("bogus"), "{err}");
        let loc = err.location.clone().expect("located");
        assert_eq!((loc.line, loc.column), (4, 1));
        assert_eq!(err.to_string(), format!("t.yml:4:1: {}", err.message));
    }

    #[test]
    fn nested_error_points_at_the_innermost_value() {
        let node = yaml("rule: x\ntls:\n  passthrough: maybe\n");
        let err = from_node::<Router>(&node).expect_err("bad bool");
        let loc = err.location.expect("located");
        assert_eq!((loc.line, loc.column), (3, 16));
    }

    #[test]
    fn located_values_know_where_they_were_written() {
        let node = yaml("rule: Host(`a`)\n");
        let r: Router = from_node(&node).expect("deserializes");
        let loc = r.rule.location.expect("located");
        assert_eq!((loc.line, loc.column, &*loc.file), (1, 7, "t.yml"));
    }

    #[test]
    fn true_or_empty_enables_a_section_with_defaults() {
        let r: Router = from_node(&yaml("rule: x\ntls: true\n")).expect("deserializes");
        assert_eq!(r.tls, Some(Tls::default()));
        let r: Router = from_node(&yaml("rule: x\ntls: {}\n")).expect("deserializes");
        assert_eq!(r.tls, Some(Tls::default()));
    }

    #[test]
    fn toml_numbers_read_as_strings_and_strings_as_numbers() {
        let node =
            parse_toml("rule = 42\npriority = \"12\"\n", &Arc::from("t.toml")).expect("valid toml");
        let r: Router = from_node(&node).expect("deserializes");
        assert_eq!(r.rule.value, "42");
        assert_eq!(r.priority, 12);
    }

    #[test]
    fn missing_field_is_an_error_at_the_map() {
        let node = yaml("x:\n  priority: 1\n");
        let err = from_node::<BTreeMap<String, Router>>(&node).expect_err("missing rule");
        assert!(err.message.contains("rule"), "{err}");
        assert_eq!(err.location.map(|l| l.line), Some(2));
    }

    #[test]
    fn comma_separated_scalar_reads_as_a_list() {
        let r: Router =
            from_node(&yaml("rule: x\nentryPoints: 'web, websecure'\n")).expect("deserializes");
        assert_eq!(r.entry_points, vec!["web", "websecure"]);
    }

    #[test]
    fn untyped_values_infer_yaml_types() {
        let v: serde_json::Value =
            from_node(&yaml("a: 1\nb: true\nc: '1'\nd: 1.5\ne: text\n")).expect("deserializes");
        assert_eq!(
            v,
            serde_json::json!({"a": 1, "b": true, "c": "1", "d": 1.5, "e": "text"})
        );
    }

    #[test]
    fn durations_parse_go_syntax_and_bare_seconds() {
        let cases = [
            ("10s", 10_000_000_000),
            ("1m30s", 90_000_000_000),
            ("250ms", 250_000_000),
            ("1h", 3_600_000_000_000),
            ("2.5s", 2_500_000_000),
            ("42", 42_000_000_000),
            ("0", 0),
            ("-1s", -1_000_000_000),
            ("1.5h", 5_400_000_000_000),
            ("100us", 100_000),
            (".5s", 500_000_000),
        ];
        for (text, nanos) in cases {
            assert_eq!(
                Duration::parse(text).map(Duration::as_nanos),
                Ok(nanos),
                "{text}"
            );
        }
        for bad in ["", "s", "10x", "1.2.3s", "--1s", "2.5"] {
            assert!(Duration::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn durations_deserialize_from_toml_integers_and_strings() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct T {
            a: Duration,
            b: Duration,
        }
        let node = parse_toml("a = 3\nb = \"250ms\"\n", &Arc::from("t.toml")).expect("toml");
        let t: T = from_node(&node).expect("deserializes");
        assert_eq!(t.a, Duration::from_secs(3));
        assert_eq!(t.b, Duration::from_millis(250));
        let node = parse_toml("a = \"3x\"\nb = 1\n", &Arc::from("t.toml")).expect("toml");
        let err = from_node::<T>(&node).expect_err("bad duration");
        assert_eq!(err.location.map(|l| l.line), Some(1));
    }

    #[test]
    fn unit_enums_match_case_insensitively() {
        #[derive(Debug, Deserialize, PartialEq)]
        #[serde(rename_all = "camelCase")]
        enum Format {
            Common,
            Json,
        }
        let f: Format = from_node(&yaml("JSON")).expect("deserializes");
        assert_eq!(f, Format::Json);
    }
}
