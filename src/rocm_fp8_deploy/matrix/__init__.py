"""The test matrix: every flavour's image x every suite, each cell in its own container.

    spec.py      load_matrix(path): ci/matrix.toml -> Matrix (validated; errors name the key and the fix)
    planning.py  plan(matrix, ...): -> [Cell] for the requested --rocm/--arch/--suite
    gpus.py      host_gpus(vendor): the host's GPUs (AMD via the KFD topology, NVIDIA via its device
                 nodes), --gpus parsing and selection, the pool parallel cells share
    verdicts.py  judge(...): pure, one cell's verdict from what its container left behind
    run.py       run_matrix(...): runs the cells (in parallel on disjoint GPUs), then the report

A cell's container gets the checkout's tests/ read-only, the host's pytest (copied into a tools
directory, so images need not carry pytest), and an output directory.  ``cell_runner.py`` inside
checks what the container sees (a GPU suite with no GPU visible stops there), then runs pytest with
``--junitxml`` into the output directory.  The verdict comes from the XML, and the exit code may
only make it worse: a cell passes only when its XML exists, shows at least one passed test and no
failure or error, and the container exited normally.  Exit codes of GPU processes are known to lie
(docs/reference.md section 6), and a test run that saw no GPU must not look green.

Every name is re-exported here: ``rocm_fp8_deploy.matrix.<name>`` keeps working.
"""

from rocm_fp8_deploy.matrix.gpus import (
    GpuPool,
    HostGpu,
    amd_gpus,
    gpu_run_options,
    host_gpus,
    nvidia_gpus,
    parse_gpus,
    select_gpus,
)
from rocm_fp8_deploy.matrix.planning import Cell, plan
from rocm_fp8_deploy.matrix.run import (
    CELL_LABEL,
    EXTRA_IN,
    LOG_TAIL_LINES,
    MARKERS,
    MOUNT,
    OUT_IN,
    PYTEST_DISTRIBUTIONS,
    RUN_LABEL,
    TESTS_IN,
    TOOLS_IN,
    Log,
    MatrixResult,
    Progress,
    RunOptions,
    flavour_facts,
    pytest_args,
    pytest_tools,
    run_cell,
    run_matrix,
)
from rocm_fp8_deploy.matrix.spec import FlavourSpec, Matrix, Suite, default_matrix_path, load_matrix
from rocm_fp8_deploy.matrix.verdicts import CellResult, Counts, judge, parse_junit

__all__ = [
    "FlavourSpec", "Suite", "Matrix", "load_matrix", "default_matrix_path", "Cell", "plan", "parse_gpus",
    "HostGpu", "amd_gpus", "nvidia_gpus", "host_gpus", "select_gpus", "gpu_run_options", "GpuPool", "Counts",
    "parse_junit", "CellResult", "judge", "RunOptions", "MatrixResult", "Progress", "pytest_tools", "pytest_args",
    "run_cell", "flavour_facts", "run_matrix", "Log", "MOUNT", "TESTS_IN", "EXTRA_IN", "TOOLS_IN", "OUT_IN",
    "CELL_LABEL", "RUN_LABEL", "PYTEST_DISTRIBUTIONS", "MARKERS", "LOG_TAIL_LINES",
]
