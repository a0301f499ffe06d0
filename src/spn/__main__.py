import sys

from spn.cli import main

sys.exit(main())
