-- Readings without a device (contract: patient-entered, staff-entered, fhir) and the
-- one-time pairing codes of self-bought devices.

-- A reading entered by hand has no device: NULL, not a sentinel. A NULL device id
-- matches no device search, no device-health update and no device join by mistake, and
-- says plainly what it is. The dedup key of such a reading is
-- '<source>:<patient>|<type>|<time>' (or '...|id|<id>'): a device id cannot hold ':', so
-- the key space of device readings is untouched and readings_dedup (dedup_key, time)
-- still makes a reading sent twice be stored once.
ALTER TABLE readings ALTER COLUMN device_id DROP NOT NULL;

-- A pairing code is shown once to the patient and kept only as its SHA-256 digest; it
-- is used once (used_at, device_id) and lapses at expires_at.
CREATE TABLE pairing_codes (
    code_sha256 bytea PRIMARY KEY,
    patient_id  uuid NOT NULL REFERENCES patients (id),
    model       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    device_id   text REFERENCES devices (id)
);
CREATE INDEX pairing_codes_patient ON pairing_codes (patient_id, created_at);
