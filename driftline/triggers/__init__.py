"""Turning drift reports into retraining events, and delivering them."""
