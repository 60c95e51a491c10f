-- Presence authorization rules: per presentity (owner), what a watcher AOR, or a whole domain
-- written *@domain, may see. And contact lists: per user, contacts in named groups ('' is
-- no group). Both go with their owner.
CREATE TABLE presence_rules (
    owner      TEXT NOT NULL REFERENCES users(aor) ON DELETE CASCADE,
    watcher    TEXT NOT NULL,
    action     TEXT NOT NULL CHECK (action IN ('allow', 'block', 'polite-block')),
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (owner, watcher)
);

CREATE TABLE contacts (
    owner        TEXT NOT NULL REFERENCES users(aor) ON DELETE CASCADE,
    contact      TEXT NOT NULL,
    display_name TEXT NOT NULL DEFAULT '',
    group_name   TEXT NOT NULL DEFAULT '',
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (owner, contact, group_name)
);
