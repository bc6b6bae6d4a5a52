# operator: people who run the platform (userpass + TOTP, MFA-03). They observe and operate;
# they cannot read secrets, decrypt data or change policies. RBAC-04.

path "sys/health" {
  capabilities = ["read"]
}

path "sys/seal-status" {
  capabilities = ["read"]
}

path "sys/storage/raft/autopilot/state" {
  capabilities = ["read"]
}

path "sys/storage/raft/configuration" {
  capabilities = ["read"]
}

path "sys/policies/acl" {
  capabilities = ["list"]
}

path "sys/policies/acl/*" {
  capabilities = ["read"]
}

path "sys/mounts" {
  capabilities = ["read"]
}

path "transit/keys/*" {
  capabilities = ["read"]
}

path "transit/decrypt/*" {
  capabilities = ["deny"]
}

# Short-lived SSH certificates for the hosts (the ssh_hardening role trusts this CA).
path "ssh-client-signer/sign/operator" {
  capabilities = ["update"]
}

path "auth/token/lookup-self" {
  capabilities = ["read"]
}

path "auth/token/revoke-self" {
  capabilities = ["update"]
}
