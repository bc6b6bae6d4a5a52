-- Audit records carry their origin (client address and request ID; part of the hashed record), and
-- signed heads of the chain anchor its end (app_stub/audit.py). Both tables stay append-only.

-- NULL on the records made before this migration: they were hashed without it.
ALTER TABLE audit.events ADD COLUMN origin jsonb;

CREATE TABLE audit.heads (
    id        bigserial PRIMARY KEY,
    seq       bigint NOT NULL CHECK (seq >= 0),  -- the last record covered (0: the empty chain)
    hash      text NOT NULL,
    at        timestamptz NOT NULL,
    signature text NOT NULL CHECK (signature LIKE 'vault:v%')  -- transit key 'audit-head' (ed25519)
);

CREATE OR REPLACE FUNCTION audit.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%.% is append-only', TG_TABLE_SCHEMA, TG_TABLE_NAME;
END $$;
CREATE TRIGGER heads_append_only BEFORE UPDATE OR DELETE ON audit.heads
    FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER heads_no_truncate BEFORE TRUNCATE ON audit.heads
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();

GRANT SELECT, INSERT ON audit.heads TO billing_app;
GRANT USAGE ON SEQUENCE audit.heads_id_seq TO billing_app;
