"""Local stand-ins of remote services, for tests (import as `standins.<module>` with tests/ on sys.path)."""
