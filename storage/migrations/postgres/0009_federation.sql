-- Federation with partner organisations' domains (issue 20): the operator's policy, kept here
-- so that every front end of a pool applies the same one and follows its changes through the
-- change log.

-- A user federates only once the operator says so (OCS's per-user "federation enabled", off
-- until turned on).
ALTER TABLE users ADD COLUMN federation BOOLEAN NOT NULL DEFAULT FALSE;

-- Partner domains the operator named (in lower case): allowed, with their edge optionally
-- named as host:port instead of found by DNS SRV, or blocked (an edge means nothing there).
CREATE TABLE federation_domains (
    domain     TEXT PRIMARY KEY,
    action     TEXT NOT NULL CHECK (action IN ('allow', 'block')),
    via        TEXT,
    updated_at BIGINT NOT NULL,
    CHECK (via IS NULL OR action = 'allow')
);

-- Federation as a whole, one row (id 1): the mode, 'closed' (only allowed domains) or 'open'
-- (any domain whose edge DNS SRV finds, except blocked ones). No row is 'closed', the default,
-- so that nothing is federated before the operator decides.
CREATE TABLE federation_settings (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    mode       TEXT NOT NULL CHECK (mode IN ('closed', 'open')),
    updated_at BIGINT NOT NULL
);

-- The change log takes a fourth kind, 'federation' (a partner domain's entry, or '*' for the
-- mode, changed). The check is the one migration 5 added, under the name PostgreSQL gave it.
ALTER TABLE user_changes DROP CONSTRAINT user_changes_kind_check;
ALTER TABLE user_changes ADD CONSTRAINT user_changes_kind_check
    CHECK (kind IN ('domain', 'user', 'waiting', 'federation'));
