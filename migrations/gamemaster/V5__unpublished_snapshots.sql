-- Each shard keeps the snapshots its owner committed but is not known to have published
-- (issue 14; decision 0026).
--
-- A batch's snapshots are decided before its write and kept with their shard in the
-- batch's own transaction. They stay until the shard's published mark passes them (the
-- writer saw them go out). An instance that takes the shard over, or restarts, publishes
-- the ones still kept, exactly as they were decided: the Lobby loses none, and the ones
-- it had already it drops by their `source_entry_id`.

CREATE TYPE gm_snapshot AS (
    entry_ms      bigint,
    entry_seq     bigint,
    game_id       text,
    status        text,
    engine_health text
);

ALTER TABLE gm_shards ADD COLUMN unpublished gm_snapshot[] NOT NULL DEFAULT '{}';

-- The snapshots of `kept` after `ms-seq` (all of them when it is NULL), in order.
CREATE FUNCTION gm_snapshots_after(kept gm_snapshot[], ms bigint, seq bigint)
RETURNS gm_snapshot[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN ms IS NULL OR cardinality(kept) = 0 THEN kept
                ELSE ARRAY(SELECT k FROM unnest(kept) AS k
                            WHERE (k.entry_ms, k.entry_seq) > (ms, seq)
                            ORDER BY k.entry_ms, k.entry_seq)
           END
$$;

-- The fenced batch write of V4, now with a published mark per shard (`marks_ms` and
-- `marks_seq`, parallel to `shards`; NULL where the writer knows of none) and the
-- batch's snapshots (`snap_*`, parallel arrays), kept with their shards.
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
    snap_shards     integer[],
    snap_ms         bigint[],
    snap_seq        bigint[],
    snap_games      text[],
    snap_statuses   text[],
    snap_healths    text[]
)
RETURNS TABLE (game_id text, current_turn integer, created_at timestamptz, updated_at timestamptz)
LANGUAGE plpgsql
AS $$
DECLARE
    fenced bigint;
    lost   integer;
BEGIN
    RETURN QUERY SELECT * FROM runtime_records_write_guarded(game_ids, expected, statuses, engine_healths);
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
           unpublished    = gm_snapshots_after(gm_snapshots_after(g.unpublished, g.published_ms, g.published_seq),
                                               u.mark_ms, u.mark_seq)
                            || COALESCE(n.kept, '{}'),
           updated_at = now()
      FROM unnest(shards, epochs, through_ms, through_seq, marks_ms, marks_seq)
               AS u(shard, epoch, ms, seq, mark_ms, mark_seq)
      LEFT JOIN (SELECT s.shard,
                        array_agg(ROW(s.ms, s.seq, s.game_id, s.status, s.engine_health)::gm_snapshot
                                  ORDER BY s.ms, s.seq) AS kept
                   FROM unnest(snap_shards, snap_ms, snap_seq, snap_games, snap_statuses, snap_healths)
                        AS s(shard, ms, seq, game_id, status, engine_health)
                  GROUP BY s.shard) AS n ON n.shard = u.shard
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

COMMENT ON FUNCTION runtime_records_write_fenced(text[], text[], text[], text[], integer[], bigint[], bigint[], bigint[], bigint[], bigint[], integer[], bigint[], bigint[], text[], text[], text[]) IS
    'Game Master: the guarded health batch write, committed only under each shard''s current epoch, moving its checkpoint and published mark and keeping the batch''s snapshots with it.';
