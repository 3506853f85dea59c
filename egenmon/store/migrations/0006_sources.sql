-- The reading sources of the second stage (contract: http, mqtt, fhir, replay,
-- patient-entered, staff-entered, omh, phd, template, ble). One migration for all of
-- them, so the device-format and patient-entry wings never alter the same constraint.
ALTER TABLE readings DROP CONSTRAINT IF EXISTS readings_source_check;
ALTER TABLE readings ADD CONSTRAINT readings_source_check CHECK (source IN (
    'http', 'mqtt', 'fhir', 'replay', 'patient-entered', 'staff-entered',
    'omh', 'phd', 'template', 'ble'));
