-- The Runtime Manager's registry of the runtimes it started, and its operation log
-- (SPEC §RTM, seed 004).
--
-- runtimes: one row per game whose engine the Runtime Manager started. Every status change
-- is a compare-and-swap on the status it expects (`UPDATE … WHERE status = $expected`), so
-- two flows (a stop job and an operator) cannot both move one runtime.
CREATE TABLE runtimes (
    game_id         text        NOT NULL,
    status          text        NOT NULL,
    -- The engine's id in its container runtime (for the process driver: pid and start
    -- time, so a reused pid is never mistaken for the engine).
    container_id    text        NOT NULL,
    engine_endpoint text        NOT NULL,
    started_at      timestamptz NOT NULL DEFAULT now(),
    stopped_at      timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT runtimes_pkey PRIMARY KEY (game_id),
    CONSTRAINT runtimes_game_id_not_empty CHECK (game_id <> ''),
    CONSTRAINT runtimes_status_known CHECK (status IN ('running', 'stopped', 'removed')),
    CONSTRAINT runtimes_stopped_at_when_stopped CHECK ((status = 'running') = (stopped_at IS NULL))
);

COMMENT ON TABLE runtimes IS
    'Runtime Manager: the runtimes it started, their status, container id and endpoint.';

-- operation_log: one row per start and stop the Runtime Manager carried out or refused,
-- with the job result it answered. A stop from runtime:stop_jobs is logged once per stream
-- entry (the unique key below): a job retried after a crash finds its row and answers the
-- result it recorded, never a second, different one.
CREATE TABLE operation_log (
    id              bigint      GENERATED ALWAYS AS IDENTITY,
    game_id         text        NOT NULL,
    operation       text        NOT NULL,
    source          text        NOT NULL,
    -- The stream entry id for `lobby_stream`; the operator's reference for `admin`.
    source_ref      text        NOT NULL,
    outcome         text        NOT NULL,
    error_code      text        NOT NULL DEFAULT '',
    error_message   text        NOT NULL DEFAULT '',
    container_id    text        NOT NULL DEFAULT '',
    engine_endpoint text        NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT operation_log_pkey PRIMARY KEY (id),
    CONSTRAINT operation_log_operation_known CHECK (operation IN ('start', 'stop')),
    CONSTRAINT operation_log_source_known CHECK (source IN ('lobby_stream', 'admin')),
    CONSTRAINT operation_log_outcome_known CHECK (outcome IN ('success', 'failure')),
    CONSTRAINT operation_log_once_per_source UNIQUE (operation, source, source_ref)
);

CREATE INDEX operation_log_game ON operation_log (game_id, id);

COMMENT ON TABLE operation_log IS
    'Runtime Manager: every start and stop, its source and the result answered.';
