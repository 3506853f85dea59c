-- Login throttling (issue 12, finding 8): failures counted per address and per
-- (username, address), never per account alone, so nobody can lock a clinician out from
-- elsewhere. username is the normalised name as typed ('' for an address's own row),
-- known or not, so a throttled unknown name behaves exactly like a known one.
CREATE TABLE login_throttle (
    kind          text NOT NULL CHECK (kind IN ('address', 'account')),
    address       text NOT NULL,
    username      text NOT NULL DEFAULT '',
    failures      integer NOT NULL DEFAULT 0,
    first_at      timestamptz NOT NULL DEFAULT now(),
    blocked_until timestamptz,
    PRIMARY KEY (kind, address, username)
);
CREATE INDEX login_throttle_username ON login_throttle (username) WHERE username <> '';
