//! Request bodies are JSON objects: `{"quantity": 2}`, never `[2]`, `2` or
//! `"2"`, and a member is never `null`.
//!
//! serde's derived `Deserialize` also takes a struct from a JSON array (fields in
//! order) and an `Option` from `null`; both are shapes a client could use to slip past
//! what a handler means to accept. Every handler that reads a JSON body goes through
//! [`object`].

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the body must be a JSON object")]
    NotObject,
    #[error("`{0}` must not be null")]
    Null(String),
    #[error("{0}")]
    Invalid(serde_json::Error),
}

/// Parses `bytes` as a JSON object without `null` members into `T`.
///
/// Two passes over a small body: the generic one checks the shape, the typed one keeps
/// what serde's derive checks (types, unknown and repeated fields) and exact integers.
pub fn object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BodyError> {
    let members: Map<String, Value> = serde_json::from_slice(bytes).map_err(|e| {
        // Valid JSON of another type is a data error; anything else is broken JSON.
        if e.classify() == serde_json::error::Category::Data {
            BodyError::NotObject
        } else {
            BodyError::Invalid(e)
        }
    })?;
    if let Some((name, _)) = members.iter().find(|(_, v)| v.is_null()) {
        return Err(BodyError::Null(name.clone()));
    }
    serde_json::from_slice(bytes).map_err(BodyError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Q {
        quantity: Option<u32>,
    }

    #[test]
    fn objects_only() {
        assert_eq!(
            object::<Q>(br#"{"quantity": 2}"#).unwrap().quantity,
            Some(2)
        );
        assert_eq!(object::<Q>(b" {} ").unwrap().quantity, None);
        for bad in [&b"[2]"[..], b"2", b"\"2\"", b"null", b"true", b"[]"] {
            assert!(
                matches!(object::<Q>(bad), Err(BodyError::NotObject)),
                "{:?}",
                std::str::from_utf8(bad)
            );
        }
        assert!(matches!(
            object::<Q>(br#"{"quantity": null}"#),
            Err(BodyError::Null(n)) if n == "quantity"
        ));
        for bad in [
            &b"{"[..],
            b"",
            br#"{"quantity": 1, "quantity": 2}"#,
            br#"{"q": 1}"#,
        ] {
            assert!(matches!(object::<Q>(bad), Err(BodyError::Invalid(_))));
        }
    }
}
