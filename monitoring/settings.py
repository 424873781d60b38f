"""Monitoring settings live in the one configuration (`churnops.config.Settings.monitoring`, read from
`CHURNOPS_MONITORING__*`); this module keeps the monitoring room's import path."""

from churnops.config import MonitoringSettings

__all__ = ["MonitoringSettings"]
