import sys

from petcd.cli.benchmark import main

sys.exit(main())
