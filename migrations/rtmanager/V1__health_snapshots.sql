-- The Runtime Manager's health snapshots: the latest observation of each game's engine
-- container, one row per game, replaced on every observation (SPEC §RTM, seed 003).
--
-- The publisher upserts the row before it appends the event to runtime:health_events, so
-- this table is never behind the stream. It may share a database with the Game Master's
-- runtime_records: refinery keeps this service's history in its own table
-- (rtmanager_schema_history).
CREATE TABLE health_snapshots (
    game_id      text        NOT NULL,
    container_id text        NOT NULL,
    status       text        NOT NULL,
    source       text        NOT NULL,
    -- Observer-specific details; '{}' when the publisher was given none.
    details      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    observed_at  timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT health_snapshots_pkey PRIMARY KEY (game_id),
    CONSTRAINT health_snapshots_game_id_not_empty CHECK (game_id <> ''),
    CONSTRAINT health_snapshots_status_known CHECK (status IN (
        'healthy',
        'probe_failed',
        'inspect_unhealthy',
        'exited',
        'oom',
        'container_disappeared'
    )),
    CONSTRAINT health_snapshots_source_known CHECK (source IN (
        'docker_event',
        'inspect',
        'probe'
    )),
    CONSTRAINT health_snapshots_details_object CHECK (jsonb_typeof(details) = 'object')
);

COMMENT ON TABLE health_snapshots IS
    'Runtime Manager: the latest health observation of each game''s engine container.';
