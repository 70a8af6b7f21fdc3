"""aiaas — a self-hosted, open-source AI-as-a-Service platform."""

__version__ = "0.1.0"
