"""rocm_fp8_deploy: build, check and ship the rocm-fp8 images (deploy side only).

The runtime package ``rocm_fp8`` never imports this one; this one may import docker and invoke.

  flavours.py    the table: ROCm release x arch -> pinned base, aiter pin, GPU_ARCHS, CK modules;
                 tags and --registry rewriting (pure)
  engine.py      the Docker engine: connect (or refuse), ensure a base image, run in a container,
                 AMD device options for `docker run`
  build.py       build context, streamed build, labelling layer, push, summary
  labels.py      labels from the baked configuration (pure)
  wheelhouse.py  `pip download` wheelhouses for air-gapped builds
  host.py        the host-side tasks: install, probe, doctor, clean
  matrix/        the GPU test matrix: spec (ci/matrix.toml), planning, host GPUs, verdicts, run
  cell_runner.py runs inside a matrix cell's container; report.py renders the matrix report
  testing/       test infrastructure: standin.py, the stand-in bases (debootstrapped Debian + CPU
                 torch + recorded-toolchain fixtures) that let CI build images without ROCm

  docker/Dockerfile   the one image recipe; docker/image/*.py run inside the build
  tasks.py            thin Invoke tasks over these functions
"""

from rocm_fp8_deploy.errors import DeployError

__all__ = ["DeployError"]
