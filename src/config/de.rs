//! Reads a parsed TOML file into the config structs through their own `Deserialize`,
//! without stopping at the first problem.
//!
//! serde stops at the first error, so [`read`] deserializes the whole file again after
//! each one, having noted what went wrong and where (the value's span and its
//! [`KeyPath`]): the next time, that value is replaced by a stand-in (the "zero" of its
//! type, see `stand_in`), a missing required key gets one too, and reading goes on to
//! the next problem. A key the struct does not know is reported and hidden from it, so
//! every unknown key of every table is found at once. The structs stay plain serde
//! derives: their field lists, defaults and `Option`s say what is known and required,
//! and a file without problems reads exactly as `toml::from_str` would read it. A file
//! with n problems is read n + 1 times: configuration files are small.
//!
//! Knows serde and the TOML tree; knows nothing about what a valid gateway is, nor how
//! problems are worded for people (`diagnostics`).

mod access;
mod stand_in;
#[cfg(test)]
mod tests;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, DeserializeOwned, Expected, IntoDeserializer, Unexpected, Visitor};
use serde_spanned::de::{is_spanned, SpannedDeserializer};
use toml::de::{DeInteger, DeValue};
use toml::Spanned;
use toml_datetime::de::{is_datetime, DatetimeDeserializer};

use super::diagnostics::words;
use super::doc::{Doc, KeyPath};
use access::{Elements, Entries};
use stand_in::StandIn;

/// A problem with one value, key or table of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub(crate) path: KeyPath,
    /// The value's span for [`What::Wrong`], the key's for [`What::Unknown`], the
    /// table's for [`What::Missing`].
    pub(crate) span: Range<usize>,
    pub(crate) what: What,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum What {
    /// The value cannot be what its key needs (worded for people).
    Wrong(String),
    /// The table has no such key; these are the keys it has.
    Unknown(&'static [&'static str]),
    /// The table lacks this required key.
    Missing,
}

/// What [`read`] found in one file.
#[derive(Debug)]
pub(crate) struct Read<T> {
    /// `None` only when no `T` could be made even with stand-ins.
    pub(crate) value: Option<T>,
    pub(crate) problems: Vec<Problem>,
    /// The values that were wrong or missing, now stand-ins or left out: checks of the
    /// value must not judge them (their problem is already reported).
    pub(crate) flawed: Vec<KeyPath>,
}

/// Reads `doc` as a `T`, with every problem (see the module doc).
pub(crate) fn read<T: DeserializeOwned>(doc: &Doc<'_>) -> Read<T> {
    let ctx = Ctx::default();
    let root = KeyPath::root();
    loop {
        ctx.progress.set(false);
        let node = Node {
            value: doc.root(),
            path: root.clone(),
            ctx: &ctx,
        };
        match T::deserialize(node) {
            Ok(value) => return ctx.finish(Some(value)),
            Err(e) => {
                ctx.settle(&root, doc.root().span(), e);
                if ctx.fallback(&root).is_some() || !ctx.progress.get() {
                    return ctx.finish(None);
                }
            }
        }
    }
}

// === Error ===

/// The error of one attempt. Every problem is noted in [`Ctx`] by the table or array
/// that handed out the value, which turns it into `Reported`.
#[derive(Debug)]
pub(crate) enum Error {
    /// Noted already; this attempt is over.
    Reported,
    /// The struct being read lacks this required key (from serde's derive).
    Missing(&'static str),
    /// The value being read is wrong, in plain words.
    Wrong(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Reported => f.write_str("reported"),
            Error::Missing(key) => write!(f, "missing required key `{key}`"),
            Error::Wrong(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error::Wrong(msg.to_string())
    }

    fn invalid_type(found: Unexpected<'_>, expected: &dyn Expected) -> Self {
        Error::Wrong(words::mismatch(found, expected))
    }

    fn invalid_value(found: Unexpected<'_>, expected: &dyn Expected) -> Self {
        Error::Wrong(words::mismatch(found, expected))
    }

    fn invalid_length(len: usize, expected: &dyn Expected) -> Self {
        let expected = words::expected(&expected.to_string());
        Error::Wrong(format!("expected {expected}, found {len} elements"))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        Error::Wrong(words::unknown("value", variant, expected))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        Error::Wrong(words::unknown("key", field, expected))
    }

    fn missing_field(field: &'static str) -> Self {
        Error::Missing(field)
    }
}

// === Ctx ===

/// What to read instead of a value that was wrong or missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fallback {
    StandIn,
    /// Its stand-in failed too: leave it out (its table then falls back in turn).
    Omit,
}

/// What the attempts so far have learnt; shared by every node of an attempt.
#[derive(Default)]
struct Ctx {
    fallbacks: RefCell<BTreeMap<KeyPath, Fallback>>,
    problems: RefCell<Vec<Problem>>,
    /// Whether this attempt noted anything new: an attempt that fails without doing so
    /// would fail the same way again.
    progress: Cell<bool>,
}

impl Ctx {
    fn fallback(&self, path: &KeyPath) -> Option<Fallback> {
        self.fallbacks.borrow().get(path).copied()
    }

