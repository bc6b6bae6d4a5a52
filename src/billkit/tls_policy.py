"""The kit's one TLS policy (ENC-07): TLS 1.2 or newer, and in TLS 1.2 forward-secret AEAD suites only (ECDHE with
AES-GCM or ChaCha20-Poly1305; TLS 1.3 has no others). Every TLS listener's role sets it in its server's own
notation, from a variable whose default is this policy; tests/unit/test_tls_policy_roles.py holds each default to it
and the lab check tests/hosts/test_tls_policy.py probes every listener the topology opens.
"""

from __future__ import annotations

MIN_VERSION = "TLSv1.2"

# OpenSSL's cipher-string notation: nginx, PostgreSQL, stunnel, uvicorn and Python's ssl.
OPENSSL_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"

# The same suites by their IANA names: Go servers (OpenBao, the Prometheus exporter toolkit).
IANA_CIPHER_SUITES = (
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
)

# What an attacker's or an old client's hello offers instead: CBC suites only, with and without forward secrecy.
CBC_ONLY_OPENSSL = "ECDHE+AES+SHA1:ECDHE+AES+SHA256:ECDHE+AES+SHA384:RSA+AES:!AESGCM:!AESCCM"
