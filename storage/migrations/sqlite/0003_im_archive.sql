-- The IM archive (compliance, as an OCS Archiving Server keeps it): every instant message the
-- server forwarded. Searched by user pair and time; purged by the retention policy.
CREATE TABLE im_archive (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    at               INTEGER NOT NULL,      -- Unix seconds
    sender           TEXT NOT NULL,       -- AOR
    recipient        TEXT NOT NULL,       -- AOR
    call_id          TEXT NOT NULL,
    content_type     TEXT NOT NULL,
    body             BLOB NOT NULL,
    first_in_session INTEGER NOT NULL
);
CREATE INDEX im_archive_sender ON im_archive(sender, at);
CREATE INDEX im_archive_recipient ON im_archive(recipient, at);
CREATE INDEX im_archive_at ON im_archive(at);
