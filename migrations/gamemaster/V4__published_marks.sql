-- Each shard's "published through" mark (issue 14; decision 0025).
--
-- The position through which every snapshot of the shard's applied entries has gone out
-- (or needed none). An instance that takes a shard over republishes only the entries
-- between this mark and the checkpoint: those whose snapshots its previous owner may not
-- have published. Every batch write moves it for the batch's shards to the writer's own
-- mark, and the idle advance for the writer's other shards; it may run ahead of the
-- checkpoint (the writer's mark covers every shard it owns).

ALTER TABLE gm_shards
    ADD COLUMN published_ms  bigint,
    ADD COLUMN published_seq bigint,
    ADD CONSTRAINT gm_shards_published_whole CHECK ((published_ms IS NULL) = (published_seq IS NULL));

-- The claim now also returns the mark.
DROP FUNCTION gm_claim_shards(text, integer, integer[]);

CREATE FUNCTION gm_claim_shards(claimant text, layout_count integer, wanted integer[])
RETURNS TABLE (shard integer, epoch bigint, checkpoint_ms bigint, checkpoint_seq bigint,
               published_ms bigint, published_seq bigint)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    stored integer;
BEGIN
    INSERT INTO gm_shard_layout (shard_count) VALUES (layout_count) ON CONFLICT DO NOTHING;
    SELECT shard_count INTO stored FROM gm_shard_layout;
    IF stored <> layout_count THEN
        RAISE EXCEPTION 'the database is laid out in % shards, not %', stored, layout_count
              USING ERRCODE = 'GM003';
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(wanted) AS w(s) WHERE w.s < 0 OR w.s >= stored) THEN
        RAISE EXCEPTION 'a claimed shard is outside the layout of % shards', stored
              USING ERRCODE = 'GM003';
    END IF;
    INSERT INTO gm_shards (shard) SELECT generate_series(0, stored - 1) ON CONFLICT DO NOTHING;
    RETURN QUERY
        WITH locked AS (
            SELECT g.shard FROM gm_shards AS g
             WHERE g.shard = ANY (wanted) ORDER BY g.shard FOR UPDATE
        )
        UPDATE gm_shards AS g
           SET epoch = g.epoch + 1, owner = claimant, claimed_at = now(), updated_at = now()
          FROM locked
         WHERE g.shard = locked.shard
     RETURNING g.shard, g.epoch, g.checkpoint_ms, g.checkpoint_seq, g.published_ms, g.published_seq;
END
$$;

-- The fenced batch write of V3, also moving the batch's shards' marks up to the writer's
-- (`mark_ms`/`mark_seq`, both NULL when it knows of none).
DROP FUNCTION runtime_records_write_fenced(text[], text[], text[], text[], integer[], bigint[], bigint[], bigint[]);

CREATE FUNCTION runtime_records_write_fenced(
    game_ids        text[],
    expected        text[],
    statuses        text[],
    engine_healths  text[],
    shards          integer[],
    epochs          bigint[],
    through_ms      bigint[],
    through_seq     bigint[],
    mark_ms         bigint,
    mark_seq        bigint
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
           published_ms   = CASE WHEN mark_ms IS NOT NULL AND (g.published_ms IS NULL
                                      OR (mark_ms, mark_seq) > (g.published_ms, g.published_seq))
                                 THEN mark_ms ELSE g.published_ms END,
           published_seq  = CASE WHEN mark_ms IS NOT NULL AND (g.published_ms IS NULL
                                      OR (mark_ms, mark_seq) > (g.published_ms, g.published_seq))
                                 THEN mark_seq ELSE g.published_seq END,
           updated_at = now()
      FROM unnest(shards, epochs, through_ms, through_seq) AS u(shard, epoch, ms, seq)
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

COMMENT ON FUNCTION runtime_records_write_fenced(text[], text[], text[], text[], integer[], bigint[], bigint[], bigint[], bigint, bigint) IS
    'Game Master: the guarded health batch write, committed only under each shard''s current epoch, moving its checkpoint and published mark.';
