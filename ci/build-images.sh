#!/usr/bin/env bash
# The main job on a fresh machine: build the rocm-fp8 images for ROCm 7.0 and 7.2 (gfx950, where the
# two releases differ) with `invoke build`, then ask each image, as its non-root user, what it runs.
#
# Where the real ROCm bases cannot be pulled (no registry, as on a CI box), the same `invoke build`
# runs against stand-in bases: a debootstrapped Debian with CPU torch and a *recorded* ROCm 7.0 / 7.2
# toolchain (hipcc/hipconfig replay real --version output). Those images cannot run a GPU kernel;
# they show the product path and the baked configuration. Set ROCM_FP8_REAL_BASES=1 on a ROCm host
# with registry access to build the real images instead (extra arguments go to `invoke build`).
set -euo pipefail
cd "$(dirname "$0")/.."

bash ci/bootstrap.sh
ROCM_FP8_DOCKER_OWNER=build-images bash ci/setup-docker.sh start
# shellcheck disable=SC1091
. .venv/bin/activate

if [ "${ROCM_FP8_REAL_BASES:-0}" = "1" ]; then
    invoke build --rocm 7.0 --rocm 7.2 "$@"
    exit 0
fi

PREFIX="${ROCM_FP8_FIXTURE_PREFIX:-fixture.rocm-fp8.invalid}"
WHEELHOUSE="${ROCM_FP8_WHEELHOUSE:-$HOME/.cache/rocm-fp8/wheelhouse-product-py311}"

# both steps can be quiet for a minute (debootstrap, pip download): the heartbeat says they are alive
echo "== stand-in bases (no ROCm registry here): $PREFIX/rocm/pytorch:*"
python3 ci/heartbeat.py --label standins -- invoke standins --rocm 7.0 --rocm 7.2 --prefix "$PREFIX"
echo "== wheelhouse for the image's Python 3.11: $WHEELHOUSE"
python3 ci/heartbeat.py --label wheelhouse -- invoke wheelhouse --dest "$WHEELHOUSE" --python 3.11
echo "== invoke build"
invoke build --rocm 7.0 --rocm 7.2 --arch gfx950 --registry "$PREFIX" --wheelhouse "$WHEELHOUSE" \
    --allow-fixture --no-prebuild "$@"

for tag in rocm-fp8:7.0-gfx950 rocm-fp8:7.2-gfx950; do
    echo
    echo "== $tag: labels"
    docker image inspect "$tag" --format '{{range $k, $v := .Config.Labels}}{{$k}}={{$v}}{{"\n"}}{{end}}' \
        | grep -E '^rocm-fp8\.(rocm-version|hipcc-version|arch|aiter-version|version|verdicts)='
    echo "== $tag: rocm-fp8 explain --n 2048 --k 3072 --m 4096 (MiniMax-M2.5 qkv at TP4), as user rocm-fp8,"
    echo "   from the configuration baked into the image"
    docker run --rm "$tag" rocm-fp8 explain --n 2048 --k 3072 --m 4096
done
cat <<'NEXT'

built: rocm-fp8:7.0-gfx950 rocm-fp8:7.2-gfx950 (a rebuild replaces them and removes the old images)
The Docker daemon is left running (stop it with: bash ci/setup-docker.sh stop). Next:
  bash ci/run-tests.sh                                   # the test suite (leaves this daemon running)
  . .venv/bin/activate                                   # then, for invoke and rocm-fp8:
  invoke test-matrix --arch gfx950 --cpu-only --report matrix-report   # the test matrix on these two images
  invoke doctor --image rocm-fp8:7.2-gfx950              # the image's self-check (fails here: no GPU)
  bash ci/build-images.sh                                # after a source change: rebuilds the last layers only
NEXT
