"""sandserve."""
