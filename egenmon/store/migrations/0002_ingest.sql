-- Ingest: credential look-up by digest, richer quarantine entries, and change
-- notifications that keep every serve process's device caches exact.

-- A device authenticates with its secret alone, so the secret's digest is the look-up key.
CREATE INDEX devices_secret_sha256 ON devices (secret_sha256);

-- A quarantine entry is a whole body ('message': not JSON, not a Reading message, the
-- wrong device, too large, no valid credentials) or one rejected reading of an accepted
-- message ('reading', raw is that reading's JSON). message_id and reading_index say
-- where a rejected reading came from; replay needs to know which of the two it holds.
ALTER TABLE quarantine
    ADD COLUMN kind text NOT NULL DEFAULT 'message' CHECK (kind IN ('message', 'reading')),
    ADD COLUMN message_id text,
    ADD COLUMN reading_index integer,
    ADD COLUMN replayed_at timestamptz;
CREATE INDEX quarantine_device ON quarantine (device_id, id);

-- Every change to a device's status, secret or bindings is announced on the channel
-- egenmon_device with the device id as payload (sent at commit). The ingest caches drop
-- what they hold for that device at once: a revoked device is refused and a device moved
-- to another patient is attributed right from the next request, in every process.
CREATE FUNCTION egenmon_notify_device() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'devices' THEN
        IF TG_OP = 'INSERT' THEN
            PERFORM pg_notify('egenmon_device', NEW.id);
        ELSE
            PERFORM pg_notify('egenmon_device', OLD.id);
        END IF;
    ELSE
        IF TG_OP <> 'INSERT' THEN
            PERFORM pg_notify('egenmon_device', OLD.device_id);
        END IF;
        IF TG_OP <> 'DELETE' THEN
            PERFORM pg_notify('egenmon_device', NEW.device_id);
        END IF;
    END IF;
    RETURN NULL;
END $$;

-- last_seen and battery change all the time; they are not part of what is cached.
CREATE TRIGGER devices_notify_change AFTER UPDATE OF status, secret_sha256, id ON devices
    FOR EACH ROW EXECUTE FUNCTION egenmon_notify_device();
CREATE TRIGGER devices_notify_insert_delete AFTER INSERT OR DELETE ON devices
    FOR EACH ROW EXECUTE FUNCTION egenmon_notify_device();
CREATE TRIGGER device_bindings_notify AFTER INSERT OR UPDATE OR DELETE ON device_bindings
    FOR EACH ROW EXECUTE FUNCTION egenmon_notify_device();
