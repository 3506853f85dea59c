-- Sign-in through an OpenID provider (issue 14): staff matched on their HSA-id, patients
-- on their personnummer, and sessions that belong to a clinician or to a patient.

-- A clinician or admin signed in through the region's provider is found by HSA-id
-- (SE + organisation number + '-' + a local part). A login without a password hash
-- signs in only through the provider.
ALTER TABLE users ADD COLUMN hsa_id text CHECK (hsa_id ~ '^[A-Za-z0-9][A-Za-z0-9-]{1,63}$');
CREATE UNIQUE INDEX users_hsa_id ON users (hsa_id) WHERE hsa_id IS NOT NULL;
ALTER TABLE users ALTER COLUMN password_hash DROP NOT NULL;

-- A session belongs to exactly one of a user (the clinician UI) or a patient (the
-- patient app). id_token is the provider's ID token of the login, kept for
-- RP-initiated logout (id_token_hint); NULL for a local password login.
ALTER TABLE sessions ALTER COLUMN user_id DROP NOT NULL;
ALTER TABLE sessions ADD COLUMN patient_id uuid REFERENCES patients (id) ON DELETE CASCADE;
ALTER TABLE sessions ADD COLUMN id_token text;
ALTER TABLE sessions ADD CONSTRAINT sessions_one_owner
    CHECK ((user_id IS NULL) <> (patient_id IS NULL));
CREATE INDEX sessions_patient ON sessions (patient_id) WHERE patient_id IS NOT NULL;

-- A sign-in under way at the provider: the browser holds the state in a cookie, the
-- database its digest with the nonce and the PKCE verifier. One use, ten minutes.
CREATE TABLE oidc_logins (
    state_sha256  bytea PRIMARY KEY CHECK (length(state_sha256) = 32),
    audience      text NOT NULL CHECK (audience IN ('staff', 'patient')),
    nonce         text NOT NULL,
    code_verifier text NOT NULL,
    next          text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);
CREATE INDEX oidc_logins_expires ON oidc_logins (expires_at);

-- The patient's own extract reads the log by patient and time.
CREATE INDEX access_log_at ON access_log (at);
