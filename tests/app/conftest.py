"""App-test fixtures (defined in apphelpers.py): services, env, clerk."""

from apphelpers import clerk, env, services  # noqa: F401 - fixtures
