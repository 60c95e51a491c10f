-- Domains served and the users in them. Times are Unix seconds.
CREATE TABLE domains (
    name       TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL
);

CREATE TABLE users (
    aor          TEXT PRIMARY KEY,          -- user@domain, domain in lower case
    username     TEXT NOT NULL,
    domain       TEXT NOT NULL REFERENCES domains(name),
    display_name TEXT NOT NULL DEFAULT '',
    ha1_md5      TEXT NOT NULL,             -- hex MD5(username:realm:password), realm = domain
    ha1_sha256   TEXT NOT NULL,             -- hex SHA-256 of the same
    enabled      BOOLEAN NOT NULL DEFAULT TRUE,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX users_domain ON users(domain);

-- Every change to a user appends a row, so that every front end can drop its cached copy
-- (they poll for rows past the last one they saw).
CREATE TABLE user_changes (
    seq BIGSERIAL PRIMARY KEY,
    aor TEXT NOT NULL,
    at  BIGINT NOT NULL
);
