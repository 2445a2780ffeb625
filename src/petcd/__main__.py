"""`python -m petcd`: the server, same as the `petcd` command."""

from petcd.cli.server import main

if __name__ == "__main__":
    main()
