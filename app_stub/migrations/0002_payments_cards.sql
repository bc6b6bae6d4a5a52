-- Payments never exceed the invoice (APP-03); cards belong to their customer (TOK-03, CMP-05).

-- Payments and credit notes together never exceed the invoice's total. The app also counts
-- pending payments against the balance; this is the database's last line against a double charge.
-- NOT VALID first: the check applies to every new or changed row at once, and is validated
-- below when no existing invoice breaks it.
ALTER TABLE billing.invoices
    ADD CONSTRAINT invoices_paid_within_total CHECK (paid_minor + credited_minor <= total_minor) NOT VALID;
-- the pending payments of an invoice are summed under its row lock, and swept by the recovery timer
CREATE INDEX payments_pending ON billing.payments (invoice_id, created_at) WHERE status = 'pending';
CREATE INDEX payments_invoice ON billing.payments (invoice_id);

-- A card belongs to one customer: only their invoices are paid with it, and their erasure
-- destroys it. An erased card stays as a tombstone (brand and last four, no expiry, no
-- ciphertext in the card vault) because payments keep referring to it for accounting.
ALTER TABLE billing.cards
    ADD COLUMN customer_id bigint REFERENCES billing.customers(id),
    ADD COLUMN erased_at timestamptz,
    ALTER COLUMN exp_month DROP NOT NULL,
    ALTER COLUMN exp_year DROP NOT NULL,
    ADD CONSTRAINT cards_expiry_until_erased
        CHECK (erased_at IS NOT NULL OR (exp_month IS NOT NULL AND exp_year IS NOT NULL)),
    ADD CONSTRAINT cards_customer_required CHECK (customer_id IS NOT NULL) NOT VALID;
CREATE INDEX cards_customer ON billing.cards (customer_id);

-- Existing cards: the customer whose invoices they paid, when that is exactly one customer.
-- A card never used, or used for several customers, cannot be attributed from the data: it stays
-- unbound (NULL), pays nothing any more (the app refuses it: take the card again for the customer),
-- and is destroyed with the first customer erased whose invoices it paid.
UPDATE billing.cards c SET customer_id = o.customer_id
FROM (
    SELECT p.card_token, min(i.customer_id) AS customer_id
    FROM billing.payments p JOIN billing.invoices i ON i.id = p.invoice_id
    GROUP BY p.card_token
    HAVING count(DISTINCT i.customer_id) = 1
) o
WHERE o.card_token = c.token;

DO $$
DECLARE
    overpaid text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM billing.cards WHERE customer_id IS NULL) THEN
        ALTER TABLE billing.cards VALIDATE CONSTRAINT cards_customer_required;
    ELSE
        RAISE WARNING 'billing.cards: % existing card(s) could not be bound to one customer; they can no longer '
            'pay (take the card again for its customer)', (SELECT count(*) FROM billing.cards WHERE customer_id IS NULL);
    END IF;
    SELECT string_agg(id::text, ', ' ORDER BY id) INTO overpaid
        FROM billing.invoices WHERE paid_minor + credited_minor > total_minor;
    IF overpaid IS NULL THEN
        ALTER TABLE billing.invoices VALIDATE CONSTRAINT invoices_paid_within_total;
    ELSE
        RAISE WARNING 'invoices % were paid beyond their total (double charges): refund the excess; new payments '
            'and credit notes are checked already', overpaid;
    END IF;
END $$;

-- erasure deletes the customer's card ciphertexts (CMP-05)
GRANT DELETE ON cardvault.pans TO billing_tokenizer;
