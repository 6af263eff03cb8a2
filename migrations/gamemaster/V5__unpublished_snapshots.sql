-- Each shard keeps the snapshots its owner committed but is not known to have published
-- (issue 14; decision 0026).
--
-- A batch's snapshots are decided before its write and kept with their shard in the
-- batch's own transaction. They stay until the shard's published mark passes them (the
-- writer saw them go out). An instance that takes the shard over, or restarts, publishes
-- the ones still kept, exactly as they were decided: the Lobby loses none, and the ones
-- it had already it drops by their `source_entry_id`.

-- Kept as chunks: each batch write appends one chunk per shard it touches (the shard's
-- snapshots of that write, encoded by the Game Master), with the last entry it holds; a
-- mark drops the chunks it passes whole. A chunk's entries all come after the previous
-- chunk's, so the chunks a mark passes are always the first ones.
ALTER TABLE gm_shards
    ADD COLUMN unpublished     bytea[]  NOT NULL DEFAULT '{}',
    ADD COLUMN unpublished_ms  bigint[] NOT NULL DEFAULT '{}',
    ADD COLUMN unpublished_seq bigint[] NOT NULL DEFAULT '{}';

-- Written on every batch and short-lived: not worth compressing.
ALTER TABLE gm_shards ALTER COLUMN unpublished SET STORAGE EXTERNAL;

-- How many of a shard's chunks (their last entries `ms`/`seq`) are at or below a mark,
-- the stored one `a` or the one being written `b` (either may be NULL).
CREATE FUNCTION gm_chunks_sent(ms bigint[], seq bigint[], a_ms bigint, a_seq bigint,
                               b_ms bigint, b_seq bigint)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT count(*)::integer FROM unnest(ms, seq) AS k(ms, seq)
     WHERE (a_ms IS NOT NULL AND (k.ms, k.seq) <= (a_ms, a_seq))
        OR (b_ms IS NOT NULL AND (k.ms, k.seq) <= (b_ms, b_seq))
$$;

-- The fenced batch write of V4, now with a published mark per shard (`marks_ms` and
-- `marks_seq`, parallel to `shards`; NULL where the writer knows of none) and a chunk of
-- snapshots per shard (`chunks`, with its last entry in `chunks_ms`/`chunks_seq`; NULL
-- where the write publishes nothing for the shard).
DROP FUNCTION runtime_records_write_fenced(text[], text[], text[], text[], integer[], bigint[], bigint[], bigint[], bigint, bigint);

CREATE FUNCTION runtime_records_write_fenced(
    game_ids        text[],
    expected        text[],
    statuses        text[],
    engine_healths  text[],
    shards          integer[],
    epochs          bigint[],
    through_ms      bigint[],
    through_seq     bigint[],
    marks_ms        bigint[],
    marks_seq       bigint[],
    chunks          bytea[],
    chunks_ms       bigint[],
    chunks_seq      bigint[]
)
RETURNS TABLE (game_id text, current_turn integer, created_at timestamptz, updated_at timestamptz)
LANGUAGE plpgsql
AS $$
DECLARE
    fenced bigint;
    lost   integer;
BEGIN
    RETURN QUERY SELECT * FROM runtime_records_write_guarded(game_ids, expected, statuses, engine_healths);
    -- `sent`: how many of the shard's kept chunks the new mark passes (read beside the
    -- row being updated; only this shard's owner writes it, and the epoch check decides).
    UPDATE gm_shards AS g
       SET checkpoint_ms  = CASE WHEN g.checkpoint_ms IS NULL OR (u.ms, u.seq) > (g.checkpoint_ms, g.checkpoint_seq)
                                 THEN u.ms ELSE g.checkpoint_ms END,
           checkpoint_seq = CASE WHEN g.checkpoint_ms IS NULL OR (u.ms, u.seq) > (g.checkpoint_ms, g.checkpoint_seq)
                                 THEN u.seq ELSE g.checkpoint_seq END,
           published_ms   = CASE WHEN u.mark_ms IS NOT NULL AND (g.published_ms IS NULL
                                      OR (u.mark_ms, u.mark_seq) > (g.published_ms, g.published_seq))
                                 THEN u.mark_ms ELSE g.published_ms END,
           published_seq  = CASE WHEN u.mark_ms IS NOT NULL AND (g.published_ms IS NULL
                                      OR (u.mark_ms, u.mark_seq) > (g.published_ms, g.published_seq))
                                 THEN u.mark_seq ELSE g.published_seq END,
           unpublished     = g.unpublished[1 + u.sent:]
                             || CASE WHEN u.chunk IS NULL THEN '{}'::bytea[] ELSE ARRAY[u.chunk] END,
           unpublished_ms  = g.unpublished_ms[1 + u.sent:]
                             || CASE WHEN u.chunk IS NULL THEN '{}'::bigint[] ELSE ARRAY[u.chunk_ms] END,
           unpublished_seq = g.unpublished_seq[1 + u.sent:]
                             || CASE WHEN u.chunk IS NULL THEN '{}'::bigint[] ELSE ARRAY[u.chunk_seq] END,
           updated_at = now()
      FROM (SELECT w.*, gm_chunks_sent(s.unpublished_ms, s.unpublished_seq, s.published_ms,
                                       s.published_seq, w.mark_ms, w.mark_seq) AS sent
              FROM unnest(shards, epochs, through_ms, through_seq, marks_ms, marks_seq,
                          chunks, chunks_ms, chunks_seq)
                       AS w(shard, epoch, ms, seq, mark_ms, mark_seq, chunk, chunk_ms, chunk_seq)
              JOIN gm_shards AS s ON s.shard = w.shard) AS u
     WHERE g.shard = u.shard AND g.epoch = u.epoch;
    GET DIAGNOSTICS fenced = ROW_COUNT;
    IF fenced <> cardinality(shards) THEN
        SELECT min(u.shard) INTO lost
          FROM unnest(shards, epochs) AS u(shard, epoch)
         WHERE NOT EXISTS (SELECT 1 FROM gm_shards AS g WHERE g.shard = u.shard AND g.epoch = u.epoch);
        RAISE EXCEPTION 'shard % is held under another epoch than %', lost,
                        epochs[array_position(shards, lost)]
              USING ERRCODE = 'GM002', DETAIL = lost::text;
    END IF;
END
$$;

COMMENT ON FUNCTION runtime_records_write_fenced(text[], text[], text[], text[], integer[], bigint[], bigint[], bigint[], bigint[], bigint[], bytea[], bigint[], bigint[]) IS
    'Game Master: the guarded health batch write, committed only under each shard''s current epoch, moving its checkpoint and published mark and keeping the batch''s snapshots with it.';
