-- Rules evaluated as readings commit, sharded by patient (issue 20).

-- Patients hash into a fixed number of shards (the last byte of the patient id modulo
-- 64: store/shards.py and rule_shard() below agree). Each shard is owned by one rule
-- worker through a lease with an expiry the owner renews; a lease that has run out may be
-- claimed by any worker, so a dead worker's shards are taken over once it expires.
CREATE TABLE rule_shards (
    shard      integer PRIMARY KEY CHECK (shard >= 0 AND shard < 64),
    owner      text,
    expires_at timestamptz,  -- NULL: free
    claimed_at timestamptz
);
INSERT INTO rule_shards (shard) SELECT generate_series(0, 63);

-- The rule workers alive (heartbeat), so that each knows its share of the shards.
CREATE TABLE rule_workers (
    node    text PRIMARY KEY,
    seen_at timestamptz NOT NULL
);

CREATE FUNCTION rule_shard(patient uuid) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN get_byte(uuid_send(patient), 15) % 64;

-- Alert changes, told to every serve process (the worklist's server-sent events): one
-- notification per statement and care unit, naming up to 20 of the alerts changed.
CREATE FUNCTION alerts_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('egenmon_alerts', json_build_object(
                'care_unit', p.care_unit_id,
                'op', lower(TG_OP),
                'count', count(*),
                'ids', (array_agg(c.id ORDER BY c.updated_at DESC))[1:20])::text)
    FROM changed c JOIN patients p ON p.id = c.patient_id
    GROUP BY p.care_unit_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER alerts_inserted AFTER INSERT ON alerts
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION alerts_changed();
CREATE TRIGGER alerts_updated AFTER UPDATE ON alerts
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION alerts_changed();
