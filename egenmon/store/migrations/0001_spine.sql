-- The spine: care units, patients, devices and their bindings, the readings hypertable,
-- quarantine and the access log.

CREATE EXTENSION IF NOT EXISTS timescaledb;
CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE TABLE care_units (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL,
    hsa_id      text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- A patient is addressed by an opaque uuid; the personnummer (or samordningsnummer) is a
-- searchable identifier only and never leaves the database in a URL, log or topic.
CREATE TABLE patients (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    personnummer    text NOT NULL UNIQUE CHECK (personnummer ~ '^[0-9]{12}$'),
    identifier_kind text NOT NULL CHECK (identifier_kind IN ('personnummer', 'samordningsnummer')),
    care_unit_id    uuid NOT NULL REFERENCES care_units (id),
    display_name    text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX patients_care_unit ON patients (care_unit_id);

-- Device secrets are random 256-bit values: a SHA-256 digest is enough to store them
-- (a slow password hash protects guessable secrets, which these are not).
CREATE TABLE devices (
    -- A device id is also a FHIR id (Device/<id>) and an MQTT topic level.
    id            text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9.-]{0,63}$'),
    model         text NOT NULL,
    manufacturer  text,
    acquisition   text NOT NULL DEFAULT 'prescribed'
                  CHECK (acquisition IN ('prescribed', 'self_bought')),
    secret_sha256 bytea NOT NULL,
    status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz,
    last_seen     timestamptz,
    battery       real CHECK (battery BETWEEN 0 AND 1)
);

-- A device belongs to one patient at a time; the exclusion constraint makes an
-- overlapping binding impossible whatever the application does.
CREATE TABLE device_bindings (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id  text NOT NULL REFERENCES devices (id),
    patient_id uuid NOT NULL REFERENCES patients (id),
    during     tstzrange NOT NULL CHECK (NOT isempty(during)),
    EXCLUDE USING gist (device_id WITH =, during WITH &&)
);
CREATE INDEX device_bindings_patient ON device_bindings (patient_id);

-- One row per stored observation. Columns, not blobs: FHIR JSON is rendered on read.
-- value is the single value, or the systolic pressure of a blood-pressure panel, whose
-- diastolic and mean pressures are value2 and value3. Units are canonical UCUM.
CREATE TABLE readings (
    time        timestamptz NOT NULL,
    patient_id  uuid NOT NULL,
    device_id   text NOT NULL,
    type        text NOT NULL,
    code        text NOT NULL,          -- LOINC code of the observation
    mdc         text NOT NULL,          -- IEEE 11073 MDC code of the observation
    value       double precision NOT NULL,
    value2      double precision,
    value3      double precision,
    unit        text NOT NULL,
    on_oxygen   boolean,
    note        text,
    source      text NOT NULL CHECK (source IN ('http', 'mqtt', 'fhir', 'replay')),
    dedup_key   text NOT NULL,
    received_at timestamptz NOT NULL,
    message_id  text,
    extra       jsonb
);
SELECT create_hypertable('readings', 'time', chunk_time_interval => interval '7 days');
-- One patient, one code, a time range: the way rules, the UI and FHIR search read.
CREATE INDEX readings_patient_code_time ON readings (patient_id, code, time DESC);
-- Duplicates are impossible: a hypertable's unique index must include its time column,
-- and the dedup key (device, type, time) or (device, reading id) is stored with it.
CREATE UNIQUE INDEX readings_dedup ON readings (dedup_key, time);

CREATE TABLE quarantine (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    source      text NOT NULL,
    device_id   text,
    topic       text,
    reason      text NOT NULL,
    raw         bytea NOT NULL,
    resolved_at timestamptz,
    resolution  text
);
CREATE INDEX quarantine_open ON quarantine (received_at) WHERE resolved_at IS NULL;

-- Patientdatalagen 4:3: who did what with whose data, when, in which care unit.
-- Append-only: the trigger refuses updates and deletes for every role.
CREATE TABLE access_log (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    actor        text NOT NULL,
    role         text NOT NULL,
    care_unit_id uuid,
    action       text NOT NULL,
    resource     text NOT NULL,
    patient_ids  uuid[] NOT NULL DEFAULT '{}',
    detail       jsonb
);
CREATE INDEX access_log_patients ON access_log USING gin (patient_ids);

CREATE FUNCTION access_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'access_log is append-only';
END $$;
CREATE TRIGGER access_log_no_change BEFORE UPDATE OR DELETE ON access_log
    FOR EACH ROW EXECUTE FUNCTION access_log_append_only();
CREATE TRIGGER access_log_no_truncate BEFORE TRUNCATE ON access_log
    FOR EACH STATEMENT EXECUTE FUNCTION access_log_append_only();
