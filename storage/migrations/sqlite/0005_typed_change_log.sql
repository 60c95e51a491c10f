-- The change log says what changed in a column of its own instead of in the string it names:
-- 'domain' (a domain was added), 'user' (a user, its rules or contact list changed) or
-- 'waiting' (an offline message was kept for the user). Entries written before carried the
-- kind in the string ('@domain', 'offline:AOR'); they are converted.
ALTER TABLE user_changes RENAME COLUMN aor TO subject;
ALTER TABLE user_changes ADD COLUMN kind TEXT NOT NULL DEFAULT 'user'
    CHECK (kind IN ('domain', 'user', 'waiting'));
UPDATE user_changes SET kind = 'domain', subject = substr(subject, 2) WHERE subject LIKE '@%';
UPDATE user_changes SET kind = 'waiting', subject = substr(subject, 9) WHERE subject LIKE 'offline:%';
