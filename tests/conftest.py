"""Shared test configuration. The control marker and its checks live in billkit.checks."""
