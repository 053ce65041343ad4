//! How configuration problems are found and worded: positions (`file:line:col`), the
//! dotted field a position belongs to, serde's messages rewritten in plain words
//! (`expected an integer`, not `expected i64`), "did you mean" for a misspelt key, and
//! [`Diag`], which collects every error and warning of one file instead of stopping at
//! the first.
//!
//! Knows TOML text and serde messages; knows nothing about what a valid gateway is.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::{DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

/// A configuration problem: where it is and what is wrong. Errors and warnings alike.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line and column, when the problem points into the file.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, col)) => {
                write!(f, "{}:{line}:{col}: {}", self.file.display(), self.message)
            }
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl ConfigError {
    pub(crate) fn at(file: &Path, src: &str, span: Option<Range<usize>>, message: String) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            position: span.map(|s| line_col(src, s.start)),
            message,
        }
    }

    /// A problem with a file as a whole (unreadable, not a directory, empty).
    pub(crate) fn whole(file: &Path, message: String) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            position: None,
            message,
        }
    }
}

// === Diag ===

/// Collects the problems of one file, each placed at a span of its text.
pub(crate) struct Diag<'a> {
    pub(crate) file: &'a Path,
    pub(crate) src: &'a str,
    pub(crate) errors: Vec<ConfigError>,
    pub(crate) warnings: Vec<ConfigError>,
}

