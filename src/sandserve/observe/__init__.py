"""Observing endpoints: what they are doing now (top) and how fast they are for your traffic (bench)."""
