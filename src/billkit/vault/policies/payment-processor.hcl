# payment-processor: the only role that may turn a PAN ciphertext back into a card number.
# RBAC-04, TOK-03. Every decrypt is recorded by the audit device (LOG-09).

path "transit/decrypt/pan" {
  capabilities = ["update"]
}

path "auth/token/lookup-self" {
  capabilities = ["read"]
}

path "auth/token/renew-self" {
  capabilities = ["update"]
}
