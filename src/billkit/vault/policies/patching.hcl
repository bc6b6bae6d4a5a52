# patching: the rolling patch run (`billkit patch`, PAT-04) makes the active node step down before
# that node is patched, so the election happens first. Nothing else: it reads and writes no secret.

path "sys/step-down" {
  capabilities = ["update", "sudo"]
}

# The run revokes its own token when it ends, without a root session for that.
path "auth/token/revoke-self" {
  capabilities = ["update"]
}
