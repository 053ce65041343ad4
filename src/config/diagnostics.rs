//! How configuration problems are worded and placed: [`ConfigError`]
//! (`file:line:col: message`), and [`Diag`], which collects every error and warning of
//! one file: the problems reading found (`de`), then those of the checks that run on
//! what was read, each at its key's or value's position and naming its field.
//!
//! A check is not reported about a value that was already wrong or missing (reading
//! put a stand-in there): one mistake, one message.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::de::{Problem, What};
use super::doc::{Doc, KeyPath, Step};

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
    pub(crate) fn at(file: &Path, src: &str, span: Range<usize>, message: String) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            position: Some(line_col(src, span.start)),
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

/// The text of a configuration file.
pub(crate) fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError::whole(path, format!("cannot read: {e}")))
}

/// Every syntax error of a file `toml` could not parse.
pub(crate) fn syntax_errors(
    file: &Path,
    src: &str,
    errors: Vec<toml::de::Error>,
) -> Vec<ConfigError> {
    errors
        .into_iter()
        .map(|e| {
            let message = e.message().trim().replace('\n', "; ");
            let span = e.span().unwrap_or(0..0);
            ConfigError::at(file, src, span, format!("invalid TOML: {message}"))
        })
        .collect()
}

// === Diag ===

/// Names the elements of an array of tables by one of their keys in messages:
/// `items` by `sku` reads "field `items.stock` (sku `a`)", or "(item 2)" without one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Label {
    pub(crate) array: &'static str,
    pub(crate) key: &'static str,
    pub(crate) noun: &'static str,
}

/// Collects the problems of one file.
pub(crate) struct Diag<'a> {
    pub(crate) file: &'a Path,
    src: &'a str,
    doc: &'a Doc<'a>,
    /// Values reading found wrong or missing: checks are silent about them.
    flawed: Vec<KeyPath>,
    label: Option<Label>,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
}

