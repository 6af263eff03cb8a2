-- Each game's last stop, as the Runtime Manager answered it on runtime:job_results (SPEC
-- §Lobby, issue 13): the outcome, the error code and message, and when the engine stopped.
-- A result carries its stop job's entry id, which orders the answers as the jobs were
-- asked, so a replayed older one never overwrites a newer one.
ALTER TABLE games
    ADD COLUMN stop_outcome       text,
    ADD COLUMN stop_error_code    text NOT NULL DEFAULT '',
    ADD COLUMN stop_error_message text NOT NULL DEFAULT '',
    -- When the Lobby learnt the engine stopped; on a success only.
    ADD COLUMN stopped_at         timestamptz,
    ADD COLUMN stop_answer_ms     bigint,
    ADD COLUMN stop_answer_seq    bigint,
    ADD CONSTRAINT games_stop_outcome_known CHECK (stop_outcome IN ('success', 'failure')),
    ADD CONSTRAINT games_stop_answer_whole CHECK (
        (stop_outcome IS NULL) = (stop_answer_ms IS NULL)
        AND (stop_answer_ms IS NULL) = (stop_answer_seq IS NULL)
    ),
    ADD CONSTRAINT games_stopped_at_iff_success CHECK (
        (stop_outcome IS NOT DISTINCT FROM 'success') = (stopped_at IS NOT NULL)
    );

COMMENT ON COLUMN games.stop_outcome IS
    'The outcome of the last stop the Runtime Manager answered for this game (NULL: none yet).';
