import sys

from egenmon.cli import main

sys.exit(main())
