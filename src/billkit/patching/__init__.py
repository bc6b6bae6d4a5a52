"""Patching: the status of every host (``status``), the release date of each pending update read from
the mirror (``age``), the PAT-05 gate and its reports (``report``), and the rollout (``rollout``).
"""
