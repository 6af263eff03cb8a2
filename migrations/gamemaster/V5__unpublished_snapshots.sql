-- The snapshots a writer committed but is not known to have published (issue 14;
-- decision 0026).
--
-- A batch's snapshots are decided before its write and kept in the batch's own
-- transaction. They stay until the publish carrying them went out. An instance that
-- takes a shard over, or restarts, publishes the ones kept after the shard's published
-- mark, exactly as they were decided: the Lobby loses none, and the ones it had already
-- it drops by their `source_entry_id`.

-- Kept as one row per write: the write's snapshots, encoded by the Game Master (shard,
-- entry, game, status, summary each), the shards they are of, and the write's last entry.
-- The writer (a token of its process) deletes its rows once the publish that carried
-- their snapshots went out: the publishes are numbered (`publish`), and each write names
-- the last number that went out. Rows of writers gone are deleted once the published
-- marks of all their shards pass their last entry. A reader filters by those marks.
-- No key of its own: rows are only ever found by writer and publish number (the one
-- index, kept as small as a write can make it) or read whole by a new owner.
CREATE TABLE gm_unpublished (
    writer      text      NOT NULL,
    publish     bigint    NOT NULL,
    through_ms  bigint    NOT NULL,
    through_seq bigint    NOT NULL,
    shards      integer[] NOT NULL,
    chunk       bytea     NOT NULL
);

CREATE INDEX gm_unpublished_writer ON gm_unpublished (writer, publish);

-- Written and deleted within seconds: not worth compressing.
ALTER TABLE gm_unpublished ALTER COLUMN chunk SET STORAGE EXTERNAL;

-- The fenced batch write of V4, now with a published mark per shard (`marks_ms` and
-- `marks_seq`, parallel to `shards`; NULL where the writer knows of none), the write's
-- snapshots (`chunk`, NULL when none; of `chunk_shards`, through `chunk_ms-chunk_seq`,
-- carried by publish number `publish` of `writer`), and the publishes of `writer` gone
-- out whose rows are still there (`sent_from` through `sent`, NULL when none): those
-- rows are deleted. The range keeps the delete from walking the index over rows it
-- deleted before.
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
    writer          text,
    publish         bigint,
    sent_from       bigint,
    sent            bigint,
    chunk           bytea,
    chunk_shards    integer[],
    chunk_ms        bigint,
    chunk_seq       bigint
)
RETURNS TABLE (game_id text, current_turn integer, created_at timestamptz, updated_at timestamptz)
LANGUAGE plpgsql
AS $$
#variable_conflict use_variable
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
           updated_at = now()
      FROM unnest(shards, epochs, through_ms, through_seq, marks_ms, marks_seq)
               AS u(shard, epoch, ms, seq, mark_ms, mark_seq)
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
    IF chunk IS NOT NULL THEN
        INSERT INTO gm_unpublished (writer, publish, through_ms, through_seq, shards, chunk)
        VALUES (writer, publish, chunk_ms, chunk_seq, chunk_shards, chunk);
    END IF;
    IF sent IS NOT NULL THEN
        DELETE FROM gm_unpublished AS p
         WHERE p.writer = writer AND p.publish BETWEEN sent_from AND sent;
    END IF;
END
$$;

COMMENT ON FUNCTION runtime_records_write_fenced(text[], text[], text[], text[], integer[], bigint[], bigint[], bigint[], bigint[], bigint[], text, bigint, bigint, bigint, bytea, integer[], bigint, bigint) IS
    'Game Master: the guarded health batch write, committed only under each shard''s current epoch, moving its checkpoint and published mark and keeping the write''s snapshots until they are known sent.';
