//! Pure functions from fred's reply [`Value`]s to stream types.
//!
//! They never panic and never drop an entry: whatever the server sends inside an entry
//! (values that are not UTF-8, missing or repeated fields, a field without a value) is handed
//! on as raw bytes. Only a reply whose *shape* is wrong (an entry that is not `[id, fields]`,
//! an id that is not an id) is an error, and then for the whole reply.

use bytes::Bytes;
use fred::types::Value;
use stream_consumer::{EntryId, StreamEntry, StreamInfo};

/// A reply whose shape is not what the command returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReplyError(pub(crate) String);

impl ReplyError {
    fn new(what: impl Into<String>) -> Self {
        Self(what.into())
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Boolean(_) => "boolean",
        Value::Integer(_) => "integer",
        Value::Double(_) => "double",
        Value::String(_) => "string",
        Value::Bytes(_) => "bytes",
        Value::Null => "nil",
        Value::Queued => "QUEUED",
        Value::Map(_) => "map",
        Value::Array(_) => "array",
    }
}

/// The bytes of a scalar, as the server sent them (numbers as decimal text). `None` for
/// nil, arrays and maps.
fn scalar_bytes(value: Value) -> Option<Bytes> {
    match value {
        Value::Bytes(b) => Some(b),
        Value::String(s) => Some(s.into_inner()),
        Value::Integer(i) => Some(Bytes::from(i.to_string())),
        Value::Double(d) => Some(Bytes::from(d.to_string())),
        Value::Boolean(b) => Some(Bytes::from_static(if b { b"1" } else { b"0" })),
        Value::Queued => Some(Bytes::from_static(b"QUEUED")),
        Value::Null | Value::Map(_) | Value::Array(_) => None,
    }
}

/// Parses an entry id sent as a string.
pub(crate) fn entry_id(value: Value) -> Result<EntryId, ReplyError> {
    let shape = kind(&value);
    let raw = scalar_bytes(value)
        .ok_or_else(|| ReplyError::new(format!("expected an entry id, got {shape}")))?;
    let text = std::str::from_utf8(&raw).map_err(|_| ReplyError::new("entry id is not UTF-8"))?;
    text.parse()
        .map_err(|_| ReplyError::new(format!("invalid entry id {:?}", clip(text))))
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// The fields of one entry, a flat `[field, value, …]` array. A trailing field without a
/// value is kept with an empty value; nil (an entry deleted under a reader) is no fields.
fn fields(value: Value) -> Result<Vec<(Bytes, Bytes)>, ReplyError> {
    let items = match value {
        Value::Array(items) => items,
        Value::Null => return Ok(Vec::new()),
        Value::Map(map) => {
            return map
                .inner()
                .into_iter()
                .map(|(k, v)| {
                    let shape = kind(&v);
                    scalar_bytes(v)
                        .map(|v| (k.into_bytes(), v))
                        .ok_or_else(|| ReplyError::new(format!("field value is {shape}")))
                })
                .collect();
        }
        other => {
            return Err(ReplyError::new(format!(
                "entry fields are {}",
                kind(&other)
            )));
        }
    };
    let mut out = Vec::with_capacity(items.len().div_ceil(2));
    let mut items = items.into_iter();
    while let Some(name) = items.next() {
        let value = items.next().unwrap_or(Value::Bytes(Bytes::new()));
        let (name_kind, value_kind) = (kind(&name), kind(&value));
        let name = scalar_bytes(name)
            .ok_or_else(|| ReplyError::new(format!("field name is {name_kind}")))?;
        let value = match value {
            Value::Null => Bytes::new(),
            v => scalar_bytes(v)
                .ok_or_else(|| ReplyError::new(format!("field value is {value_kind}")))?,
        };
        out.push((name, value));
    }
    Ok(out)
}

/// One `[id, [field, value, …]]` entry.
fn entry(value: Value) -> Result<StreamEntry, ReplyError> {
    let Value::Array(parts) = value else {
        return Err(ReplyError::new(format!(
            "entry is {}, expected [id, fields]",
            kind(&value)
        )));
    };
    let [id, body]: [Value; 2] = parts.try_into().map_err(|p: Vec<Value>| {
        ReplyError::new(format!(
            "entry has {} parts, expected [id, fields]",
            p.len()
        ))
    })?;
    Ok(StreamEntry {
        id: entry_id(id)?,
        fields: fields(body)?,
    })
}

/// A list of entries, as `XRANGE` returns them and as each stream carries in `XREAD`.
pub(crate) fn entries(value: Value) -> Result<Vec<StreamEntry>, ReplyError> {
    match value {
        Value::Array(items) => items.into_iter().map(entry).collect(),
        Value::Null => Ok(Vec::new()),
        other => Err(ReplyError::new(format!(
            "entries are {}, expected an array",
            kind(&other)
        ))),
    }
}

/// An `XREAD` reply: nil when the block ran out, else `[[stream, entries], …]` (RESP2) or a
/// map from stream to entries (RESP3). Entries of every stream are returned, in order.
pub(crate) fn xread(value: Value) -> Result<Vec<StreamEntry>, ReplyError> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Array(streams) => {
            let mut out = Vec::new();
            for stream in streams {
                let Value::Array(parts) = stream else {
                    return Err(ReplyError::new(format!(
                        "stream is {}, expected [name, entries]",
                        kind(&stream)
                    )));
                };
                let [_name, list]: [Value; 2] = parts.try_into().map_err(|p: Vec<Value>| {
                    ReplyError::new(format!(
                        "stream has {} parts, expected [name, entries]",
                        p.len()
                    ))
                })?;
                out.extend(entries(list)?);
            }
            Ok(out)
        }
        Value::Map(map) => {
            let mut out = Vec::new();
            for (_name, list) in map.inner() {
                out.extend(entries(list)?);
            }
            Ok(out)
        }
        other => Err(ReplyError::new(format!("XREAD reply is {}", kind(&other)))),
    }
}

