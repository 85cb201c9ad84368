from sandserve.cli import run

run()
