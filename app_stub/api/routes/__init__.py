"""One router per resource; the app factory (``app_stub.main``) lists them."""