/// The name/value pairs of an `XINFO STREAM` reply (a flat array in RESP2, a map in RESP3).
fn info_pairs(value: Value) -> Result<Vec<(Bytes, Value)>, ReplyError> {
    match value {
        Value::Array(items) => {
            if items.len() % 2 != 0 {
                return Err(ReplyError::new(format!(
                    "XINFO reply has {} items, expected pairs",
                    items.len()
                )));
            }
            let mut out = Vec::with_capacity(items.len() / 2);
            let mut items = items.into_iter();
            while let (Some(name), Some(value)) = (items.next(), items.next()) {
                let shape = kind(&name);
                let name = scalar_bytes(name)
                    .ok_or_else(|| ReplyError::new(format!("XINFO field name is {shape}")))?;
                out.push((name, value));
            }
            Ok(out)
        }
        Value::Map(map) => Ok(map
            .inner()
            .into_iter()
            .map(|(k, v)| (k.into_bytes(), v))
            .collect()),
        other => Err(ReplyError::new(format!("XINFO reply is {}", kind(&other)))),
    }
}

fn count(value: Value) -> Result<u64, ReplyError> {
    match value {
        Value::Integer(i) => {
            u64::try_from(i).map_err(|_| ReplyError::new(format!("negative length {i}")))
        }
        other => {
            let shape = kind(&other);
            scalar_bytes(other)
                .and_then(|b| std::str::from_utf8(&b).ok().and_then(|s| s.parse().ok()))
                .ok_or_else(|| ReplyError::new(format!("length is {shape}, expected an integer")))
        }
    }
}

