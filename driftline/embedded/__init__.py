"""The zero-configuration default: an embedded broker, and the demo."""
