-- Distribution groups (issue 21): an address of our domains that stands for a list of others,
-- as OCS's distribution groups do. Kept here so that every front end of a pool expands the
-- same groups and follows their changes through the change log.

-- A group's AOR is in lower case, in a served domain, and no user's (the store refuses a user
-- or a group whose AOR the other has). Addresses collate as bytes ("C"), as on SQLite: groups
-- and members list in the same order on either backend, and a group's members are read in
-- pages by the primary key's order.
CREATE TABLE distribution_groups (
    aor          TEXT COLLATE "C" PRIMARY KEY,
    domain       TEXT NOT NULL REFERENCES domains(name),
    display_name TEXT NOT NULL DEFAULT '',
    created_at   BIGINT NOT NULL,
    -- When the group or its list of members last changed.
    updated_at   BIGINT NOT NULL
);
CREATE INDEX distribution_groups_domain ON distribution_groups(domain);

-- A group's direct members, in lower case: users, other groups (nesting: a member is a group
-- when a group has its AOR, whenever it is read) or remote addresses. Not a reference to
-- users: a member need not be ours. A member goes with its group; removing a group also
-- removes it from the groups that list it, by the index on member. A group never lists itself
-- directly (longer loops are found when a group is expanded).
CREATE TABLE group_members (
    group_aor TEXT COLLATE "C" NOT NULL REFERENCES distribution_groups(aor) ON DELETE CASCADE,
    member    TEXT COLLATE "C" NOT NULL,
    added_at  BIGINT NOT NULL,
    PRIMARY KEY (group_aor, member),
    CHECK (member <> group_aor)
);
CREATE INDEX group_members_member ON group_members(member);

-- The change log takes a fifth kind, 'group' (a group, or its list of members, changed). The
-- check is the one migration 9 put back, under the same name.
ALTER TABLE user_changes DROP CONSTRAINT user_changes_kind_check;
ALTER TABLE user_changes ADD CONSTRAINT user_changes_kind_check
    CHECK (kind IN ('domain', 'user', 'waiting', 'federation', 'group'));
