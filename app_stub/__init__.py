"""billkit's reference billing app: how billing software uses the kit's controls.

FastAPI + psycopg 3 + Jinja2. Start it with ``uvicorn --factory app_stub.main:create_app``
and ``BILLKIT_APP_*`` settings (``app_stub.core.config``); operator commands: ``python -m app_stub``.

What it expects of Vault (OpenBao) — ``app_stub.vault_setup.ensure_vault`` creates it:

- transit engine at mount ``transit`` with keys ``pan`` (aes256-gcm96), ``pii`` (aes256-gcm96)
  and ``lookup-hmac`` (hmac);
- policy ``billing-app``: encrypt with ``pan``; datakey, encrypt, decrypt with ``pii``; hmac with
  ``lookup-hmac``. Policy ``payment-processor``: decrypt with ``pan``. Policy ``key-rotation``:
  rotate, configure and rewrap ``pan`` and ``pii``;
- AppRole roles ``billing-app`` and ``payment-processor`` (auth mount ``approle``).

What it expects of PostgreSQL: login roles ``billing_app`` (billing, staff, audit schemas)
and ``billing_tokenizer`` (the ``cardvault`` schema only), created by ``app_stub.db.ensure_roles``;
the schema comes from ``app_stub/migrations`` (``app_stub.db.migrate``, run as the owner).

- transit key ``audit-head`` (ed25519): the app signs the audit chain's head; auditors read its
  public key.

Layout: ``main`` (the app factory and its table of contents, ``include_routers``), ``api``
(``deps``, ``schemas``, ``handlers``, ``routes/<resource>``), ``services/<domain>`` (the business
rules), ``ui`` (the staff pages), ``core.config`` (settings); beside them ``db`` (pools, migrator),
``crypto`` (transit, envelope encryption), ``tokenization`` (card validation and tokens),
``gateway`` (payment adapter, fake gateway), ``rbac`` (roles), ``audit`` (the hash-chained log),
``rewrap`` (forced rewrap).
"""
