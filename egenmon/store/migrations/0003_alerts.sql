-- Deviations to care contacts: monitoring plans, alerts and their history, webhooks with
-- an outbox of deliveries, and the scheduler's run log.

-- A patient's monitoring plan as a clinician set it (egenmon.alerts.plans.Plan.to_dict()
-- without set_by/set_at, which are columns). Protocol defaults are applied when a plan is
-- read, so a corrected default reaches every plan. A patient without a row is monitored
-- with the `general` protocol.
CREATE TABLE monitoring_plans (
    patient_id uuid PRIMARY KEY REFERENCES patients (id),
    protocol   text NOT NULL
               CHECK (protocol IN ('hypertension', 'heart_failure', 'copd', 'diabetes', 'general')),
    plan       jsonb NOT NULL,
    version    integer NOT NULL CHECK (version >= 1),
    set_by     text NOT NULL,
    set_at     timestamptz NOT NULL DEFAULT now()
);

-- Every version of every plan, who set it and when. Append-only.
CREATE TABLE monitoring_plan_history (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    patient_id uuid NOT NULL REFERENCES patients (id),
    version    integer NOT NULL,
    protocol   text NOT NULL,
    plan       jsonb NOT NULL,
    set_by     text NOT NULL,
    set_at     timestamptz NOT NULL,
    UNIQUE (patient_id, version)
);

-- An alert is a state, not an event: one row per deviation of a patient, from the cycle
-- that found it until a clinician resolves or dismisses it. The row is also the care
-- contact (FHIR Task, due by due_at) and the patient's flag (FHIR Flag) while it is open.
--
-- key: the deviation's identity (the rule, or threshold:<type>, device_inactive:<device>).
-- severity: the worst severity found while open (escalation never goes back down);
-- current_severity: that of the newest finding. evidence: observation ids, oldest first.
-- basis: everything the alert's findings rested on (evidence ids, and for findings without
-- readings the facts they saw, such as a device's last message); a finding whose basis a
-- closed alert covers is not alerted on again, so resolving does not re-open on the same
-- old readings. last_basis: that of the newest finding (new evidence updates the alert).
-- cleared_at: when a cycle first no longer found the deviation; the alert stays open
-- until a clinician closes it (a clinician must see every deviation).
CREATE TABLE alerts (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    patient_id       uuid NOT NULL REFERENCES patients (id),
    rule             text NOT NULL CHECK (rule IN ('threshold', 'trend_weight', 'trend_bp_mean',
                                                   'spo2_drop', 'news2', 'missing_data',
                                                   'device_inactive')),
    key              text NOT NULL,
    category         text NOT NULL CHECK (category IN ('clinical', 'technical')),
    severity         text NOT NULL CHECK (severity IN ('low', 'medium', 'high')),
    current_severity text NOT NULL CHECK (current_severity IN ('low', 'medium', 'high')),
    status           text NOT NULL DEFAULT 'open'
                     CHECK (status IN ('open', 'acknowledged', 'resolved', 'dismissed')),
    summary          text NOT NULL,
    details          jsonb NOT NULL DEFAULT '{}',
    evidence         text[] NOT NULL DEFAULT '{}',
    basis            text[] NOT NULL DEFAULT '{}',
    last_basis       text[] NOT NULL DEFAULT '{}',
    evidence_until   timestamptz,
    opened_at        timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    due_at           timestamptz NOT NULL,
    cleared_at       timestamptz,
    acknowledged_by  text,
    acknowledged_at  timestamptz,
    resolved_by      text,
    resolved_at      timestamptz,
    dismissed_by     text,
    dismissed_at     timestamptz,
    note             text,
    notes            jsonb NOT NULL DEFAULT '[]',
    CHECK (status <> 'acknowledged' OR acknowledged_at IS NOT NULL),
    CHECK (status <> 'resolved' OR resolved_at IS NOT NULL),
    CHECK (status <> 'dismissed' OR dismissed_at IS NOT NULL)
);
-- At most one open (open or acknowledged) alert per patient and deviation, whatever the
-- races: cycles insert with ON CONFLICT on this index.
CREATE UNIQUE INDEX alerts_one_open ON alerts (patient_id, key)
    WHERE status IN ('open', 'acknowledged');
CREATE INDEX alerts_patient_key ON alerts (patient_id, key);
CREATE INDEX alerts_status_opened ON alerts (status, opened_at DESC);

-- What happened to each alert, by whom. Append-only.
CREATE TABLE alert_events (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id  uuid NOT NULL REFERENCES alerts (id),
    at        timestamptz NOT NULL DEFAULT now(),
    event     text NOT NULL CHECK (event IN ('opened', 'updated', 'escalated', 'cleared',
                                             'acknowledged', 'resolved', 'dismissed')),
    actor     text NOT NULL,
    severity  text NOT NULL,
    status    text NOT NULL,
    note      text,
    detail    jsonb
);
CREATE INDEX alert_events_alert ON alert_events (alert_id, at);

CREATE FUNCTION alerts_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END $$;
CREATE TRIGGER alert_events_no_change BEFORE UPDATE OR DELETE ON alert_events
    FOR EACH ROW EXECUTE FUNCTION alerts_append_only();
CREATE TRIGGER monitoring_plan_history_no_change BEFORE UPDATE OR DELETE
    ON monitoring_plan_history FOR EACH ROW EXECUTE FUNCTION alerts_append_only();

-- Subscribers outside egenmon (the region's journal or messaging system). Each payload is
-- signed with HMAC-SHA256 under the webhook's secret (or EGENMON_WEBHOOK_SECRET when it
-- has none).
CREATE TABLE webhooks (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    url         text NOT NULL CHECK (url ~ '^https?://[^\s]+$'),
    secret      text,
    active      boolean NOT NULL DEFAULT true,
    description text,
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The outbox: a delivery row commits with the alert change it tells of; a scheduler job
-- sends it, retrying with exponential backoff until delivered or out of attempts.
CREATE TABLE webhook_deliveries (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id      uuid NOT NULL REFERENCES webhooks (id),
    alert_id        uuid NOT NULL REFERENCES alerts (id),
    event           text NOT NULL,
    payload         jsonb NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    last_status     integer,
    last_error      text
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_alert ON webhook_deliveries (alert_id);

-- Every attempt to deliver, for the delivery log.
CREATE TABLE webhook_attempts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id bigint NOT NULL REFERENCES webhook_deliveries (id),
    at          timestamptz NOT NULL DEFAULT now(),
    status      integer,
    error       text,
    duration_ms double precision
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id);

-- One row per scheduler job run (which process, when, what it did): proves that only the
-- leader runs jobs, once per interval.
CREATE TABLE scheduler_runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job         text NOT NULL,
    node        text NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,
    ok          boolean,
    result      jsonb
);
CREATE INDEX scheduler_runs_started ON scheduler_runs (job, started_at);
