# key-rotator: the scheduled job that rotates transit keys, re-wraps stored ciphertexts to the
# newest version and then retires older versions (EAR-05). It never sees plaintext: rewrap
# returns ciphertext only.

path "transit/keys/+/rotate" {
  capabilities = ["update"]
}

path "transit/keys/+/config" {
  capabilities = ["update"]
}

path "transit/keys/+" {
  capabilities = ["read"]
}

path "transit/rewrap/+" {
  capabilities = ["update"]
}

path "auth/token/lookup-self" {
  capabilities = ["read"]
}
