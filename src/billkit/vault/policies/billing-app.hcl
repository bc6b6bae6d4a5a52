# billing-app: the reference billing app (AppRole "billing-app").
# RBAC-04, TOK-03: it may encrypt card numbers but never decrypt them; only payment-processor can.
# EAR-05: envelope encryption of personal data with data keys from the "pii" transit key, and
# small secrets (staff TOTP seeds) encrypted with "pii" directly.

path "transit/encrypt/pan" {
  capabilities = ["update"]
}

path "transit/decrypt/pan" {
  capabilities = ["deny"]
}

path "transit/datakey/plaintext/pii" {
  capabilities = ["update"]
}

path "transit/datakey/wrapped/pii" {
  capabilities = ["update"]
}

path "transit/encrypt/pii" {
  capabilities = ["update"]
}

path "transit/decrypt/pii" {
  capabilities = ["update"]
}

path "transit/hmac/lookup-hmac" {
  capabilities = ["update"]
}

path "transit/hmac/lookup-hmac/*" {
  capabilities = ["update"]
}

# LOG-08: signs the audit chain's head (app_stub/audit.py); auditors verify with the public key.
path "transit/sign/audit-head" {
  capabilities = ["update"]
}

# RBAC-05: short-lived dynamic database credentials.
path "database/creds/billing-app" {
  capabilities = ["read"]
}

path "database/creds/billing-tokenizer" {
  capabilities = ["read"]
}

path "sys/leases/renew" {
  capabilities = ["update"]
}

path "auth/token/lookup-self" {
  capabilities = ["read"]
}

path "auth/token/renew-self" {
  capabilities = ["update"]
}
