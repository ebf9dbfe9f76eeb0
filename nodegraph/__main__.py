"""`python -m nodegraph ...` runs the command line."""

from nodegraph.cli.app import main

if __name__ == "__main__":
    main()
