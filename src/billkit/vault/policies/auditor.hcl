# auditor: read-only view of configuration for assessors. No secret, no key, no data. RBAC-04.

path "sys/policies/acl" {
  capabilities = ["list"]
}

path "sys/policies/acl/*" {
  capabilities = ["read"]
}

path "sys/mounts" {
  capabilities = ["read"]
}

path "sys/auth" {
  capabilities = ["read"]
}

path "sys/audit" {
  capabilities = ["read", "sudo"]
}

path "transit/keys/*" {
  capabilities = ["read"]
}

path "database/roles/*" {
  capabilities = ["read"]
}

path "auth/approle/role/*" {
  capabilities = ["read"]
}

path "auth/token/lookup-self" {
  capabilities = ["read"]
}
