"""Endpoints and online prediction: deploy model versions, serve them fast and safely."""
