"""driftline: streaming drift monitoring and retraining triggers for ML models."""

__version__ = "0.1.0"