    /// A stand-in from now on; left out if it had one already.
    fn fall_back(&self, path: &KeyPath) {
        let mut fallbacks = self.fallbacks.borrow_mut();
        let next = match fallbacks.get(path) {
            None => Fallback::StandIn,
            Some(_) => Fallback::Omit,
        };
        if fallbacks.insert(path.clone(), next) != Some(next) {
            self.progress.set(true);
        }
    }

    fn note(&self, path: KeyPath, span: Range<usize>, what: What) {
        let problem = Problem { path, span, what };
        let mut problems = self.problems.borrow_mut();
        if !problems.contains(&problem) {
            problems.push(problem);
            self.progress.set(true);
        }
    }

    /// Notes the error of reading the value at `path` (spanning `span`).
    fn settle(&self, path: &KeyPath, span: Range<usize>, e: Error) -> Error {
        match e {
            Error::Reported => {}
            Error::Wrong(message) => {
                self.note(path.clone(), span, What::Wrong(message));
                self.fall_back(path);
            }
            Error::Missing(key) => {
                let child = path.key(key);
                if self.fallback(&child).is_none() {
                    self.note(child.clone(), span, What::Missing);
                    self.fall_back(&child);
                } else {
                    // Its stand-in failed: this table cannot be made either.
                    self.fall_back(path);
                }
            }
        }
        Error::Reported
    }

    fn finish<T>(&self, value: Option<T>) -> Read<T> {
        let mut problems = self.problems.take();
        if value.is_none() && problems.is_empty() {
            let what = What::Wrong("cannot be read".into());
            problems.push(Problem {
                path: KeyPath::root(),
                span: 0..0,
                what,
            });
        }
        Read {
            value,
            problems,
            flawed: self.fallbacks.take().into_keys().collect(),
        }
    }
}

// === Node ===

/// One value of the file, read as whatever its key's type asks for.
struct Node<'a, 'i> {
    value: &'a Spanned<DeValue<'i>>,
    path: KeyPath,
    ctx: &'a Ctx,
}

impl Node<'_, '_> {
    /// A scalar is asked for: a date-time is not one (toml hands it out as a table).
    fn scalar<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.value.get_ref() {
            DeValue::Datetime(_) => Err(de::Error::invalid_type(
                Unexpected::Other("a date-time"),
                &visitor,
            )),
            _ => de::Deserializer::deserialize_any(self, visitor),
        }
    }
}

fn visit_integer<'de, V: Visitor<'de>>(i: &DeInteger<'_>, visitor: V) -> Result<V::Value, Error> {
    let (digits, radix) = (i.as_str(), i.radix());
    if let Ok(n) = i64::from_str_radix(digits, radix) {
        visitor.visit_i64(n)
    } else if let Ok(n) = u64::from_str_radix(digits, radix) {
        visitor.visit_u64(n)
    } else {
        Err(Error::Wrong(format!("the integer {i} is too large")))
    }
}

macro_rules! scalars {
    ($($method:ident)*) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            self.scalar(visitor)
        })*
    };
}

impl<'de> de::Deserializer<'de> for Node<'_, '_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.value.get_ref() {
            DeValue::String(s) => visitor.visit_str(s),
            DeValue::Integer(i) => visit_integer(i, visitor),
            DeValue::Float(f) => match f.as_str().parse::<f64>() {
                Ok(x) => visitor.visit_f64(x),
                Err(_) => Err(Error::Wrong(format!("{} is not a number", f.as_str()))),
            },
            DeValue::Boolean(b) => visitor.visit_bool(*b),
            DeValue::Datetime(d) => visitor.visit_map(DatetimeDeserializer::new(*d)),
            DeValue::Array(a) => visitor.visit_seq(Elements::new(self.ctx, &self.path, a)),
            DeValue::Table(t) => visitor.visit_map(Entries::all(self.ctx, &self.path, t)),
        }
    }

    scalars! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char deserialize_str
        deserialize_string deserialize_bytes deserialize_byte_buf deserialize_unit
        deserialize_identifier
    }

    /// TOML has no null: a value that is there is `Some`.
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        if is_spanned(name) {
            let span = self.value.span();
            return visitor.visit_map(SpannedDeserializer::new(self, span));
        }
        match self.value.get_ref() {
            DeValue::Datetime(_) if is_datetime(name) => self.deserialize_any(visitor),
            DeValue::Table(t) => {
                visitor.visit_map(Entries::of_struct(self.ctx, &self.path, t, fields))
            }
            // serde's derive would take an array as the fields in order: a table is asked for.
            DeValue::Array(_) => Err(de::Error::invalid_type(Unexpected::Seq, &visitor)),
            _ => self.scalar(visitor),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.value.get_ref() {
            DeValue::String(s) => visitor.visit_enum(s.as_ref().into_deserializer()),
            DeValue::Table(t) => visitor.visit_enum(MapAccessDeserializer::new(Entries::all(
                self.ctx, &self.path, t,
            ))),
            other => Err(Error::Wrong(format!(
                "expected one of {}, found {}",
                words::listed(variants),
                words::found_value(other)
            ))),
        }
    }

    serde::forward_to_deserialize_any! {
        unit_struct seq tuple tuple_struct map
    }
}

impl<'de, 'a, 'i> IntoDeserializer<'de, Error> for Node<'a, 'i> {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}
