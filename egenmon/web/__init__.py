"""The clinician UI: login, the worklist, the patient view (server-rendered, no CDN)."""
