-- The billing app's schema. Roles billing_app and billing_tokenizer exist before this runs
-- (app_stub.db.ensure_roles); the owner of everything is the role that runs migrations.

CREATE SCHEMA staff;
CREATE SCHEMA billing;
CREATE SCHEMA cardvault;
CREATE SCHEMA audit;
REVOKE ALL ON SCHEMA public FROM PUBLIC;
REVOKE ALL ON SCHEMA cardvault FROM PUBLIC;

-- staff accounts ------------------------------------------------------------------------
CREATE TABLE staff.users (
    id                  bigserial PRIMARY KEY,
    username            text NOT NULL UNIQUE CHECK (username ~ '^[a-z0-9_.-]{3,64}$'),
    password_hash       text NOT NULL,
    password_changed_at timestamptz NOT NULL,
    totp_secret_ct      text,                -- transit 'pii' ciphertext, never the secret itself
    totp_last_step      bigint NOT NULL DEFAULT 0,
    failed_attempts     integer NOT NULL DEFAULT 0,
    locked_until        timestamptz,
    training_version    text,
    training_acked_at   timestamptz,
    created_at          timestamptz NOT NULL
);
CREATE TABLE staff.password_history (
    user_id       bigint NOT NULL REFERENCES staff.users(id),
    password_hash text NOT NULL,
    changed_at    timestamptz NOT NULL
);
CREATE TABLE staff.recovery_codes (
    id        bigserial PRIMARY KEY,
    user_id   bigint NOT NULL REFERENCES staff.users(id),
    code_hash text NOT NULL,
    used_at   timestamptz
);
CREATE TABLE staff.user_roles (
    user_id    bigint NOT NULL REFERENCES staff.users(id),
    role       text NOT NULL CHECK (role IN ('admin', 'billing_clerk', 'payment_processor', 'auditor')),
    granted_by bigint REFERENCES staff.users(id),
    granted_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, role)
);
CREATE TABLE staff.sessions (
    id_hash    text PRIMARY KEY,             -- HMAC of the cookie value: a database leak yields no session
    user_id    bigint NOT NULL REFERENCES staff.users(id),
    stage      text NOT NULL CHECK (stage IN ('mfa', 'enrol', 'password', 'full')),
    csrf       text NOT NULL,
    pending_totp_ct text,                -- TOTP secret being enrolled (transit 'pii' ciphertext)
    created_at timestamptz NOT NULL,
    last_seen  timestamptz NOT NULL
);

