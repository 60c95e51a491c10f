-- Distribution groups (issue 21): an address of our domains that stands for a list of others,
-- as OCS's distribution groups do. Kept here so that every front end of a pool expands the
-- same groups and follows their changes through the change log.

-- A group's AOR is in lower case, in a served domain, and no user's (the store refuses a user
-- or a group whose AOR the other has).
CREATE TABLE distribution_groups (
    aor          TEXT PRIMARY KEY,
    domain       TEXT NOT NULL REFERENCES domains(name),
    display_name TEXT NOT NULL DEFAULT '',
    created_at   INTEGER NOT NULL,
    -- When the group or its list of members last changed.
    updated_at   INTEGER NOT NULL
);
CREATE INDEX distribution_groups_domain ON distribution_groups(domain);

-- A group's direct members, in lower case: users, other groups (nesting: a member is a group
-- when a group has its AOR, whenever it is read) or remote addresses. Not a reference to
-- users: a member need not be ours. A member goes with its group; removing a group also
-- removes it from the groups that list it, by the index on member. A group never lists itself
-- directly (longer loops are found when a group is expanded).
CREATE TABLE group_members (
    group_aor TEXT NOT NULL REFERENCES distribution_groups(aor) ON DELETE CASCADE,
    member    TEXT NOT NULL,
    added_at  INTEGER NOT NULL,
    PRIMARY KEY (group_aor, member),
    CHECK (member <> group_aor)
);
CREATE INDEX group_members_member ON group_members(member);

-- The change log takes a fifth kind, 'group' (a group, or its list of members, changed). As in
-- migration 9, SQLite cannot change a CHECK in place: the log is copied into a new table that
-- goes on from the old one's high-water mark (past the last row if that was deleted), so that
-- no position is handed out twice.
CREATE TABLE user_changes_new (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    subject TEXT NOT NULL,
    at      INTEGER NOT NULL,
    kind    TEXT NOT NULL DEFAULT 'user' CHECK (kind IN ('domain', 'user', 'waiting', 'federation', 'group'))
);
INSERT INTO user_changes_new (seq, subject, at, kind) SELECT seq, subject, at, kind FROM user_changes;
DELETE FROM sqlite_sequence WHERE name = 'user_changes_new';
INSERT INTO sqlite_sequence (name, seq) SELECT 'user_changes_new', seq FROM sqlite_sequence WHERE name = 'user_changes';
DROP TABLE user_changes;
ALTER TABLE user_changes_new RENAME TO user_changes;
