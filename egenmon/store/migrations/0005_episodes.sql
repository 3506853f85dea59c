-- Rules judged at measurement time, and alert episodes.

-- Readings new since the last rule cycle are found by when they arrived: the cycle
-- evaluates every windowed rule at each new reading's measurement time, so a late upload
-- is judged as if it had arrived on time.
CREATE INDEX readings_received ON readings (received_at);

-- How far the rule cycles have read: the newest received_at the last committed cycle saw
-- (one row). Advanced in the reconciliation's transaction, so a failed cycle reads the
-- same readings again.
CREATE TABLE alert_scan_state (
    id             boolean PRIMARY KEY DEFAULT true CHECK (id),
    received_until timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Episodes. cleared_at now also tells, on the newest closed (resolved or dismissed) alert
-- of a key, since when the cycles have no longer found the deviation ("back within
-- limits"); a finding resets it. A closed alert's key opens again only for a worse
-- deviation (higher severity, or for news2 a higher score than the peak) or a new
-- episode (back within limits for the rule's episode gap, then deviating again).
-- peak_score: for news2 the highest score seen while the alert was open.
-- previous_id: the closed alert of the same key this one follows; open_reason: why it
-- opened (first, worse, new_episode).
ALTER TABLE alerts
    ADD COLUMN peak_score  double precision,
    ADD COLUMN previous_id uuid REFERENCES alerts (id),
    ADD COLUMN open_reason text NOT NULL DEFAULT 'first'
        CHECK (open_reason IN ('first', 'worse', 'new_episode'));
CREATE INDEX alerts_closed_key ON alerts (patient_id, key, opened_at DESC)
    WHERE status IN ('resolved', 'dismissed');
CREATE INDEX alerts_closed_in_episode ON alerts (patient_id, key)
    WHERE status IN ('resolved', 'dismissed') AND cleared_at IS NULL;
