"""``python -m rocm_fp8.probe``: the same as ``rocm-fp8 probe``."""

import sys

from rocm_fp8.probe.cli import main

sys.exit(main())
