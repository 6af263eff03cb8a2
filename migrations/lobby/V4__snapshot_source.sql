-- The health entry the stored snapshot reflects (issue 14), when the Game Master said:
-- snapshots that both name one are ordered by it, whatever the publishers' clocks, so a
-- duplicate or an older one from another Game Master instance is dropped.
ALTER TABLE games
    ADD COLUMN snapshot_source_ms  bigint,
    ADD COLUMN snapshot_source_seq bigint,
    ADD CONSTRAINT games_snapshot_source_whole CHECK (
        (snapshot_source_ms IS NULL) = (snapshot_source_seq IS NULL)
    );