impl<'a> Diag<'a> {
    /// The problems reading found; `flawed` are the values it could not read.
    pub(crate) fn new(
        file: &'a Path,
        src: &'a str,
        doc: &'a Doc<'a>,
        problems: Vec<Problem>,
        flawed: Vec<KeyPath>,
        label: Option<Label>,
    ) -> Diag<'a> {
        let mut d = Diag {
            file,
            src,
            doc,
            flawed,
            label,
            errors: Vec::new(),
            warnings: Vec::new(),
        };
        for p in problems {
            let message = d.word(&p);
            d.errors.push(ConfigError::at(file, src, p.span, message));
        }
        d
    }

    /// None of `fields` (`table.key`) was wrong or missing: a check may read them.
    pub(crate) fn sound(&self, fields: &[&str]) -> bool {
        fields.iter().all(|f| self.sound_path(&KeyPath::parse(f)))
    }

    fn sound_path(&self, path: &KeyPath) -> bool {
        !self.flawed.iter().any(|f| f.overlaps(path))
    }

    /// Whether the file writes `field` (a default is not written).
    pub(crate) fn is_written(&self, field: &str) -> bool {
        self.doc.get(&KeyPath::parse(field)).is_some()
    }

    /// Where `field`'s key is written, else its nearest written table.
    pub(crate) fn key_span(&self, field: &str) -> Range<usize> {
        self.doc.key_span(&KeyPath::parse(field))
    }

    /// Where `field`'s value starts, else [`Diag::key_span`].
    pub(crate) fn value_span(&self, field: &str) -> Range<usize> {
        self.doc.value_span(&KeyPath::parse(field))
    }

    /// An error about `field` at `span`: "field `<field>`: <message>".
    pub(crate) fn error(&mut self, span: Range<usize>, field: &str, message: impl fmt::Display) {
        let path = KeyPath::parse(field);
        if self.sound_path(&path) {
            let message = format!(
                "field `{}`{}: {message}",
                self.name(&path),
                self.context(&path)
            );
            let e = ConfigError::at(self.file, self.src, span, message);
            self.errors.push(e);
        }
    }

    /// An error at the key `field`, or at its table when the key is not written.
    pub(crate) fn error_at_key(&mut self, field: &str, message: impl fmt::Display) {
        self.error(self.key_span(field), field, message);
    }

    /// A warning about `field` at `span`, worded by the caller.
    pub(crate) fn warn(&mut self, span: Range<usize>, field: &str, message: String) {
        if self.sound_path(&KeyPath::parse(field)) {
            let w = ConfigError::at(self.file, self.src, span, message);
            self.warnings.push(w);
        }
    }

    pub(crate) fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// The errors and warnings, each in file order.
    pub(crate) fn finish(mut self) -> (Vec<ConfigError>, Vec<ConfigError>) {
        self.errors.sort_by_key(|e| e.position);
        self.errors.dedup();
        self.warnings.sort_by_key(|e| e.position);
        (self.errors, self.warnings)
    }

    // --- wording ---

    fn word(&self, p: &Problem) -> String {
        match (&p.what, p.path.split_last()) {
            (What::Wrong(m), _) if p.path.is_root() => m.clone(),
            (What::Wrong(m), _) => {
                let (name, context) = (self.name(&p.path), self.context(&p.path));
                format!("field `{name}`{context}: {m}")
            }
            (What::Unknown(expected), Some((table, Step::Key(key)))) => {
                self.in_table(&table, words::unknown("key", key, expected))
            }
            (What::Missing, Some((table, Step::Key(key)))) => {
                self.in_table(&table, format!("missing required key `{key}`"))
            }
            // Unknown and missing are always about a key of a table.
            (what, _) => format!("`{}`: {what:?}", p.path),
        }
    }

    /// "in `server`: <problem>" for a key of a table, the problem alone at the top.
    fn in_table(&self, table: &KeyPath, problem: String) -> String {
        if table.is_root() {
            problem
        } else {
            let (name, context) = (self.name(table), self.context(table));
            format!("in `{name}`{context}: {problem}")
        }
    }

    /// `items[1].stock` reads `items.stock` when `items` is labelled; others as written.
    fn name(&self, path: &KeyPath) -> String {
        match self.labelled(path) {
            Some(_) => {
                let keys = path.steps().iter().filter_map(|s| match s {
                    Step::Key(k) => Some(k.as_str()),
                    Step::Index(_) => None,
                });
                keys.collect::<Vec<_>>().join(".")
            }
            None => path.to_string(),
        }
    }

    /// " (sku `a`)" or " (item 2)" for a labelled element's values, else nothing.
    fn context(&self, path: &KeyPath) -> String {
        let Some((label, index)) = self.labelled(path) else {
            return String::new();
        };
        let element = KeyPath::root().key(label.array).index(index);
        match self.doc.label(&element, label.key) {
            Some(name) => format!(" ({name})"),
            None => format!(" ({} {})", label.noun, index + 1),
        }
    }

    /// The label and element index, when `path` is inside an element of its array.
    fn labelled(&self, path: &KeyPath) -> Option<(Label, usize)> {
        let label = self.label?;
        match path.steps() {
            [Step::Key(array), Step::Index(i), ..] if array == label.array => Some((label, *i)),
            _ => None,
        }
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

// === plain words ===

/// serde's words (`i64`, `struct LimitsConfig`, `sequence`) for someone who edits TOML.
pub(crate) mod words {
    use serde::de::{Expected, Unexpected};
    use toml::de::DeValue;

    /// "expected an integer, found the string \"ten\"".
    pub(crate) fn mismatch(found: Unexpected<'_>, expected: &dyn Expected) -> String {
        format!(
            "expected {}, found {}",
            self::expected(&expected.to_string()),
            found_words(found)
        )
    }

    /// What a Rust type's visitor expects, as a TOML value.
    pub(crate) fn expected(expected: &str) -> String {
        let e = expected.trim();
        let words = match e {
            "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "an integer",
            "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number (0 or more)",
            "f32" | "f64" => "a number",
            "a map" => "a table",
            "a sequence" => "an array",
            "a boolean" => "true or false",
            "a borrowed string" => "a string",
            "a TOML datetime" => "a date-time such as 2026-11-11T00:00:00+08:00",
            _ if e.starts_with("struct ") || e.starts_with("a map") => "a table",
            _ if e.starts_with("enum ") => "one of the listed values",
            _ => e,
        };
        words.to_string()
    }

    fn found_words(found: Unexpected<'_>) -> String {
        match found {
            Unexpected::Str(s) => format!("the string {s:?}"),
            Unexpected::Signed(i) => format!("the integer {i}"),
            Unexpected::Unsigned(u) => format!("the integer {u}"),
            Unexpected::Float(f) => format!("the number {f}"),
            Unexpected::Bool(b) => b.to_string(),
            Unexpected::Map => "a table".into(),
            Unexpected::Seq => "an array".into(),
            other => other.to_string(),
        }
    }

    /// A TOML value, as [`mismatch`] words what it found.
    pub(crate) fn found_value(value: &DeValue<'_>) -> String {
        match value {
            DeValue::String(s) => format!("the string {s:?}"),
            DeValue::Integer(i) => format!("the integer {i}"),
            DeValue::Float(f) => format!("the number {f}"),
            DeValue::Boolean(b) => b.to_string(),
            DeValue::Datetime(_) => "a date-time".into(),
            DeValue::Array(_) => "an array".into(),
            DeValue::Table(_) => "a table".into(),
        }
    }

    /// "unknown key `nme`: did you mean `name`?", or the keys there are.
    pub(crate) fn unknown(what: &str, name: &str, expected: &[&str]) -> String {
        match did_you_mean(name, expected) {
            Some(best) => format!("unknown {what} `{name}`: did you mean `{best}`?"),
            None if expected.is_empty() => format!("unknown {what} `{name}`"),
            None => format!(
                "unknown {what} `{name}` (expected one of {})",
                listed(expected)
            ),
        }
    }

    /// "`a`, `b`, `c`".
    pub(crate) fn listed(names: &[&str]) -> String {
        let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
        quoted.join(", ")
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
}

#[cfg(test)]
mod tests {
    use super::words::*;
    use super::*;
    use serde::de::Unexpected;

    #[test]
    fn rust_types_become_plain_words() {
        let m = |found, expected: &str| mismatch(found, &expected);
        assert_eq!(
            m(Unexpected::Str("ten"), "i64"),
            "expected an integer, found the string \"ten\""
        );
        assert_eq!(
            m(Unexpected::Signed(5), "struct LimitsConfig"),
            "expected a table, found the integer 5"
        );
        assert_eq!(
            m(Unexpected::Signed(-1), "u32"),
            "expected a whole number (0 or more), found the integer -1"
        );
        assert_eq!(
            m(Unexpected::Seq, "a string"),
            "expected a string, found an array"
        );
    }

    #[test]
    fn a_misspelt_name_gets_a_suggestion() {
        assert_eq!(
            unknown("key", "max_inflght", &["listen", "max_inflight"]),
            "unknown key `max_inflght`: did you mean `max_inflight`?"
        );
        assert_eq!(
            unknown("value", "jwx", &["jwt", "header"]),
            "unknown value `jwx`: did you mean `jwt`?"
        );
    }

    #[test]
    fn a_name_far_from_every_candidate_lists_them() {
        assert_eq!(
            unknown("key", "colour", &["id", "name"]),
            "unknown key `colour` (expected one of `id`, `name`)"
        );
        assert_eq!(unknown("key", "x", &[]), "unknown key `x`");
    }

    #[test]
    fn line_col_counts_characters() {
        let src = "a = 1\n# é\nb = 2\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, src.find('b').unwrap()), (3, 1));
        assert_eq!(line_col(src, src.find('2').unwrap()), (3, 5));
        assert_eq!(line_col("# é x", "# é ".len()), (1, 5));
    }
}
