import sys

from crashhp.cli import main

sys.exit(main())
