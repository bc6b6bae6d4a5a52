# break-glass: may start a root token generation; finishing it still needs 3 of the 5 unseal
# key shares (EAR-07). Held only by the kit's administrator identity, which logs in with
# password + TOTP (MFA-03). Root tokens made this way are used for one change, then revoked.

path "sys/generate-root-token/*" {
  capabilities = ["create", "read", "update", "delete"]
}

path "auth/token/lookup-self" {
  capabilities = ["read"]
}