/// An `XINFO STREAM` reply. `max-deleted-entry-id` (Redis ≥ 7.0) of `0-0` means nothing was
/// ever deleted, so it becomes `None`, as does its absence on older servers.
pub(crate) fn xinfo_stream(value: Value) -> Result<StreamInfo, ReplyError> {
    let mut length = None;
    let mut last_generated = None;
    let mut first_entry = None;
    let mut max_deleted = None;
    for (name, value) in info_pairs(value)? {
        match name.as_ref() {
            b"length" => length = Some(count(value)?),
            b"last-generated-id" => last_generated = Some(entry_id(value)?),
            b"max-deleted-entry-id" => {
                max_deleted = Some(entry_id(value)?).filter(|id| *id != EntryId::ZERO);
            }
            b"first-entry" => {
                first_entry = match value {
                    Value::Null => None,
                    v => Some(entry(v)?.id),
                };
            }
            _ => {}
        }
    }
    Ok(StreamInfo {
        length: length.ok_or_else(|| ReplyError::new("XINFO reply has no length"))?,
        first_entry,
        last_generated: last_generated
            .ok_or_else(|| ReplyError::new("XINFO reply has no last-generated-id"))?,
        max_deleted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(text: &str) -> Value {
        Value::from(text.to_owned())
    }

    fn b(raw: &[u8]) -> Value {
        Value::Bytes(Bytes::copy_from_slice(raw))
    }

    fn arr(items: Vec<Value>) -> Value {
        Value::Array(items)
    }

    #[test]
    fn xread_keeps_every_entry_and_every_byte() {
        let reply = arr(vec![arr(vec![
            s("stream"),
            arr(vec![
                arr(vec![s("1-0"), arr(vec![s("a"), b(b"\xff\xfe")])]),
                arr(vec![s("1-1"), arr(vec![])]),
                arr(vec![
                    s("2-0"),
                    arr(vec![s("a"), s("1"), s("a"), s("2"), s("lonely")]),
                ]),
                arr(vec![s("3-0"), Value::Null]),
            ]),
        ])]);
        let Ok(got) = xread(reply) else {
            panic!("should parse")
        };
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].id, EntryId::new(1, 0));
        assert_eq!(
            got[0].fields,
            vec![(Bytes::from_static(b"a"), Bytes::from_static(b"\xff\xfe"))]
        );
        assert!(got[1].fields.is_empty());
        assert_eq!(got[2].fields.len(), 3);
        assert_eq!(got[2].field("a"), Some(&b"2"[..]));
        assert_eq!(
            got[2].fields[2],
            (Bytes::from_static(b"lonely"), Bytes::new())
        );
        assert!(got[3].fields.is_empty());
    }

    #[test]
    fn xread_nil_is_empty_and_bad_shapes_are_errors() {
        assert_eq!(xread(Value::Null), Ok(Vec::new()));
        assert!(xread(s("OK")).is_err());
        assert!(xread(arr(vec![arr(vec![s("stream")])])).is_err());
        assert!(
            xread(arr(vec![arr(vec![
                s("st"),
                arr(vec![arr(vec![s("x-1"), arr(vec![])])])
            ])]))
            .is_err()
        );
    }

    #[test]
    fn xinfo_reads_bounds_and_max_deleted() {
        let reply = |max_deleted: &str, first: Value| {
            arr(vec![
                s("length"),
                Value::Integer(1),
                s("radix-tree-keys"),
                Value::Integer(1),
                s("last-generated-id"),
                s("5-0"),
                s("max-deleted-entry-id"),
                s(max_deleted),
                s("first-entry"),
                first,
                s("last-entry"),
                Value::Null,
            ])
        };
        let first = arr(vec![s("5-0"), arr(vec![s("k"), s("v")])]);
        assert_eq!(
            xinfo_stream(reply("4-0", first)),
            Ok(StreamInfo {
                length: 1,
                first_entry: Some(EntryId::new(5, 0)),
                last_generated: EntryId::new(5, 0),
                max_deleted: Some(EntryId::new(4, 0)),
            })
        );
        let Ok(info) = xinfo_stream(reply("0-0", Value::Null)) else {
            panic!("should parse")
        };
        assert_eq!((info.first_entry, info.max_deleted), (None, None));
        assert!(xinfo_stream(arr(vec![s("length")])).is_err());
        assert!(xinfo_stream(arr(vec![s("length"), Value::Integer(-1)])).is_err());
    }

    fn any_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            Just(Value::Queued),
            any::<bool>().prop_map(Value::Boolean),
            any::<i64>().prop_map(Value::Integer),
            any::<f64>().prop_map(Value::Double),
            "[0-9]{1,3}-[0-9]{1,3}|[a-z-]{0,8}|.{0,8}".prop_map(Value::from),
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(|v| Value::Bytes(v.into())),
        ];
        leaf.prop_recursive(5, 64, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec(("[a-z]{1,6}", inner), 0..4).prop_map(|pairs| {
                    let mut map = fred::types::Map::new();
                    for (k, v) in pairs {
                        map.insert(fred::types::Key::from(k), v);
                    }
                    Value::Map(map)
                }),
            ]
        })
    }

    proptest! {
        #[test]
        fn parsers_never_panic(value in any_value()) {
            let _ = xread(value.clone());
            let _ = entries(value.clone());
            let _ = xinfo_stream(value.clone());
            let _ = entry_id(value);
        }

        #[test]
        fn well_formed_entries_round_trip(
            raw in proptest::collection::vec(
                (any::<u64>(), any::<u64>(), proptest::collection::vec(
                    (proptest::collection::vec(any::<u8>(), 0..6), proptest::collection::vec(any::<u8>(), 0..6)), 0..5)),
                0..5)
        ) {
            let reply = arr(vec![arr(vec![s("st"), arr(raw.iter().map(|(ms, seq, pairs)| {
                arr(vec![
                    s(&EntryId::new(*ms, *seq).to_string()),
                    arr(pairs.iter().flat_map(|(k, v)| [b(k), b(v)]).collect()),
                ])
            }).collect())])]);
            let got = xread(reply);
            prop_assert!(got.is_ok());
            let got = got.unwrap_or_default();
            prop_assert_eq!(got.len(), raw.len());
            for (entry, (ms, seq, pairs)) in got.iter().zip(&raw) {
                prop_assert_eq!(entry.id, EntryId::new(*ms, *seq));
                let want: Vec<(Bytes, Bytes)> = pairs.iter()
                    .map(|(k, v)| (Bytes::copy_from_slice(k), Bytes::copy_from_slice(v))).collect();
                prop_assert_eq!(&entry.fields, &want);
            }
        }
    }
}
