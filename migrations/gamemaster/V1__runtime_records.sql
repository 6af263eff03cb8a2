-- The Game Master's runtime records: one row per game runtime (SPEC §Interfaces).
--
-- Other tools insert with
--   INSERT INTO runtime_records (game_id, status, current_turn) VALUES ($1, $2, $3)
-- so every other column has a default. Tables live in the database's default schema.
CREATE TABLE runtime_records (
    game_id       text        NOT NULL,
    status        text        NOT NULL,
    -- The last engine-health summary; '' until the first observation.
    engine_health text        NOT NULL DEFAULT '',
    current_turn  integer     NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT runtime_records_pkey PRIMARY KEY (game_id),
    CONSTRAINT runtime_records_game_id_not_empty CHECK (game_id <> ''),
    CONSTRAINT runtime_records_status_known CHECK (status IN (
        'running',
        'generation_in_progress',
        'generation_failed',
        'engine_unreachable',
        'stopped',
        'finished'
    )),
    CONSTRAINT runtime_records_engine_health_known CHECK (engine_health IN (
        '',
        'healthy',
        'probe_failed',
        'inspect_unhealthy',
        'exited',
        'oom',
        'disappeared'
    )),
    CONSTRAINT runtime_records_current_turn_not_negative CHECK (current_turn >= 0)
)
-- Every health observation rewrites a row, and no updated column is indexed: free space
-- in each page lets those be HOT updates (no index write, less bloat).
WITH (fillfactor = 80);

COMMENT ON TABLE runtime_records IS
    'Game Master: one runtime record per game (status, engine-health summary, current turn).';
COMMENT ON COLUMN runtime_records.engine_health IS
    'Last engine-health summary written by the health-events consumer; empty until the first observation.';
