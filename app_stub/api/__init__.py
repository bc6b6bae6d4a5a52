"""The HTTP API: ``deps`` (sessions, CSRF, ``guarded``), ``schemas`` (request bodies), ``handlers``
(security headers, errors), and ``routes/<resource>.py``, one ``APIRouter`` each."""
