-- Device formats (issue 17, part B): the identifiers Personal Health Device gateways
-- name devices by, and the vendor payload templates bound to a device model.

-- An IEEE 11073 system id (EUI-64) or another identifier a PHD gateway names a device
-- by, mapped to the egenmon device it is. registered_by is the gateway device that
-- registered a measuring device under its authority (NULL: the device itself, or an
-- admin). One identifier names one device.
CREATE TABLE device_identifiers (
    system        text NOT NULL CHECK (length(system) BETWEEN 1 AND 200),
    value         text NOT NULL CHECK (length(value) BETWEEN 1 AND 200),
    device_id     text NOT NULL REFERENCES devices (id),
    registered_by text REFERENCES devices (id),
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (system, value)
);
CREATE INDEX device_identifiers_device ON device_identifiers (device_id);

-- Mapping templates for vendor JSON, in the IoMT FHIR connector's format, one set per
-- device model: the normalisation templates (CollectionContent) and the FHIR mapping
-- templates (CollectionFhir), kept as added (checked at add time).
CREATE TABLE device_templates (
    model      text PRIMARY KEY CHECK (length(model) BETWEEN 1 AND 200),
    content    jsonb NOT NULL,
    fhir       jsonb NOT NULL,
    added_at   timestamptz NOT NULL DEFAULT now(),
    added_by   text NOT NULL
);
