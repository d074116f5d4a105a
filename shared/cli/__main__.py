import sys

from shared.cli.app import main

sys.exit(main())
