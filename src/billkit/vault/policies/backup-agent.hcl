# backup-agent: takes raft snapshots (BAK-08) and reads the backup repository passphrase.

path "sys/storage/raft/snapshot" {
  capabilities = ["read"]
}

path "secret/data/backup/*" {
  capabilities = ["read"]
}

path "auth/token/lookup-self" {
  capabilities = ["read"]
}
