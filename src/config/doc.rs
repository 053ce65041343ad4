//! A TOML file as `toml` parsed it, with the position of every key and value, and the
//! paths (`server.listen`, `items[1].stock`) the rest of `config` names them by.
//!
//! Positions come from the parser's spans, so they are exact for inline tables,
//! multi-line arrays and dotted keys alike; nothing here scans the text for keys.

use std::fmt;
use std::ops::Range;

use toml::de::{DeString, DeTable, DeValue};
use toml::Spanned;

// === KeyPath ===

/// One step of a [`KeyPath`]: a key of a table, or an index into an array.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Step {
    Key(String),
    Index(usize),
}

/// Where a value sits in its file: `server.listen`, `items[1].stock`; empty for the
/// whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct KeyPath(Vec<Step>);

impl KeyPath {
    pub(crate) fn root() -> KeyPath {
        KeyPath(Vec::new())
    }

    pub(crate) fn key(&self, key: &str) -> KeyPath {
        self.with(Step::Key(key.to_owned()))
    }

    pub(crate) fn index(&self, index: usize) -> KeyPath {
        self.with(Step::Index(index))
    }

    fn with(&self, step: Step) -> KeyPath {
        let mut steps = self.0.clone();
        steps.push(step);
        KeyPath(steps)
    }

    /// Reads `a.b[2].c` (keys as written in the structs: no quoting).
    pub(crate) fn parse(path: &str) -> KeyPath {
        let mut steps = Vec::new();
        for part in path.split('.').filter(|p| !p.is_empty()) {
            let mut pieces = part.split('[');
            if let Some(key) = pieces.next().filter(|k| !k.is_empty()) {
                steps.push(Step::Key(key.to_owned()));
            }
            for index in pieces.filter_map(|i| i.strip_suffix(']')?.parse().ok()) {
                steps.push(Step::Index(index));
            }
        }
        KeyPath(steps)
    }

    pub(crate) fn steps(&self) -> &[Step] {
        &self.0
    }

    pub(crate) fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The table (or array) holding this value, and the last step.
    pub(crate) fn split_last(&self) -> Option<(KeyPath, &Step)> {
        let (last, parent) = self.0.split_last()?;
        Some((KeyPath(parent.to_vec()), last))
    }

