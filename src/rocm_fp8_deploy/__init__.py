"""rocm_fp8_deploy: build, check and ship the rocm-fp8 images (deploy side only).

The runtime package ``rocm_fp8`` never imports this one; this one may import docker and invoke.

  flavours.py    the table: ROCm release x arch -> pinned base, aiter pin, GPU_ARCHS, CK modules;
                 tags and --registry rewriting (pure)
  engine.py      the Docker engine: connect (or refuse), ensure a base image, run in a container,
                 AMD device options for `docker run`
  build.py       build context, streamed build, labelling layer, push, summary
  labels.py      labels from the baked configuration (pure)
  wheelhouse.py  `pip download` wheelhouses for air-gapped builds
  standin.py     test stand-ins: debootstrapped Debian + CPU torch + recorded-toolchain fixtures
  host.py        the host-side tasks: install, probe, doctor, clean

  docker/Dockerfile   the one image recipe; docker/image/*.py run inside the build
  tasks.py            thin Invoke tasks over these functions
"""

from rocm_fp8_deploy.errors import DeployError

__all__ = ["DeployError"]
