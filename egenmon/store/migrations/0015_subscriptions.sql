-- Integrators (issue 18, part B): FHIR Subscriptions (R5 Backport IG on R4, topic-based,
-- rest-hook) and webhooks an integrator registers with its own token. Both are delivered
-- from the one outbox (webhook_deliveries): its rows now belong to a webhook or to a
-- subscription, and an alert or an Observation is their focus.

-- Who registered a webhook and which care unit it is bound to (NULL: every unit, only an
-- admin or an unbound integrator may register such a hook).
ALTER TABLE webhooks ADD COLUMN care_unit_id uuid REFERENCES care_units (id);
ALTER TABLE webhooks ADD COLUMN owner_role text NOT NULL DEFAULT 'admin';

CREATE TABLE subscriptions (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- requested (handshake pending) → active; error while deliveries fail; off when
    -- deleted or ended. Only active and error subscriptions collect events.
    status          text NOT NULL DEFAULT 'requested'
                    CHECK (status IN ('requested', 'active', 'error', 'off')),
    topic           text NOT NULL CHECK (topic IN ('alert-flag', 'alert-task', 'observation')),
    -- The filters of the criteria extension (NULL: no filter on that element).
    patient_id      uuid REFERENCES patients (id),
    care_unit_id    uuid REFERENCES care_units (id),
    codes           text[],
    -- The care unit the owner is bound to (its token's care_unit): what it may ever get.
    scope_unit_id   uuid REFERENCES care_units (id),
    owner           text NOT NULL,
    owner_role      text NOT NULL,
    endpoint        text NOT NULL CHECK (endpoint ~ '^https?://[^\s]+$'),
    content         text NOT NULL CHECK (content IN ('empty', 'id-only', 'full-resource')),
    headers         text[] NOT NULL DEFAULT '{}',
    hmac_secret     text,
    heartbeat_s     integer CHECK (heartbeat_s > 0),
    timeout_s       integer CHECK (timeout_s > 0),
    max_count       integer CHECK (max_count > 0),
    end_at          timestamptz,
    reason          text,
    criteria        text NOT NULL,
    -- The FHIR base the subscription was made at: the base of its notifications' links.
    fhir_base       text NOT NULL,
    filter          text,
    -- The highest event number given out (events are numbered when the outbox is sent).
    events_since_start bigint NOT NULL DEFAULT 0,
    last_sent_at    timestamptz NOT NULL DEFAULT now(),
    error           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subscriptions_owner ON subscriptions (owner);
CREATE INDEX subscriptions_live ON subscriptions (topic) WHERE status IN ('active', 'error');

ALTER TABLE webhook_deliveries ALTER COLUMN webhook_id DROP NOT NULL;
ALTER TABLE webhook_deliveries ALTER COLUMN alert_id DROP NOT NULL;
ALTER TABLE webhook_deliveries
    ADD COLUMN subscription_id uuid REFERENCES subscriptions (id),
    -- handshake, heartbeat: no number; an event: numbered in order of sending, per
    -- subscription, from 1.
    ADD COLUMN event_number bigint,
    ADD COLUMN patient_id uuid,
    ADD COLUMN focus text,
    ADD CONSTRAINT webhook_deliveries_owner
        CHECK ((webhook_id IS NULL) <> (subscription_id IS NULL));
CREATE UNIQUE INDEX webhook_deliveries_event
    ON webhook_deliveries (subscription_id, event_number) WHERE event_number IS NOT NULL;
-- Events of a subscription waiting for their number.
CREATE INDEX webhook_deliveries_unnumbered ON webhook_deliveries (subscription_id, id)
    WHERE subscription_id IS NOT NULL AND event_number IS NULL AND focus IS NOT NULL;
