"""`python -m cli`: how `imagejobs dev` starts its children with the same interpreter."""

import sys

from cli.main import main

sys.exit(main())
