"""Reading the monitoring host: the alerts that fire now and those of the last day (``alerts``), over TLS
with the operators' credentials (``billkit.lab.monitoring.monitoring_access`` in the lab).
"""
