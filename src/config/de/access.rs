//! The tables and arrays of an attempt: what each hands out (the file's value, a
//! stand-in, or nothing, after what earlier attempts learnt), and where a value's
//! problem is noted.

use serde::de::{DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess};
use toml::de::{DeArray, DeTable, DeValue};
use toml::Spanned;

use super::{Ctx, Error, Fallback, Node, StandIn, What};
use crate::config::doc::KeyPath;

/// A value to hand out: from the file, or a stand-in.
enum Slot<'a, 'i> {
    File(&'a Spanned<DeValue<'i>>),
    StandIn,
}

/// Reads one value of a table or array; its problem, if any, is noted at `path`.
fn read_slot<'de, S: DeserializeSeed<'de>>(
    ctx: &Ctx,
    path: KeyPath,
    slot: Slot<'_, '_>,
    seed: S,
) -> Result<S::Value, Error> {
    match slot {
        Slot::File(value) => {
            let span = value.span();
            let node = Node {
                value,
                path: path.clone(),
                ctx,
            };
            seed.deserialize(node)
                .map_err(|e| ctx.settle(&path, span, e))
        }
        Slot::StandIn => seed.deserialize(StandIn).map_err(|_| {
            ctx.fall_back(&path);
            Error::Reported
        }),
    }
}

/// The entries of a table a struct (or map) is read from, then stand-ins for the
/// required keys it lacks.
pub(super) struct Entries<'a, 'i> {
    ctx: &'a Ctx,
    entries: std::vec::IntoIter<(&'a str, KeyPath, Slot<'a, 'i>)>,
    next: Option<(KeyPath, Slot<'a, 'i>)>,
}

impl<'a, 'i> Entries<'a, 'i> {
    /// Every entry: a map, or an enum's `{ variant = ... }`.
    pub(super) fn all(ctx: &'a Ctx, table: &KeyPath, t: &'a DeTable<'i>) -> Self {
        Entries::new(ctx, table, t, None)
    }

    /// The keys of `fields`; any other key is reported (at the key) and hidden from the
    /// struct, so that all of them are found in one attempt.
    pub(super) fn of_struct(
        ctx: &'a Ctx,
        table: &KeyPath,
        t: &'a DeTable<'i>,
        fields: &'static [&'static str],
    ) -> Self {
        Entries::new(ctx, table, t, Some(fields))
    }

    fn new(
        ctx: &'a Ctx,
        table: &KeyPath,
        t: &'a DeTable<'i>,
        fields: Option<&'static [&'static str]>,
    ) -> Self {
        let mut entries = Vec::with_capacity(t.len());
        for (key, value) in t.iter() {
            let name: &'a str = key.get_ref();
            let path = table.key(name);
            match fields {
                Some(known) if !known.contains(&name) => {
                    ctx.note(path, key.span(), What::Unknown(known));
                }
                _ => {
                    if let Some(slot) = slot(ctx, &path, Slot::File(value)) {
                        entries.push((name, path, slot));
                    }
                }
            }
        }
        for &key in fields.unwrap_or_default() {
            let path = table.key(key);
            if !t.contains_key(key) && ctx.fallback(&path) == Some(Fallback::StandIn) {
                entries.push((key, path, Slot::StandIn));
            }
        }
        Entries {
            ctx,
            entries: entries.into_iter(),
            next: None,
        }
    }
}

/// What to hand out at `path`, given what earlier attempts learnt about it.
fn slot<'a, 'i>(ctx: &Ctx, path: &KeyPath, file: Slot<'a, 'i>) -> Option<Slot<'a, 'i>> {
    match ctx.fallback(path) {
        None => Some(file),
        Some(Fallback::StandIn) => Some(Slot::StandIn),
        Some(Fallback::Omit) => None,
    }
}

impl<'de> MapAccess<'de> for Entries<'_, '_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some((key, path, slot)) = self.entries.next() else {
            return Ok(None);
        };
        self.next = Some((path, slot));
        seed.deserialize(key.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let Some((path, slot)) = self.next.take() else {
            return Err(Error::Wrong("a value was read before its key".into()));
        };
        read_slot(self.ctx, path, slot, seed)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// The elements of an array.
pub(super) struct Elements<'a, 'i> {
    ctx: &'a Ctx,
    elements: std::vec::IntoIter<(KeyPath, Slot<'a, 'i>)>,
}

impl<'a, 'i> Elements<'a, 'i> {
    pub(super) fn new(ctx: &'a Ctx, array: &KeyPath, a: &'a DeArray<'i>) -> Self {
        let elements: Vec<_> = a
            .iter()
            .enumerate()
            .filter_map(|(i, value)| {
                let path = array.index(i);
                slot(ctx, &path, Slot::File(value)).map(|s| (path, s))
            })
            .collect();
        Elements {
            ctx,
            elements: elements.into_iter(),
        }
    }
}

impl<'de> SeqAccess<'de> for Elements<'_, '_> {
    type Error = Error;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, Error> {
        match self.elements.next() {
            Some((path, slot)) => read_slot(self.ctx, path, slot, seed).map(Some),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.elements.len())
    }
}
