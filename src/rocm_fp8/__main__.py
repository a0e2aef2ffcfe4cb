import sys

from rocm_fp8.cli import main

sys.exit(main())
