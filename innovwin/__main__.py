import sys

from innovwin.cli import main

sys.exit(main())
