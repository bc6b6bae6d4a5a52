# service-certs: issue short-lived service certificates from the intermediate CA (ENC-05).
# Only the "service" role, whose allowed names are the environment's hosts.

path "pki_int/issue/service" {
  capabilities = ["update"]
}

path "auth/token/lookup-self" {
  capabilities = ["read"]
}
