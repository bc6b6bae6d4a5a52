-- Separation of duties and account states (RBAC-01, RBAC-02, HRD-03).

-- disabled accounts cannot log in; the window after which a failure counter starts over
ALTER TABLE staff.users ADD COLUMN disabled_at timestamptz;
ALTER TABLE staff.users ADD COLUMN last_failed_at timestamptz;

-- nobody holds a role they granted themselves (the app refuses it first; this is the backstop)
ALTER TABLE staff.user_roles ADD CONSTRAINT user_roles_not_self_granted CHECK (granted_by IS DISTINCT FROM user_id);

-- two-person rule: admin and payment_processor are requested by one admin, approved by another
CREATE TABLE staff.role_requests (
    id           bigserial PRIMARY KEY,
    user_id      bigint NOT NULL REFERENCES staff.users(id),
    role         text NOT NULL CHECK (role IN ('admin', 'payment_processor')),
    requested_by bigint NOT NULL REFERENCES staff.users(id),
    requested_at timestamptz NOT NULL,
    decided_by   bigint REFERENCES staff.users(id),
    decided_at   timestamptz,
    outcome      text CHECK (outcome IN ('approved', 'rejected')),
    CHECK (requested_by <> user_id),
    CHECK (outcome IS DISTINCT FROM 'approved' OR (decided_by <> requested_by AND decided_by <> user_id)),
    CHECK ((outcome IS NULL) = (decided_at IS NULL))
);
CREATE UNIQUE INDEX role_requests_one_pending ON staff.role_requests (user_id, role) WHERE outcome IS NULL;

-- failed logins for names that are not accounts lock like real accounts, so the answers
-- (401, then 423) never tell an attacker which names exist; keyed by an HMAC of the name
CREATE TABLE staff.unknown_logins (
    name_hash       text PRIMARY KEY,
    failed_attempts integer NOT NULL,
    last_failed_at  timestamptz NOT NULL,
    locked_until    timestamptz
);
CREATE INDEX unknown_logins_last_failed ON staff.unknown_logins (last_failed_at);

GRANT SELECT, INSERT, UPDATE, DELETE ON staff.role_requests, staff.unknown_logins TO billing_app;
GRANT USAGE ON SEQUENCE staff.role_requests_id_seq TO billing_app;
