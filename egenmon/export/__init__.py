"""Integrators take data out: FHIR Bulk Data $export and pseudonymised research extracts."""
