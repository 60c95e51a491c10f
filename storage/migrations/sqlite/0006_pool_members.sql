-- The front ends of a pool, as each announces itself: where the others reach it, its heartbeat
-- (milliseconds since the Unix epoch by the database's clock, so that members' clocks need not
-- agree), whether it is leaving, and what it holds (for `sipfront pool status`).
CREATE TABLE pool_members (
    id           TEXT PRIMARY KEY,
    address      TEXT NOT NULL,
    started_at   BIGINT NOT NULL,
    heartbeat_ms BIGINT NOT NULL,
    leaving      BOOLEAN NOT NULL DEFAULT FALSE,
    users_homed  BIGINT NOT NULL DEFAULT 0,
    connections  BIGINT NOT NULL DEFAULT 0
);