impl<'a> Diag<'a> {
    pub(crate) fn new(file: &'a Path, src: &'a str) -> Diag<'a> {
        Diag {
            file,
            src,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// An error at `span`: "field `<field>`: <message>".
    pub(crate) fn error(
        &mut self,
        span: Option<Range<usize>>,
        field: &str,
        message: impl fmt::Display,
    ) {
        let e = ConfigError::at(
            self.file,
            self.src,
            span,
            format!("field `{field}`: {message}"),
        );
        self.errors.push(e);
    }

    /// An error at `span` about `field` of one part of the file (e.g. "sku `a`").
    pub(crate) fn error_in(
        &mut self,
        span: Option<Range<usize>>,
        field: &str,
        context: &str,
        message: impl fmt::Display,
    ) {
        let message = format!("field `{field}` ({context}): {message}");
        self.errors
            .push(ConfigError::at(self.file, self.src, span, message));
    }

    /// An error at the key `field` (`table.key`), or at its table, wherever the file has it.
    pub(crate) fn error_at_key(&mut self, field: &str, message: impl fmt::Display) {
        let span = self.key_span(field);
        self.error(span, field, message);
    }

    pub(crate) fn warn(&mut self, span: Option<Range<usize>>, message: String) {
        let w = ConfigError::at(self.file, self.src, span, message);
        self.warnings.push(w);
    }

    /// Where `field` (`table.key`) is written, else where its table starts.
    pub(crate) fn key_span(&self, field: &str) -> Option<Range<usize>> {
        find_key(self.src, field).or_else(|| {
            let (table, _) = field.rsplit_once('.')?;
            find_table(self.src, table)
        })
    }

    /// A serde error from deserializing this file, worded for people.
    pub(crate) fn toml_error(&mut self, e: &toml::de::Error, context: Option<&str>) {
        let err = describe(self.file, self.src, e, context);
        self.errors.push(err);
    }
}

/// Turns a TOML/serde error into a [`ConfigError`] naming the field, in plain words;
/// `context` (e.g. "sku `phone-black`") is added after the field.
pub(crate) fn describe(
    file: &Path,
    src: &str,
    e: &toml::de::Error,
    context: Option<&str>,
) -> ConfigError {
    let msg = plain_words(e.message().trim());
    let field = e.span().and_then(|s| field_at(src, s.start));
    let msg = match (field, context) {
        (Some(f), Some(c)) => format!("field `{f}` ({c}): {msg}"),
        (Some(f), None) => format!("field `{f}`: {msg}"),
        (None, Some(c)) => format!("{c}: {msg}"),
        (None, None) => msg,
    };
    ConfigError::at(file, src, e.span(), msg)
}

// === one part of a file ===

/// Deserializes only the value of the top-level key `key` of `src` (None when absent),
/// skipping the rest, so that each table of a file is checked on its own and one
/// mistake does not hide the others. Errors keep their position in the whole file.
pub(crate) fn part<T: DeserializeOwned>(
    src: &str,
    key: &str,
) -> Result<Option<T>, toml::de::Error> {
    Part::<T> {
        key,
        index: None,
        _t: std::marker::PhantomData,
    }
    .deserialize(toml::Deserializer::new(src))
}

/// Like [`part`] for the `index`th element of the array `key` (an `[[items]]` table).
pub(crate) fn element<T: DeserializeOwned>(
    src: &str,
    key: &str,
    index: usize,
) -> Result<Option<T>, toml::de::Error> {
    Part::<T> {
        key,
        index: Some(index),
        _t: std::marker::PhantomData,
    }
    .deserialize(toml::Deserializer::new(src))
}

struct Part<'k, T> {
    key: &'k str,
    index: Option<usize>,
    _t: std::marker::PhantomData<T>,
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for Part<'_, T> {
    type Value = Option<T>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, T: DeserializeOwned> Visitor<'de> for Part<'_, T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<T>, A::Error> {
        let mut out = None;
        while let Some(k) = map.next_key::<String>()? {
            if k != self.key {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            out = match self.index {
                None => Some(map.next_value::<T>()?),
                Some(index) => map.next_value_seed(Nth::<T> {
                    index,
                    _t: std::marker::PhantomData,
                })?,
            };
        }
        Ok(out)
    }
}

struct Nth<T> {
    index: usize,
    _t: std::marker::PhantomData<T>,
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for Nth<T> {
    type Value = Option<T>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, T: DeserializeOwned> Visitor<'de> for Nth<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Option<T>, A::Error> {
        let mut out = None;
        let mut i = 0;
        loop {
            if i == self.index {
                match seq.next_element::<T>()? {
                    Some(v) => out = Some(v),
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            i += 1;
        }
        Ok(out)
    }
}

// === plain words ===

/// serde's wording (`invalid type: string "ten", expected i64`, `struct LimitsConfig`)
/// rewritten for someone who edits TOML, with "did you mean" for a misspelt key or value.
pub(crate) fn plain_words(msg: &str) -> String {
    if let Some(rest) = msg.strip_prefix("unknown field ") {
        return unknown("key", rest);
    }
    if let Some(rest) = msg.strip_prefix("unknown variant ") {
        return unknown("value", rest);
    }
    if let Some(rest) = msg.strip_prefix("missing field ") {
        return format!("missing key {rest}");
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = msg.strip_prefix(prefix) {
            if let Some((found, expected)) = rest.rsplit_once(", expected ") {
                return format!(
                    "expected {}, found {}",
                    expected_words(expected),
                    found_words(found)
                );
            }
        }
    }
    if let Some(rest) = msg.strip_prefix("invalid length ") {
        return format!("wrong number of elements: {rest}");
    }
    msg.to_string()
}

/// `` `colour`, expected one of `id`, `name` `` → "unknown key `colour` (expected one
/// of ...)", or "unknown key `nme`: did you mean `name`?".
fn unknown(what: &str, rest: &str) -> String {
    let (name, expected) = rest.split_once(", ").unwrap_or((rest, ""));
    let candidates = backticked(expected);
    match did_you_mean(name.trim_matches('`'), &candidates) {
        Some(best) => format!("unknown {what} {name}: did you mean `{best}`?"),
        None if candidates.is_empty() => format!("unknown {what} {name}"),
        None => format!(
            "unknown {what} {name} (expected one of {})",
            candidates
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The words between backticks.
fn backticked(s: &str) -> Vec<&str> {
    s.split('`').skip(1).step_by(2).collect()
}

/// The closest candidate, when it is close enough to be the intended one.
pub(crate) fn did_you_mean<'c>(name: &str, candidates: &[&'c str]) -> Option<&'c str> {
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(name, c), *c))
        .filter(|(d, c)| *d <= (c.len().max(name.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn expected_words(expected: &str) -> String {
    let e = expected.trim();
    let words = match e {
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "an integer",
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number (0 or more)",
        "f32" | "f64" => "a number",
        "a map" => "a table",
        "a sequence" => "an array",
        "a boolean" => "true or false",
        "a TOML datetime" => "a date-time such as 2026-11-11T00:00:00+08:00",
        _ if e.starts_with("struct ") || e.starts_with("a map") => "a table",
        _ if e.starts_with("enum ") => "one of the listed values",
        _ => e,
    };
    words.to_string()
}

fn found_words(found: &str) -> String {
    let f = found.trim();
    for (prefix, words) in [
        ("string ", "the string "),
        ("integer ", "the integer "),
        ("floating point ", "the number "),
        ("boolean ", ""),
    ] {
        if let Some(v) = f.strip_prefix(prefix) {
            return format!("{words}{}", v.trim_matches('`'));
        }
    }
    match f {
        "map" => "a table".into(),
        "sequence" => "an array".into(),
        _ => f.to_string(),
    }
}

// === positions ===

/// 1-based (line, column) of a byte offset; columns count characters.
pub(crate) fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let before = &src[..offset.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The table a line opens (`[server]`, `[[items]]`), if it is a header.
fn table_header(line: &str) -> Option<&str> {
    let t = line.trim();
    let inner = t.strip_prefix("[[").and_then(|r| r.split("]]").next());
    inner
        .or_else(|| t.strip_prefix('[').and_then(|r| r.split(']').next()))
        .map(str::trim)
}

/// The dotted path (`server.header_read_timeout`) of the key whose value holds `offset`.
pub(crate) fn field_at(src: &str, offset: usize) -> Option<String> {
    let mut table = "";
    let mut key: Option<&str> = None;
    let mut start = 0;
    for line in src.split_inclusive('\n') {
        if start > offset {
            break;
        }
        if let Some(t) = table_header(line) {
            table = t;
            key = None;
        } else if let Some((k, _)) = line.split_once('=') {
            let k = k.trim();
            if !k.is_empty() && !k.starts_with('#') {
                key = Some(k);
            }
        }
        start += line.len();
    }
    let key = key?;
    Some(if table.is_empty() {
        key.to_string()
    } else {
        format!("{table}.{key}")
    })
}

/// Points at `key =` inside `[table]` (or at a dotted `table.key =`), for errors found
/// after parsing. `path` is `table.key`, or `key` for a top-level key.
pub(crate) fn find_key(src: &str, path: &str) -> Option<Range<usize>> {
    let (table, key) = path.rsplit_once('.').unwrap_or(("", path));
    let mut current = "";
    let mut offset = 0;
    for line in src.split_inclusive('\n') {
        if let Some(t) = table_header(line) {
            current = t;
        } else {
            let t = line.trim_start();
            let indent = line.len() - t.len();
            let wanted = if current == table {
                Some(key)
            } else if current.is_empty() {
                Some(path)
            } else {
                None
            };
            if let Some(rest) = wanted.and_then(|w| t.strip_prefix(w).map(|r| (w, r))) {
                if rest.1.trim_start().starts_with('=') {
                    return Some(offset + indent..offset + indent + rest.0.len());
                }
            }
        }
        offset += line.len();
    }
    None
}

/// Points at the header `[table]`.
pub(crate) fn find_table(src: &str, table: &str) -> Option<Range<usize>> {
    let mut offset = 0;
    for line in src.split_inclusive('\n') {
        if table_header(line) == Some(table) {
            let indent = line.len() - line.trim_start().len();
            return Some(offset + indent..offset + line.trim_end().len());
        }
        offset += line.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_types_become_plain_words() {
        assert_eq!(
            plain_words("invalid type: string \"ten\", expected i64"),
            "expected an integer, found the string \"ten\""
        );
        assert_eq!(
            plain_words("invalid type: integer `5`, expected struct LimitsConfig"),
            "expected a table, found the integer 5"
        );
        assert_eq!(
            plain_words("invalid value: integer `-1`, expected u32"),
            "expected a whole number (0 or more), found the integer -1"
        );
        assert_eq!(
            plain_words("invalid type: sequence, expected a string"),
            "expected a string, found an array"
        );
        assert_eq!(
            plain_words("missing field `listen`"),
            "missing key `listen`"
        );
    }

    #[test]
    fn a_misspelt_key_gets_a_suggestion() {
        assert_eq!(
            plain_words("unknown field `max_inflght`, expected one of `listen`, `max_inflight`"),
            "unknown key `max_inflght`: did you mean `max_inflight`?"
        );
        assert_eq!(
            plain_words("unknown variant `jwx`, expected `jwt` or `header`"),
            "unknown value `jwx`: did you mean `jwt`?"
        );
    }

    #[test]
    fn a_key_far_from_every_candidate_lists_them() {
        assert_eq!(
            plain_words("unknown field `colour`, expected `id` or `name`"),
            "unknown key `colour` (expected one of `id`, `name`)"
        );
        assert_eq!(
            plain_words("unknown field `x`, there are no fields"),
            "unknown key `x`"
        );
    }

    #[test]
    fn line_col_counts_characters() {
        let src = "a = 1\n# é\nb = 2\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, src.find('b').unwrap()), (3, 1));
        assert_eq!(line_col(src, src.find('2').unwrap()), (3, 5));
        assert_eq!(line_col("# é x", "# é ".len()), (1, 5));
    }

    #[test]
    fn part_reads_one_table_and_keeps_positions() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        struct T {
            #[allow(dead_code)]
            n: i64,
        }
        let src = "[a]\nn = 1\n[b]\nn = \"x\"\n";
        assert!(part::<T>(src, "a").unwrap().is_some());
        assert!(part::<T>(src, "c").unwrap().is_none());
        let e = part::<T>(src, "b").unwrap_err();
        assert_eq!(line_col(src, e.span().unwrap().start), (4, 5));
    }

    #[test]
    fn element_reads_one_item() {
        #[derive(serde::Deserialize, Debug)]
        struct T {
            n: i64,
        }
        let src = "[[i]]\nn = \"x\"\n[[i]]\nn = 2\n";
        assert_eq!(element::<T>(src, "i", 1).unwrap().unwrap().n, 2);
        assert!(element::<T>(src, "i", 0).is_err());
        assert!(element::<T>(src, "i", 2).unwrap().is_none());
    }
}
