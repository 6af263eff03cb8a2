-- The Lobby's stop requests (SPEC §Lobby, issue 13): one row per stop the Lobby asks the
-- Runtime Manager for, written in the same transaction that finishes a game (or by an
-- operator's `lobby stop-game`), and appended to runtime:stop_jobs by the running Lobby.
-- A replayed game_finished finds the game finished already and writes no second row.
CREATE TABLE stop_requests (
    id              bigint      GENERATED ALWAYS AS IDENTITY,
    game_id         text        NOT NULL,
    reason          text        NOT NULL,
    requested_at    timestamptz NOT NULL DEFAULT now(),
    -- The runtime:stop_jobs entry it was appended as; NULL until then.
    stream_entry_id text,
    sent_at         timestamptz,

    CONSTRAINT stop_requests_pkey PRIMARY KEY (id),
    CONSTRAINT stop_requests_game FOREIGN KEY (game_id) REFERENCES games (game_id),
    CONSTRAINT stop_requests_reason_known CHECK (reason IN (
        'admin_request', 'game_finished', 'cancelled', 'lobby_cleanup'
    )),
    CONSTRAINT stop_requests_sent_together CHECK ((stream_entry_id IS NULL) = (sent_at IS NULL))
);

CREATE INDEX stop_requests_pending ON stop_requests (id) WHERE stream_entry_id IS NULL;

COMMENT ON TABLE stop_requests IS
    'Game Lobby: stops asked of the Runtime Manager, and the stop job each was sent as.';
