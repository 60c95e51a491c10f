-- A user part names its account whatever its ASCII case (as the registrar compares a REGISTER's
-- To with the user who authenticated): users are looked up by their AOR folded. Under the "C"
-- collation lower() folds ASCII letters only, as SQLite's NOCASE does and as the server
-- compares AORs.
CREATE INDEX users_aor_folded ON users(lower(aor COLLATE "C"));
