-- A user part names its account whatever its ASCII case (as the registrar compares a REGISTER's
-- To with the user who authenticated): users are looked up by their AOR folded, NOCASE being
-- SQLite's ASCII-only folding.
CREATE INDEX users_aor_folded ON users(aor COLLATE NOCASE);