    /// One lies inside the other (or they are the same): a check about either reads
    /// the other.
    pub(crate) fn overlaps(&self, other: &KeyPath) -> bool {
        let n = self.0.len().min(other.0.len());
        self.0[..n] == other.0[..n]
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, step) in self.0.iter().enumerate() {
            match step {
                Step::Key(k) if i == 0 => write!(f, "{k}")?,
                Step::Key(k) => write!(f, ".{k}")?,
                Step::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

// === Doc ===

/// A parsed file: its text and the tree of spanned keys and values.
pub(crate) struct Doc<'i> {
    src: &'i str,
    root: Spanned<DeValue<'i>>,
}

impl<'i> Doc<'i> {
    /// Parses `src`; on bad syntax, every syntax error the parser found.
    pub(crate) fn parse(src: &'i str) -> Result<Doc<'i>, Vec<toml::de::Error>> {
        let (table, errors) = DeTable::parse_recoverable(src);
        if !errors.is_empty() {
            return Err(errors);
        }
        let span = table.span();
        let root = Spanned::new(span, DeValue::Table(table.into_inner()));
        Ok(Doc { src, root })
    }

    pub(crate) fn root(&self) -> &Spanned<DeValue<'i>> {
        &self.root
    }

    /// The value at `path`, when the file has it.
    pub(crate) fn get(&self, path: &KeyPath) -> Option<&Spanned<DeValue<'i>>> {
        self.walk(path).map(|(_, value)| value)
    }

    /// The key naming the last step of `path` (none for an array element) and its value.
    fn walk(
        &self,
        path: &KeyPath,
    ) -> Option<(Option<&Spanned<DeString<'i>>>, &Spanned<DeValue<'i>>)> {
        let mut at = (None, &self.root);
        for step in path.steps() {
            at = match (step, at.1.get_ref()) {
                (Step::Key(k), DeValue::Table(t)) => {
                    let (key, value) = t.get_key_value(k.as_str())?;
                    (Some(key), value)
                }
                (Step::Index(i), DeValue::Array(a)) => (None, a.get(*i)?),
                _ => return None,
            };
        }
        Some(at)
    }

    /// Where a reader looks for `path`: a `[table]`'s header, else its key (a dotted
    /// key from its first part), else where its value starts; when the file does not
    /// write it, the nearest table that holds it (the whole file: line 1).
    pub(crate) fn key_span(&self, path: &KeyPath) -> Range<usize> {
        match self.walk(path) {
            Some((_, value)) if self.is_header(value) => value.span(),
            Some((Some(key), _)) => self.dotted_start(key.span()),
            Some((None, value)) => value.span(),
            None => match path.split_last() {
                Some((parent, _)) => self.key_span(&parent),
                None => self.root.span(),
            },
        }
    }

    /// Where the value of `path` starts, else [`Doc::key_span`].
    pub(crate) fn value_span(&self, path: &KeyPath) -> Range<usize> {
        match self.get(path) {
            Some(value) => value.span(),
            None => self.key_span(path),
        }
    }

    /// A `[table]` or `[[array]]` element: its span is its header.
    fn is_header(&self, value: &Spanned<DeValue<'i>>) -> bool {
        matches!(value.get_ref(), DeValue::Table(_))
            && self
                .src
                .get(value.span())
                .is_some_and(|s| s.starts_with('['))
    }

    /// `b` of `a.b = 1` is pointed at from `a`: the key as the line writes it.
    fn dotted_start(&self, key: Range<usize>) -> Range<usize> {
        let line_start = self.src[..key.start].rfind('\n').map_or(0, |i| i + 1);
        let before = &self.src[line_start..key.start];
        let dotted = before.trim_end().ends_with('.')
            && before.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ' ' | '\t' | '"' | '\'')
            });
        if dotted {
            let indent = before.len() - before.trim_start().len();
            line_start + indent..key.end
        } else {
            key
        }
    }

    /// "sku `a`" for the element at `path` when it is a table with a string `key`.
    pub(crate) fn label(&self, path: &KeyPath, key: &str) -> Option<String> {
        match self.get(path)?.get_ref() {
            DeValue::Table(t) => {
                let value = t.get(key)?.get_ref().as_str()?;
                Some(format!("{key} `{value}`"))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(doc: &Doc<'_>, span: Range<usize>) -> String {
        doc.src[span].to_string()
    }

    #[test]
    fn paths_parse_and_print() {
        for p in ["", "id", "server.listen", "items[1].stock", "a.b[0][2].c"] {
            assert_eq!(KeyPath::parse(p).to_string(), p);
        }
        let p = KeyPath::root().key("items").index(1).key("stock");
        assert_eq!(p, KeyPath::parse("items[1].stock"));
        assert!(p.overlaps(&KeyPath::parse("items[1]")));
        assert!(KeyPath::parse("items").overlaps(&p));
        assert!(!p.overlaps(&KeyPath::parse("items[0].stock")));
        assert!(!p.overlaps(&KeyPath::parse("name")));
    }

    #[test]
    fn spans_of_keys_values_and_tables() {
        let src = "id = \"x\"\nlimits.per_user = { rate = 0,\n  per = \"1s\" }\n\n[server]\nlisten = [\n  \"a\",\n  5,\n]\n\n[[items]]\nsku = \"a\"\n[[items]]\nsku = \"b\"\n";
        let doc = Doc::parse(src).unwrap();
        let p = KeyPath::parse;
        assert_eq!(at(&doc, doc.key_span(&p("id"))), "id");
        assert_eq!(at(&doc, doc.value_span(&p("id"))), "\"x\"");
        assert_eq!(
            at(&doc, doc.key_span(&p("limits.per_user"))),
            "limits.per_user"
        );
        assert_eq!(at(&doc, doc.key_span(&p("limits.per_user.per"))), "per");
        assert_eq!(at(&doc, doc.value_span(&p("server.listen[1]"))), "5");
        assert_eq!(at(&doc, doc.key_span(&p("server"))), "[server]");
        // Not written: the nearest table that is.
        assert_eq!(
            at(&doc, doc.key_span(&p("server.admin_listen"))),
            "[server]"
        );
        assert_eq!(doc.key_span(&p("orders.sink")), 0..0);
        assert_eq!(at(&doc, doc.value_span(&p("items[1]"))), "[[items]]");
        assert_eq!(
            doc.value_span(&p("items[1]")).start,
            src.rfind("[[").unwrap()
        );
        assert_eq!(doc.label(&p("items[1]"), "sku").as_deref(), Some("sku `b`"));
        assert_eq!(doc.label(&p("server"), "sku"), None);
    }

    #[test]
    fn every_syntax_error_is_returned() {
        let errors = Doc::parse("a = 1\na = 2\nb = \n").err().unwrap();
        assert_eq!(errors.len(), 2, "{errors:?}");
    }
}
