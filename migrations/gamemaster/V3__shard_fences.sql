-- Shards, their fencing epochs and checkpoints (issue 14; decision 0023).
--
-- Games are partitioned into a fixed number of shards (contracts::shards). An instance
-- claims a shard by raising its epoch; every health batch is committed only if each of
-- its shards still holds the epoch the instance claimed it under, and moves the shard's
-- checkpoint (the last entry applied) in the same transaction. So an instance that lost a
-- shard (paused past its lease, partitioned) cannot commit for it after the new owner
-- claimed it, and an entry at or below a checkpoint is never applied again.

-- The deployment's shard count, set by the first claim; one row.
CREATE TABLE gm_shard_layout (
    singleton   boolean     NOT NULL DEFAULT true,
    shard_count integer     NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT gm_shard_layout_pkey PRIMARY KEY (singleton),
    CONSTRAINT gm_shard_layout_one_row CHECK (singleton),
    CONSTRAINT gm_shard_layout_count_range CHECK (shard_count BETWEEN 1 AND 4096)
);

CREATE TABLE gm_shards (
    shard          integer     NOT NULL,
    -- Raised by every claim; a batch commits only under the current one.
    epoch          bigint      NOT NULL DEFAULT 0,
    -- The instance that made the last claim ('' before any).
    owner          text        NOT NULL DEFAULT '',
    claimed_at     timestamptz,
    -- The last applied entry of the shard (both NULL before the first).
    checkpoint_ms  bigint,
    checkpoint_seq bigint,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT gm_shards_pkey PRIMARY KEY (shard),
    CONSTRAINT gm_shards_shard_not_negative CHECK (shard >= 0),
    CONSTRAINT gm_shards_checkpoint_whole CHECK ((checkpoint_ms IS NULL) = (checkpoint_seq IS NULL))
)
-- Every batch rewrites its shards' rows: room for HOT updates.
WITH (fillfactor = 50);

COMMENT ON TABLE gm_shards IS
    'Game Master: per shard, the fencing epoch of its current owner and the last health entry applied.';

-- Claims `wanted` for `claimant` in a layout of `layout_count` shards: sets the layout on
-- the first call (GM003 when it differs from the stored one, or a shard is outside it),
-- creates the shards' rows, then raises each wanted shard's epoch, locking the rows in
-- shard order so concurrent claims cannot deadlock. Returns each claimed shard's new
-- epoch and its checkpoint.
CREATE FUNCTION gm_claim_shards(claimant text, layout_count integer, wanted integer[])
RETURNS TABLE (shard integer, epoch bigint, checkpoint_ms bigint, checkpoint_seq bigint)
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
     RETURNING g.shard, g.epoch, g.checkpoint_ms, g.checkpoint_seq;
END
$$;

-- The fenced batch write: the guarded write of V2, then, for each shard of the batch,
-- the checkpoint moves to the batch's last entry of it, but only under the epoch the
-- writer holds. If any shard's epoch moved (or its row is missing), it raises GM002,
-- naming the first such shard in DETAIL, and the statement's (or the
-- locked path's) transaction rolls back with nothing written. The rows of
-- runtime_records are locked before those of gm_shards on both write paths, so two
-- writers never wait on each other in opposite orders.
CREATE FUNCTION runtime_records_write_fenced(
    game_ids        text[],
    expected        text[],
    statuses        text[],
    engine_healths  text[],
    shards          integer[],
    epochs          bigint[],
    through_ms      bigint[],
    through_seq     bigint[]
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
           updated_at = now()
      FROM unnest(shards, epochs, through_ms, through_seq) AS u(shard, epoch, ms, seq)
     WHERE g.shard = u.shard AND g.epoch = u.epoch;
    GET DIAGNOSTICS fenced = ROW_COUNT;
    IF fenced <> cardinality(shards) THEN
        SELECT min(u.shard) INTO lost
          FROM unnest(shards, epochs) AS u(shard, epoch)
         WHERE NOT EXISTS (SELECT 1 FROM gm_shards AS g WHERE g.shard = u.shard AND g.epoch = u.epoch);
        -- DETAIL carries the shard alone, for the caller to read.
        RAISE EXCEPTION 'shard % is held under another epoch than %', lost,
                        epochs[array_position(shards, lost)]
              USING ERRCODE = 'GM002', DETAIL = lost::text;
    END IF;
END
$$;

COMMENT ON FUNCTION runtime_records_write_fenced(text[], text[], text[], text[], integer[], bigint[], bigint[], bigint[]) IS
    'Game Master: the guarded health batch write, committed only under each shard''s current epoch, moving its checkpoint.';
