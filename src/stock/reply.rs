//! Reading a script's reply: the fields of a flat array, one at a time, each as the
//! script's header says it is. What the header does not describe — an unknown tag, a
//! field missing or left over, text where a number belongs — is a
//! [`StoreError::Protocol`] naming the script, never a guess: a reply the gateway
//! misreads could answer a buyer wrongly, and a definite error fails closed.

use super::{Order, StoreError};

/// A script's reply as redis-rs reads a flat array: every field as text (Redis integers
/// included), `None` for a nil (a Lua `false`).
pub(super) type Raw = Vec<Option<String>>;

/// A reply being read, field by field.
pub(super) struct Fields {
    script: &'static str,
    fields: std::vec::IntoIter<Option<String>>,
    /// Index of the next field (for the error's message).
    at: usize,
}

impl Fields {
    pub(super) fn new(script: &'static str, raw: Raw) -> Fields {
        Fields {
            script,
            fields: raw.into_iter(),
            at: 0,
        }
    }

    /// An error about this reply.
    pub(super) fn bad(&self, what: impl std::fmt::Display) -> StoreError {
        StoreError::Protocol(format!("{} replied {what}", self.script))
    }

    /// The next field, which may be nil; a missing field is an error.
    pub(super) fn next(&mut self) -> Result<Option<String>, StoreError> {
        let at = self.at;
        self.at += 1;
        self.fields
            .next()
            .ok_or_else(|| self.bad(format_args!("no field {at}")))
    }

    /// The next field, which must be present (not nil).
    pub(super) fn text(&mut self) -> Result<String, StoreError> {
        let at = self.at;
        self.next()?
            .ok_or_else(|| self.bad(format_args!("nil at field {at}")))
    }

    /// The tag that opens most replies (`"reserved"`, `"paid"`, …).
    pub(super) fn tag(&mut self) -> Result<String, StoreError> {
        self.text()
    }

    /// The next field as an integer.
    pub(super) fn int(&mut self) -> Result<i64, StoreError> {
        let at = self.at;
        let v = self.text()?;
        v.parse()
            .map_err(|_| self.bad(format_args!("{v:?} at field {at}, not an integer")))
    }

    /// The next field as an integer, or `None` for a nil.
    pub(super) fn opt_int(&mut self) -> Result<Option<i64>, StoreError> {
        let at = self.at;
        match self.next()? {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| self.bad(format_args!("{v:?} at field {at}, not an integer"))),
        }
    }

    /// The next field as a count (a non-negative integer).
    pub(super) fn count(&mut self) -> Result<u64, StoreError> {
        let at = self.at;
        let n = self.int()?;
        u64::try_from(n).map_err(|_| self.bad(format_args!("{n} at field {at}, not a count")))
    }

    /// The next `ORDER_FIELDS` (lua/lib.lua), as an order.
    pub(super) fn order(&mut self) -> Result<Order, StoreError> {
        let at = self.at;
        let mut fields = Vec::with_capacity(super::order::FIELD_NAMES.len());
        for _ in super::order::FIELD_NAMES {
            fields.push(self.next()?);
        }
        Order::from_fields(&fields)
            .ok_or_else(|| self.bad(format_args!("a malformed order at field {at}: {fields:?}")))
    }

    /// Whether fields are left to read.
    pub(super) fn more(&self) -> bool {
        self.fields.len() > 0
    }

    /// The fields not read yet.
    pub(super) fn rest(self) -> std::vec::IntoIter<Option<String>> {
        self.fields
    }

    /// The reply must end here: a field left over is a shape this reader does not know.
    pub(super) fn end(mut self) -> Result<(), StoreError> {
        match self.fields.next() {
            None => Ok(()),
            Some(extra) => {
                Err(self.bad(format_args!("an unexpected field {}: {extra:?}", self.at)))
            }
        }
    }

    /// An unknown tag.
    pub(super) fn unknown(&self, tag: &str) -> StoreError {
        self.bad(format_args!("the unknown outcome {tag:?}"))
    }
}

/// `n` fields of text, for tests.
#[cfg(test)]
pub(super) fn raw(fields: &[Option<&str>]) -> Raw {
    fields.iter().map(|f| f.map(str::to_owned)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unexpected_shape_is_a_protocol_error() {
        let mut f = Fields::new("t.lua", raw(&[Some("x"), None, Some("12"), Some("-1")]));
        assert!(matches!(f.int(), Err(StoreError::Protocol(m)) if m.contains("t.lua")));
        assert!(f.text().is_err(), "a nil where text belongs");
        assert_eq!(f.opt_int().unwrap(), Some(12));
        assert!(f.count().is_err(), "a negative count");
        assert!(f.next().is_err(), "past the end");

        let mut f = Fields::new("t.lua", raw(&[None, Some("1"), Some("2")]));
        assert_eq!(f.opt_int().unwrap(), None);
        assert_eq!(f.count().unwrap(), 1);
        assert!(f.end().is_err(), "a field left over");
    }
}
