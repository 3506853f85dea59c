-- The clinician UI: local logins and their sessions.

-- A local login. Passwords are argon2id hashes (argon2-cffi's encoded form, parameters
-- included). A clinician belongs to one care unit and sees only its patients; an admin
-- has no care unit and sees all. Repeated failures lock the login for a while.
CREATE TABLE users (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    username        text NOT NULL CHECK (username ~ '^[a-z0-9][a-z0-9._@-]{1,63}$'),
    password_hash   text NOT NULL CHECK (password_hash LIKE '$argon2%'),
    role            text NOT NULL CHECK (role IN ('clinician', 'admin')),
    care_unit_id    uuid REFERENCES care_units (id),
    display_name    text,
    locale          text NOT NULL DEFAULT 'sv' CHECK (locale IN ('sv', 'en')),
    failed_attempts integer NOT NULL DEFAULT 0 CHECK (failed_attempts >= 0),
    locked_until    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_login_at   timestamptz,
    CHECK (role <> 'clinician' OR care_unit_id IS NOT NULL)
);
CREATE UNIQUE INDEX users_username ON users (username);

-- A signed-in browser. The cookie holds a random 256-bit id; only its SHA-256 digest is
-- stored, so a copy of the table does not let anyone take over a session. csrf_token is
-- the synchroniser token every form and unsafe API call of the session must echo.
CREATE TABLE sessions (
    id_sha256    bytea PRIMARY KEY CHECK (length(id_sha256) = 32),
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    csrf_token   text NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expires ON sessions (expires_at);
