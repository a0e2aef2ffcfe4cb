"""``python -m rocm_fp8.tune``: the same as ``rocm-fp8 tune``."""

import sys

from rocm_fp8.tune.cli import main

sys.exit(main())
