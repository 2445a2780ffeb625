"""`python -m petcd.cli.ctl`: the same as the `petcdctl` command."""

from petcd.cli.ctl import main

if __name__ == "__main__":
    main()
