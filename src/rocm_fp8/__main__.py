import sys

from rocm_fp8.cli import entry_point

sys.exit(entry_point())
