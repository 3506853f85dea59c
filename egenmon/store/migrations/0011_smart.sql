-- SMART on FHIR (issue 14, part B): the registered clients of egenmon's authorization
-- server, the one-time values it has seen (client-assertion jtis and authorization
-- codes, each kept until it expires), and the access log's indexes for AuditEvent.

-- A client registered by `egenmon client add`. A client with keys (jwks or jwks_uri)
-- authenticates with a private-key JWT (backend services, confidential apps); an app
-- with redirect URIs and no keys is a public client (PKCE only).
CREATE TABLE oauth_clients (
    id            text PRIMARY KEY,
    name          text NOT NULL,
    jwks          jsonb,
    jwks_uri      text,
    scopes        text[] NOT NULL,
    redirect_uris text[] NOT NULL DEFAULT '{}',
    origins       text[] NOT NULL DEFAULT '{}',
    launch_uri    text,  -- an app's EHR launch URL (iss and launch are added to it)
    created_at    timestamptz NOT NULL DEFAULT now(),
    removed_at    timestamptz,
    CHECK (jwks IS NULL OR jwks_uri IS NULL)
);

-- A jti or an authorization code, once: the insert that finds it present is a replay.
CREATE TABLE oauth_seen (
    client_id  text NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('jti', 'code')),
    value      text NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (client_id, kind, value)
);
CREATE INDEX oauth_seen_expires ON oauth_seen (expires_at);

-- AuditEvent searches page by time (newest first) and look up an agent.
CREATE INDEX access_log_at_id ON access_log (at DESC, id DESC);
CREATE INDEX access_log_actor ON access_log (actor, at DESC);
