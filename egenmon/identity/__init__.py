"""Identity: who signs in and what egenmon grants them (SMART on FHIR, OpenID Connect)."""
