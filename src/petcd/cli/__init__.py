"""Command-line entry points: `petcd` (the server) and `petcdctl`."""