-- billing ---------------------------------------------------------------------------------
CREATE TABLE billing.customers (
    id          bigserial PRIMARY KEY,
    name_ct     bytea,
    email_ct    bytea,
    address_ct  bytea,
    tax_id_ct   bytea,
    email_bidx  text,
    tax_id_bidx text,
    erased_at   timestamptz,
    created_at  timestamptz NOT NULL
);
CREATE INDEX customers_email_bidx ON billing.customers (email_bidx);
CREATE INDEX customers_tax_id_bidx ON billing.customers (tax_id_bidx);
CREATE TABLE billing.customer_keys (
    customer_id bigint PRIMARY KEY REFERENCES billing.customers(id),
    wrapped_key text NOT NULL,               -- the data key wrapped by transit key 'pii'
    created_at  timestamptz NOT NULL
);
CREATE TABLE billing.invoices (
    id             bigserial PRIMARY KEY,
    customer_id    bigint NOT NULL REFERENCES billing.customers(id),
    currency       char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    state          text NOT NULL DEFAULT 'draft' CHECK (state IN ('draft', 'issued', 'paid', 'void')),
    bill_to_ct     bytea,                    -- snapshot of name and address, under the customer's data key
    subtotal_minor bigint NOT NULL CHECK (subtotal_minor >= 0),
    tax_minor      bigint NOT NULL CHECK (tax_minor >= 0),
    total_minor    bigint NOT NULL CHECK (total_minor >= 0),
    credited_minor bigint NOT NULL DEFAULT 0 CHECK (credited_minor >= 0),
    paid_minor     bigint NOT NULL DEFAULT 0 CHECK (paid_minor >= 0),
    created_by     bigint,
    created_at     timestamptz NOT NULL,
    issued_at      timestamptz,
    paid_at        timestamptz,
    voided_at      timestamptz,
    CHECK (total_minor = subtotal_minor + tax_minor),
    CHECK (credited_minor <= total_minor)
);
CREATE TABLE billing.invoice_lines (
    invoice_id       bigint NOT NULL REFERENCES billing.invoices(id),
    position         integer NOT NULL,
    description      text NOT NULL,
    quantity         integer NOT NULL CHECK (quantity > 0),
    unit_price_minor bigint NOT NULL CHECK (unit_price_minor >= 0),
    tax_rate_bp      integer NOT NULL CHECK (tax_rate_bp BETWEEN 0 AND 10000),
    net_minor        bigint NOT NULL,
    tax_minor        bigint NOT NULL,
    PRIMARY KEY (invoice_id, position)
);
CREATE TABLE billing.credit_notes (
    id           bigserial PRIMARY KEY,
    invoice_id   bigint NOT NULL REFERENCES billing.invoices(id),
    amount_minor bigint NOT NULL CHECK (amount_minor > 0),
    reason       text NOT NULL,
    created_by   bigint,
    created_at   timestamptz NOT NULL
);
CREATE TABLE billing.cards (
    token       text PRIMARY KEY CHECK (token ~ '^tok_[a-z]{28}$'),
    brand       text NOT NULL,
    last4       char(4) NOT NULL CHECK (last4 ~ '^[0-9]{4}$'),
    exp_month   smallint NOT NULL CHECK (exp_month BETWEEN 1 AND 12),
    exp_year    smallint NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE TABLE billing.payments (
    id                bigserial PRIMARY KEY,
    idempotency_key   text NOT NULL UNIQUE,
    request_hash      text NOT NULL,
    invoice_id        bigint NOT NULL REFERENCES billing.invoices(id),
    amount_minor      bigint NOT NULL CHECK (amount_minor > 0),
    currency          char(3) NOT NULL,
    card_token        text NOT NULL REFERENCES billing.cards(token),
    status            text NOT NULL CHECK (status IN ('pending', 'succeeded', 'declined')),
    gateway_charge_id text,
    decline_reason    text,
    created_by        bigint,
    created_at        timestamptz NOT NULL,
    completed_at      timestamptz
);

-- the card vault: readable only by the tokenization service's role -------------------------
CREATE TABLE cardvault.pans (
    token      text PRIMARY KEY,
    pan_ct     text NOT NULL CHECK (pan_ct LIKE 'vault:v%'),   -- transit 'pan' ciphertext
    created_at timestamptz NOT NULL
);

-- the audit log: append-only and hash-chained ----------------------------------------------
CREATE TABLE audit.events (
    seq       bigint PRIMARY KEY,
    at        timestamptz NOT NULL,
    actor     text NOT NULL,
    action    text NOT NULL,
    target    text NOT NULL,
    outcome   text NOT NULL,
    detail    jsonb NOT NULL,
    prev_hash text NOT NULL,
    hash      text NOT NULL
);
CREATE FUNCTION audit.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit.events is append-only';
END $$;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON audit.events
    FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON audit.events
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();

-- privileges: least privilege per role ------------------------------------------------------
GRANT USAGE ON SCHEMA staff, billing, audit TO billing_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA staff, billing TO billing_app;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA staff, billing TO billing_app;
GRANT SELECT, INSERT ON audit.events TO billing_app;
GRANT USAGE ON SCHEMA cardvault TO billing_tokenizer;
GRANT SELECT, INSERT ON cardvault.pans TO billing_tokenizer;
