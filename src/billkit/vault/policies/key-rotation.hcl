# key-rotation: the forced-rewrap job (python -m app_stub rewrap): rotate the card and personal
# data keys, re-wrap stored ciphertexts to the newest version, then retire older versions
# (EAR-05). It never sees plaintext: rewrap returns ciphertext only.

path "transit/keys/pan" {
  capabilities = ["read"]
}

path "transit/keys/pii" {
  capabilities = ["read"]
}

path "transit/keys/pan/rotate" {
  capabilities = ["update"]
}

path "transit/keys/pii/rotate" {
  capabilities = ["update"]
}

path "transit/keys/pan/config" {
  capabilities = ["update"]
}

path "transit/keys/pii/config" {
  capabilities = ["update"]
}

path "transit/rewrap/pan" {
  capabilities = ["update"]
}

path "transit/rewrap/pii" {
  capabilities = ["update"]
}

path "auth/token/lookup-self" {
  capabilities = ["read"]
}
