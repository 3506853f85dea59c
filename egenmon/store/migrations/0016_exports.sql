-- Bulk Data $export jobs (FHIR Bulk Data Access IG): one row per kick-off, polled by its
-- client until it completes; the NDJSON files lie in the export directory and are
-- removed, with the row, when the job expires or is deleted. A research extract made
-- through the admin API is a row too (level 'research'), so its files expire the same way.
CREATE TABLE export_jobs (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client           text NOT NULL,          -- the token's subject: only it may poll
    role             text NOT NULL,
    care_unit_id     uuid,                   -- the client's own care unit, if bound to one
    level            text NOT NULL CHECK (level IN ('system', 'patient', 'group', 'research')),
    group_id         uuid REFERENCES care_units (id) ON DELETE CASCADE,
    unit_filter      uuid,                   -- the care unit whose patients are exported
    types            text[] NOT NULL,
    since            timestamptz,
    type_filters     jsonb NOT NULL DEFAULT '{}',
    codes            text[],                 -- the LOINC codes _typeFilter narrows Observation to
    request          text NOT NULL,          -- the kick-off URL, without the host's secrets
    status           text NOT NULL DEFAULT 'accepted'
                     CHECK (status IN ('accepted', 'running', 'completed', 'failed', 'cancelled')),
    progress         text,
    transaction_time timestamptz NOT NULL DEFAULT now(),
    heartbeat_at     timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    expires_at       timestamptz,
    output           jsonb NOT NULL DEFAULT '[]',
    error            text,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX export_jobs_active ON export_jobs (client) WHERE status IN ('accepted', 'running');
CREATE INDEX export_jobs_expiry ON export_jobs (expires_at) WHERE expires_at IS NOT NULL;
