"""Pydantic models at every edge of driftline: events, monitors config, reports, triggers."""
