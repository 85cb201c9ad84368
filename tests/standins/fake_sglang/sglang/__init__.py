"""A fake ``sglang`` package: put tests/standins/fake_sglang on PYTHONPATH and ``python -m
sglang.launch_server`` runs the stand-in (tests/standins/sglang_server.py) with SGLang's command line and
start-up log."""

__version__ = "0.5.12.post1"
