# report-signing: `billkit report` signs its evidence manifest and checks signatures. Nothing else:
# no export, no backup, no key configuration, no other key. CMP-07.

path "transit/sign/report-signing" {
  capabilities = ["update"]
}

path "transit/verify/report-signing" {
  capabilities = ["update"]
}

# the public keys only (transit never returns an ed25519 private key here)
path "transit/keys/report-signing" {
  capabilities = ["read"]
}
