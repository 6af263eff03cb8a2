-- The Game Lobby's schema for the gm:lobby_events consumer (SPEC §Lobby).
-- Tables live in the database's default schema; their names do not clash with the Game
-- Master's or the Runtime Manager's, so the three services can share one database.

-- One row per game the Lobby knows. The runtime snapshot columns are the Lobby's
-- denormalised copy of the Game Master's state, written by runtime_snapshot_update and
-- game_finished; snapshot_observed_at_ms is NULL until the first snapshot arrives.
CREATE TABLE games (
    game_id                 text        NOT NULL,
    status                  text        NOT NULL,
    current_turn            bigint      NOT NULL DEFAULT 0,
    runtime_status          text        NOT NULL DEFAULT '',
    engine_health_summary   text        NOT NULL DEFAULT '',
    snapshot_observed_at_ms bigint,
    finished_at             timestamptz,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT games_pkey PRIMARY KEY (game_id),
    CONSTRAINT games_game_id_not_empty CHECK (game_id <> ''),
    CONSTRAINT games_status_known CHECK (status IN (
        'draft', 'open', 'ready', 'starting', 'running', 'paused', 'finished', 'cancelled'
    )),
    CONSTRAINT games_current_turn_range CHECK (current_turn BETWEEN 0 AND 4294967295),
    CONSTRAINT games_snapshot_observed_at_positive CHECK (snapshot_observed_at_ms > 0),
    -- A finished game always knows when it finished, and only a finished game does.
    CONSTRAINT games_finished_at_iff_finished CHECK ((status = 'finished') = (finished_at IS NOT NULL))
)
-- Every snapshot rewrites the row and no rewritten column is indexed: leave room for HOT
-- updates.
WITH (fillfactor = 80);

-- Each player's stats in each game: the first observation (frozen) and the maximum of
-- every component over all observations.
CREATE TABLE game_player_stats (
    game_id             text        NOT NULL,
    user_id             text        NOT NULL,
    initial_planets     bigint      NOT NULL,
    initial_population  bigint      NOT NULL,
    initial_ships_built bigint      NOT NULL,
    max_planets         bigint      NOT NULL,
    max_population      bigint      NOT NULL,
    max_ships_built     bigint      NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT game_player_stats_pkey PRIMARY KEY (game_id, user_id),
    CONSTRAINT game_player_stats_game_fkey FOREIGN KEY (game_id)
        REFERENCES games (game_id) ON DELETE CASCADE,
    CONSTRAINT game_player_stats_user_id_not_empty CHECK (user_id <> ''),
    CONSTRAINT game_player_stats_not_negative CHECK (
        initial_planets >= 0 AND initial_population >= 0 AND initial_ships_built >= 0
    ),
    CONSTRAINT game_player_stats_max_not_below_initial CHECK (
        max_planets >= initial_planets
        AND max_population >= initial_population
        AND max_ships_built >= initial_ships_built
    )
) WITH (fillfactor = 80);

-- The capability-evaluation guard: a row here means the game's stats were folded into
-- the players' careers. Written in the same transaction as that fold.
CREATE TABLE evaluation_guards (
    game_id      text        NOT NULL,
    finished_at  timestamptz NOT NULL,
    evaluated_at timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT evaluation_guards_pkey PRIMARY KEY (game_id),
    CONSTRAINT evaluation_guards_game_fkey FOREIGN KEY (game_id)
        REFERENCES games (game_id) ON DELETE CASCADE
);

-- Each player's record across finished games.
CREATE TABLE player_careers (
    user_id          text        NOT NULL,
    games_finished   bigint      NOT NULL DEFAULT 0,
    best_planets     bigint      NOT NULL DEFAULT 0,
    best_population  bigint      NOT NULL DEFAULT 0,
    most_ships_built bigint      NOT NULL DEFAULT 0,
    updated_at       timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT player_careers_pkey PRIMARY KEY (user_id),
    CONSTRAINT player_careers_user_id_not_empty CHECK (user_id <> ''),
    CONSTRAINT player_careers_not_negative CHECK (
        games_finished BETWEEN 0 AND 4294967295
        AND best_planets >= 0 AND best_population >= 0 AND most_ships_built >= 0
    )
);

COMMENT ON TABLE games IS
    'Game Lobby: one row per game, with the denormalised runtime snapshot from gm:lobby_events.';
COMMENT ON COLUMN games.snapshot_observed_at_ms IS
    'occurred_at_ms of the stored snapshot; an older snapshot never overwrites a newer one. NULL before the first.';
COMMENT ON TABLE game_player_stats IS
    'Game Lobby: per game and player, the first observed stats (frozen) and the per-component maxima.';
COMMENT ON TABLE evaluation_guards IS
    'Game Lobby: games whose capability evaluation (career fold) ran; makes it run once per game.';
COMMENT ON TABLE player_careers IS
    'Game Lobby: per player, games finished and the best of each stat over finished games.';
