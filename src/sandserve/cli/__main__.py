from sandserve.cli import main

main()
