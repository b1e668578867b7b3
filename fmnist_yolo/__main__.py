"""`python -m fmnist_yolo` runs the `fmnist-yolo` command line."""

import sys

from .cli import main

sys.exit(main())
