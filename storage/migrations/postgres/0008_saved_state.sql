-- A front end's dynamic state (bindings, publications, subscriptions) as it stopped, written
-- on a graceful stop and taken back (read and deleted) when it starts again: a restart in
-- place keeps its users reachable and its watchers notified.
CREATE TABLE saved_state (
    member   TEXT PRIMARY KEY,
    saved_at BIGINT NOT NULL,
    data     TEXT NOT NULL
);
