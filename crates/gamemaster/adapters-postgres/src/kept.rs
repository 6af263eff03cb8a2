//! The snapshots a batch write keeps until they are known sent (migration V5), as one
//! chunk of bytes per write: for each snapshot its shard, entry, game, status and summary.
//! The current turn is not kept: a republish takes the game's as stored then.
//!
//! A chunk is a version byte (1), then per snapshot: the shard (4 bytes), the entry's
//! milliseconds and sequence (8 bytes each), all big-endian, then the game id, the status
//! and the summary (its stored text, empty for none), each as a 2-byte big-endian length
//! and UTF-8 bytes.

use domain_runtime::{EngineHealth, EntryPosition, GameId, RuntimeStatus};
use ports::Error;

/// The chunk format written now.
const VERSION: u8 = 1;

/// One kept snapshot, as a chunk holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Kept {
    pub(crate) shard: u32,
    pub(crate) entry: EntryPosition,
    pub(crate) game_id: GameId,
    pub(crate) status: RuntimeStatus,
    pub(crate) engine_health: Option<EngineHealth>,
}

/// Appends one snapshot to `chunk` (started with the version byte when empty).
pub(crate) fn push(
    chunk: &mut Vec<u8>,
    shard: u32,
    entry: EntryPosition,
    game_id: &str,
    status: RuntimeStatus,
    engine_health: Option<EngineHealth>,
) -> Result<(), Error> {
    let texts = [game_id, status.as_str(), EngineHealth::wire(engine_health)];
    let mut lens = [0u16; 3];
    for (len, text) in lens.iter_mut().zip(texts) {
        *len = u16::try_from(text.len()).map_err(|_| {
            Error::Invalid(format!("{} bytes do not fit a kept snapshot", text.len()))
        })?;
    }
    if chunk.is_empty() {
        chunk.push(VERSION);
    }
    chunk.extend_from_slice(&shard.to_be_bytes());
    chunk.extend_from_slice(&entry.ms.to_be_bytes());
    chunk.extend_from_slice(&entry.seq.to_be_bytes());
    for (len, text) in lens.into_iter().zip(texts) {
        chunk.extend_from_slice(&len.to_be_bytes());
        chunk.extend_from_slice(text.as_bytes());
    }
    Ok(())
}

/// The snapshots of `chunk`, in order.
///
/// # Errors
/// [`Error::Backend`] for a chunk this code did not write (another version, cut short,
/// or a field that does not parse).
pub(crate) fn decode(chunk: &[u8]) -> Result<Vec<Kept>, Error> {
    let corrupt = |why: &str| Error::Backend(format!("a kept snapshot chunk is {why}").into());
    let Some((&version, mut rest)) = chunk.split_first() else {
        return Err(corrupt("empty"));
    };
    if version != VERSION {
        return Err(corrupt(&format!("of version {version}")));
    }
    let mut kept = Vec::new();
    while !rest.is_empty() {
        let shard = take_u32(&mut rest);
        let (ms, seq) = (take_u64(&mut rest), take_u64(&mut rest));
        let (game, status, health) = (
            take_text(&mut rest),
            take_text(&mut rest),
            take_text(&mut rest),
        );
        let (Some(shard), Some(ms), Some(seq), Some(game), Some(status), Some(health)) =
            (shard, ms, seq, game, status, health)
        else {
            return Err(corrupt("cut short"));
        };
        kept.push(Kept {
            shard,
            entry: EntryPosition { ms, seq },
            game_id: GameId::new(game)
                .map_err(|e| corrupt(&format!("naming a bad game id: {e}")))?,
            status: status
                .parse()
                .map_err(|e| corrupt(&format!("holding a bad status: {e}")))?,
            engine_health: EngineHealth::parse_stored(health)
                .map_err(|e| corrupt(&format!("holding a bad summary: {e}")))?,
        });
    }
    Ok(kept)
}

fn take_u32(rest: &mut &[u8]) -> Option<u32> {
    let (head, tail) = rest.split_first_chunk::<4>()?;
    *rest = tail;
    Some(u32::from_be_bytes(*head))
}

fn take_u64(rest: &mut &[u8]) -> Option<u64> {
    let (head, tail) = rest.split_first_chunk::<8>()?;
    *rest = tail;
    Some(u64::from_be_bytes(*head))
}

fn take_text<'a>(rest: &mut &'a [u8]) -> Option<&'a str> {
    let (len, tail) = rest.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*len));
    if tail.len() < len {
        return None;
    }
    let (text, tail) = tail.split_at(len);
    *rest = tail;
    std::str::from_utf8(text).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_chunk_gives_back_what_was_pushed_and_refuses_what_it_is_not() {
        let at = |seq| EntryPosition {
            ms: 1_700_000_000_000,
            seq,
        };
        let mut chunk = Vec::new();
        push(&mut chunk, 7, at(1), "g-1", RuntimeStatus::Running, None).unwrap();
        push(
            &mut chunk,
            63,
            at(2),
            "ゲーム",
            RuntimeStatus::EngineUnreachable,
            Some(EngineHealth::Oom),
        )
        .unwrap();
        let kept = decode(&chunk).unwrap();
        assert_eq!(
            kept,
            [
                Kept {
                    shard: 7,
                    entry: at(1),
                    game_id: GameId::new("g-1").unwrap(),
                    status: RuntimeStatus::Running,
                    engine_health: None,
                },
                Kept {
                    shard: 63,
                    entry: at(2),
                    game_id: GameId::new("ゲーム").unwrap(),
                    status: RuntimeStatus::EngineUnreachable,
                    engine_health: Some(EngineHealth::Oom),
                },
            ]
        );
        let refused = [
            Vec::new(),
            vec![2],
            chunk[..chunk.len() - 1].to_vec(),
            [&chunk[..], &[0, 0][..]].concat(),
        ];
        for bad in refused {
            assert!(decode(&bad).is_err(), "{bad:?}");
        }
        let long = "x".repeat(usize::from(u16::MAX) + 1);
        assert!(push(&mut chunk, 1, at(3), &long, RuntimeStatus::Running, None).is_err());
        assert_eq!(
            decode(&chunk).unwrap().len(),
            2,
            "a refused push leaves the chunk whole"
        );
    }
}
