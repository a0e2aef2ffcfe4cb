"""Building the rocm-fp8 images: context, streamed build, labelling layer, push, summary.

One flavour's build, in order:

  1. the base image (after any --registry rewrite) must be local or pullable, else a refusal;
  2. the build context is assembled in a temporary tar: docker/Dockerfile, docker/image/, the
     wheelhouse (or an empty one) and rocm_fp8's source (pyproject.toml, README.md, src/rocm_fp8);
  3. ``APIClient.build(decode=True)`` streams the classic builder's output, prefixed with the
     flavour and the current step;
  4. a short-lived container reads the baked /etc/rocm-fp8/config.json back, and a one-line
     ``FROM`` build on top adds the labels (whose values only exist after step 3);
  5. the result is tagged ``<repository>:<rocm>-<arch>`` and optionally pushed.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

import docker
from docker.errors import APIError, BuildError, DockerException, ImageNotFound, NotFound

from rocm_fp8_deploy import engine
from rocm_fp8_deploy.errors import DeployError
from rocm_fp8_deploy.flavours import (AITER_VERSION, DEFAULT_REPOSITORY, AiterSource, Flavour, normalise_mirror,
                                      parse_aiter_spec, split_registry)
from rocm_fp8_deploy.labels import FIXTURE_LABEL, PREFIX, build_labels

Log = Callable[[str], None]
CONTEXT_MTIME = 1577836800  # 2020-01-01: fixed, and after 1980 so wheels can be zipped in the image
_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: builder chatter that says nothing about the build
_NOISE = ("Removing intermediate container", " ---> Running in ")


def repo_root() -> Path:
    """The source checkout this package runs from (it holds docker/ and pyproject.toml)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "docker" / "Dockerfile").is_file() and (parent / "pyproject.toml").is_file():
            return parent
    raise DeployError("cannot find the rocm-fp8 source checkout (docker/Dockerfile and pyproject.toml) above "
                      f"{here}; run from a clone of the repository, or pass source_dir")


@dataclass
class BuildOptions:
    repository: str = DEFAULT_REPOSITORY      # images are tagged <repository>:<rocm>-<arch>
    registry: Optional[str] = None            # mirror prefix for base images
    wheelhouse: Optional[str] = None          # directory of wheels: offline pip inside the build
    push: bool = False
    no_cache: bool = False
    pull: bool = True                         # pull a missing base image
    prebuild: bool = True                     # compile aiter's CK modules at build time
    allow_fixture: bool = False               # accept a recorded-toolchain fixture base (tests)
    max_jobs: Optional[int] = None
    source_dir: Optional[str] = None
    aiter: Optional[str] = None               # --aiter SPEC (flavours.parse_aiter_spec); None: the PyPI pin


@dataclass
class BuiltImage:
    flavour: Flavour
    tag: str
    image_id: str
    size_bytes: int
    seconds: float
    labels: dict[str, str] = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    pushed: bool = False


# ---------------------------------------------------------------------------------------------
# Build context


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = CONTEXT_MTIME
    tar.addfile(info, io.BytesIO(data))


def _add_tree(tar: tarfile.TarFile, source: Path, arcname: str) -> None:
    for path in sorted(source.rglob("*")):
        if "__pycache__" in path.parts or path.suffix in (".pyc", ".pyo") or path.name.endswith(".egg-info"):
            continue
        if any(part.endswith(".egg-info") for part in path.relative_to(source).parts):
            continue
        rel = f"{arcname}/{path.relative_to(source).as_posix()}"
        if path.is_dir():
            continue
        if path.is_file():
            _add_bytes(tar, rel, path.read_bytes(), 0o755 if os.access(path, os.X_OK) else 0o644)


def check_wheelhouse(wheelhouse: str, aiter_from_pypi: bool = True) -> Path:
    path = Path(wheelhouse).expanduser()
    if not path.is_dir():
        raise DeployError(f"--wheelhouse {wheelhouse}: no such directory; create one with "
                          "`invoke wheelhouse --dest DIR` on a machine with PyPI access")
    wheels = [p.name for p in path.glob("*.whl")]
    aiter = [w for w in wheels if w.startswith(f"amd_aiter-{AITER_VERSION}-")]
    if aiter_from_pypi and not aiter:
        raise DeployError(f"--wheelhouse {wheelhouse} has no amd_aiter-{AITER_VERSION} wheel (found {len(wheels)} "
                          "wheels); rebuild it with `invoke wheelhouse --dest DIR`")
    for needed in ("setuptools", "wheel"):
        if not any(w.startswith(f"{needed}-") for w in wheels):
            raise DeployError(f"--wheelhouse {wheelhouse} lacks a {needed} wheel, which installing rocm_fp8 "
                              "from source needs offline; rebuild it with `invoke wheelhouse --dest DIR`")
    return path


def _add_aiter(tar: tarfile.TarFile, aiter: Optional[AiterSource]) -> None:
    """``aiter/``: the wheel or source tree of ``--aiter`` (without its .git), else a note."""
    if aiter is not None and aiter.kind == "wheel":
        _add_bytes(tar, f"aiter/{Path(aiter.context_path).name}", Path(aiter.context_path).read_bytes())
    elif aiter is not None and aiter.kind == "source":
        root = Path(aiter.context_path)
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root)
            if ".git" in rel.parts or "__pycache__" in rel.parts or not path.is_file():
                continue
            _add_bytes(tar, f"aiter/src/{rel.as_posix()}", path.read_bytes(),
                       0o755 if os.access(path, os.X_OK) else 0o644)
    else:
        _add_bytes(tar, "aiter/README.txt", b"aiter comes from pip (AITER_REQUIREMENT), not from this folder.\n")


def write_context(fileobj, *, source_dir: Path, wheelhouse: Optional[Path],
                  aiter: Optional[AiterSource] = None) -> None:
    """The build context as an uncompressed tar, written to ``fileobj``."""
    with tarfile.open(fileobj=fileobj, mode="w") as tar:
        _add_aiter(tar, aiter)
        _add_bytes(tar, "Dockerfile", (source_dir / "docker" / "Dockerfile").read_bytes())
        _add_tree(tar, source_dir / "docker" / "image", "image")
        if wheelhouse is not None:
            for wheel in sorted(wheelhouse.iterdir()):
                if wheel.is_file() and wheel.suffix in (".whl", ".gz", ".zip"):
                    info = tar.gettarinfo(str(wheel), arcname=f"wheelhouse/{wheel.name}")
                    info.mtime, info.uid, info.gid, info.uname, info.gname = CONTEXT_MTIME, 0, 0, "", ""
                    with wheel.open("rb") as f:
                        tar.addfile(info, f)
        else:
            _add_bytes(tar, "wheelhouse/README.txt",
                       b"No --wheelhouse given: pip inside the build uses its index (PyPI or PIP_INDEX_URL).\n")
        _add_bytes(tar, "src/pyproject.toml", (source_dir / "pyproject.toml").read_bytes())
        readme = source_dir / "README.md"
        _add_bytes(tar, "src/README.md", readme.read_bytes() if readme.is_file() else b"# rocm-fp8\n")
        # Only the runtime package: the deploy tooling never goes into a serving image.
        _add_tree(tar, source_dir / "src" / "rocm_fp8", "src/src/rocm_fp8")


# ---------------------------------------------------------------------------------------------
# Streaming build


class BuildStream:
    """Consumes the decoded build stream: prints it live with the current step, keeps a tail."""

    def __init__(self, name: str, log: Log, tail: int = 60):
        self.name = name
        self.log = log
        self.step = "0/?"
        self.step_text = ""
        self.tail: deque[str] = deque(maxlen=tail)
        self.image_id: Optional[str] = None
        self.error: Optional[str] = None

    def feed(self, event: dict) -> None:
        if "error" in event:
            self.error = (event.get("errorDetail") or {}).get("message") or event["error"]
            return
        aux = event.get("aux")
        if isinstance(aux, dict) and aux.get("ID"):
            self.image_id = aux["ID"]
        text = event.get("stream")
        if text is None:
            status = event.get("status")
            if status and "id" not in event:
                self.log(f"[{self.name}] {status}")
            return
        for line in _ANSI.sub("", text).rstrip("\n").split("\n"):
            if not line.strip() or line.startswith(_NOISE):
                continue
            self.tail.append(line)
            m = _STEP.match(line)
            if m:
                self.step = f"{m.group(1)}/{m.group(2)}"
                self.step_text = m.group(3)
                self.log(f"[{self.name}] ==> step {self.step}: {self.step_text}")
                continue
            m = re.match(r"^Successfully built ([0-9a-f]+)", line)
            if m and not self.image_id:
                self.image_id = m.group(1)
            self.log(f"[{self.name} {self.step}] {line}")

    def failure(self, what: str) -> DeployError:
        tail = "\n".join(f"    {line}" for line in list(self.tail)[-25:])
        return DeployError(f"{what} failed at step {self.step} ({self.step_text}): {self.error}\n"
                           f"  last output:\n{tail}")


def stream_build(client: docker.DockerClient, name: str, log: Log, **build_kwargs) -> str:
    """Run one ``APIClient.build`` to completion, streaming; return the built image id."""
    stream = BuildStream(name, log)
    try:
        for event in client.api.build(decode=True, rm=True, forcerm=True, **build_kwargs):
            stream.feed(event)
            if stream.error:
                break
    except BuildError as exc:
        stream.error = str(exc)
    except ImageNotFound as exc:
        raise DeployError(f"[{name}] the build needs an image that is not present: {exc.explanation or exc}") from exc
    except APIError as exc:
        raise DeployError(f"[{name}] the Docker daemon rejected the build: {exc.explanation or exc}") from exc
    except DockerException as exc:
        raise DeployError(f"[{name}] the build was interrupted: {exc}") from exc
    if stream.error:
        raise stream.failure(f"building {name}")
    if not stream.image_id:
        raise stream.failure(f"building {name} (no image id reported)")
    return stream.image_id


# ---------------------------------------------------------------------------------------------
# One flavour

# Printed as one JSON line by the image's own Python: the baked config plus versions.
_READ_BAKED = r"""
import json, sys
from importlib import metadata
out = {}
try:
    out["config"] = json.load(open("/etc/rocm-fp8/config.json"))
except Exception as exc:
    out["config_error"] = repr(exc)
def ver(name):
    try:
        return metadata.version(name)
    except Exception:
        return None
out["runtime"] = {"rocm_fp8_version": ver("rocm-fp8"), "aiter_version": ver("amd-aiter"),
                  "torch_version": ver("torch")}
try:
    import torch
    out["runtime"]["torch_hip"] = getattr(torch.version, "hip", None)
except Exception as exc:
    out["runtime"]["torch_error"] = repr(exc)
print("ROCM_FP8_BAKED " + json.dumps(out))
"""


def _dockerfile_quote(value: str) -> str:
    """A double-quoted Dockerfile word: no variable expansion, no line breaks."""
    value = " ".join(str(value).split())
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def label_dockerfile(image_id: str, labels: dict[str, str]) -> str:
    """``FROM <id>`` plus one LABEL instruction (one layer of metadata, not one per label)."""
    pairs = " \\\n      ".join(f"{k}={_dockerfile_quote(v)}" for k, v in sorted(labels.items()))
    return f"FROM {image_id}\nLABEL {pairs}\n"


def read_baked(client: docker.DockerClient, image: str) -> tuple[dict, dict]:
    result = engine.run_in_image(client, image, ["python3", "-c", _READ_BAKED], entrypoint="", timeout=300)
    line = next((ln for ln in result.output.splitlines() if ln.startswith("ROCM_FP8_BAKED ")), None)
    if not result.ok or line is None:
        raise DeployError(f"cannot read the baked configuration back from {image}: {result.output.strip()[-800:]}")
    data = json.loads(line[len("ROCM_FP8_BAKED "):])
    if "config" not in data:
        raise DeployError(f"{image} has no readable /etc/rocm-fp8/config.json: {data.get('config_error')}")
    return data["config"], data["runtime"]


def resolve_aiter(spec: Optional[str]) -> AiterSource:
    """``--aiter SPEC`` resolved, with the ledger's fix commits checked against a source tree's history."""
    from rocm_fp8.ledger import fix_commits

    return parse_aiter_spec(spec, tuple(fix_commits()))


def build_flavour(client: docker.DockerClient, flavour: Flavour, options: BuildOptions,
                  log: Log = print) -> BuiltImage:
    started = time.time()
    base = flavour.base_for(options.registry)
    engine.ensure_image(client, base, pull=options.pull, log=log)
    base_labels = engine.image_config(client, base).labels
    fixture = bool(base_labels.get(FIXTURE_LABEL))
    if fixture and not options.allow_fixture:
        raise DeployError(f"base image {base} is a recorded-toolchain test fixture (label {FIXTURE_LABEL}); "
                          "it has no ROCm. Real builds need a real ROCm base; tests pass --allow-fixture")
    source_dir = Path(options.source_dir) if options.source_dir else repo_root()
    aiter = resolve_aiter(options.aiter)
    flavour = replace(flavour, aiter_requirement=aiter.requirement)
    wheelhouse = check_wheelhouse(options.wheelhouse, aiter.kind == "pypi") if options.wheelhouse else None
    tag = flavour.tag(options.repository)
    build_args = {
        "BASE_IMAGE": base,
        "ROCM_FP8_FLAVOUR": flavour.name,
        "ROCM_FP8_ARCH": flavour.arch,
        "GPU_ARCHS": flavour.gpu_archs,
        "AITER_REQUIREMENT": flavour.aiter_requirement,
        "AITER_COMMIT": aiter.commit or "",
        "AITER_COMMIT_DATE": aiter.commit_date or "",
        "AITER_INCLUDES": ",".join(aiter.includes),
        "AITER_PREBUILD_MODULES": " ".join(flavour.prebuild_modules),
        "PREBUILD_AITER": "1" if options.prebuild else "0",
        "ALLOW_TOOLCHAIN_FIXTURE": "1" if options.allow_fixture else "0",
        "USE_WHEELHOUSE": "1" if wheelhouse else "0",
        "MAX_JOBS": str(options.max_jobs or ""),
    }
    log(f"[{flavour.name}] aiter: {aiter.describe()}")
    log(f"[{flavour.name}] building {tag} from {base}"
        f"{' (wheelhouse ' + str(wheelhouse) + ')' if wheelhouse else ''}"
        f"{'' if options.prebuild else ' (aiter prebuild OFF)'}")
    with tempfile.TemporaryFile() as context:
        write_context(context, source_dir=source_dir, wheelhouse=wheelhouse, aiter=aiter)
        context.seek(0)
        image_id = stream_build(client, flavour.name, log, fileobj=context, custom_context=True,
                                buildargs=build_args, nocache=options.no_cache, pull=False)

    config, runtime = read_baked(client, image_id)
    labels = build_labels(flavour, config, runtime, base_image=base, prebuilt=options.prebuild,
                          fixture=fixture, aiter_source=aiter.describe())
    log(f"[{flavour.name}] labelling: {labels[PREFIX + 'verdicts']}")
    replaced = _image_id(client, tag)
    labelled = stream_build(client, f"{flavour.name} labels", lambda line: None,
                            fileobj=io.BytesIO(label_dockerfile(image_id, labels).encode()), tag=tag,
                            pull=False, nocache=False)
    log(f"[{flavour.name}] tagged {tag}")
    info = client.api.inspect_image(labelled)
    if replaced and replaced != info["Id"]:
        remove_replaced(client, replaced, tag, log)
    built = BuiltImage(flavour=flavour, tag=tag, image_id=info["Id"], size_bytes=int(info.get("Size") or 0),
                       seconds=time.time() - started, labels=labels, config=config)
    if options.push:
        push_image(client, tag, log)
        built.pushed = True
    return built


def _image_id(client: docker.DockerClient, reference: str) -> Optional[str]:
    try:
        return client.api.inspect_image(reference)["Id"]
    except NotFound:  # ImageNotFound too
        return None


def remove_replaced(client: docker.DockerClient, image_id: str, tag: str, log: Log = print) -> bool:
    """Remove the image that ``tag`` named before a rebuild moved the tag, so it does not linger as an
    untagged ``<none>`` image.  Never forced: an image still used by a container, or carrying another
    tag, is kept, and the message says how to remove it later."""
    short = image_id.split(":")[-1][:12]
    try:
        client.api.remove_image(image_id, force=False, noprune=False)
    except NotFound:  # ImageNotFound too
        return False
    except APIError as exc:
        log(f"kept the image {tag} replaced ({short}): {exc.explanation or exc}; "
            f"remove it once unused with `docker image rm {short}`")
        return False
    log(f"removed the image {tag} replaced ({short})")
    return True


def push_image(client: docker.DockerClient, tag: str, log: Log = print) -> None:
    repository, name_tag = tag.rsplit(":", 1)
    host, _path = split_registry(repository)
    if host is None and "/" not in repository:
        raise DeployError(f"refusing to push {tag}: it names no registry or namespace. Build with "
                          "--repo REGISTRY/NAMESPACE/rocm-fp8 (e.g. registry.example.com/ml/rocm-fp8)")
    log(f"pushing {tag} ...")
    try:
        for event in client.api.push(repository, tag=name_tag, stream=True, decode=True):
            if "error" in event:
                raise DeployError(f"pushing {tag} failed: {event['error']} (log in with `docker login "
                                  f"{host or 'docker.io'}`?)")
            if event.get("status") and "id" not in event:
                log(f"  {event['status']}")
    except APIError as exc:
        raise DeployError(f"pushing {tag} failed: {exc.explanation or exc}") from exc
    except DockerException as exc:
        raise DeployError(f"pushing {tag} failed: {exc}") from exc


def build(flavours: list[Flavour], options: BuildOptions, log: Log = print,
          client: Optional[docker.DockerClient] = None) -> list[BuiltImage]:
    """Build each flavour in turn; stop at the first failure (its message says which)."""
    if options.registry:
        normalise_mirror(options.registry)
    aiter = resolve_aiter(options.aiter)  # refuse a bad --aiter before any build starts
    if options.wheelhouse:
        check_wheelhouse(options.wheelhouse, aiter.kind == "pypi")
    client = client or engine.connect()
    built = []
    for i, flavour in enumerate(flavours, 1):
        log(f"=== [{i}/{len(flavours)}] {flavour.name} ===")
        built.append(build_flavour(client, flavour, options, log))
    return built


def summary(built: list[BuiltImage]) -> str:
    rows = [("tag", "image", "size", "time", "rocm", "hipcc", "aiter", "prebuilt", "verdicts")]
    for b in built:
        L = b.labels
        rows.append((b.tag + (" (pushed)" if b.pushed else ""), b.image_id.split(":")[-1][:12],
                     f"{b.size_bytes / 1e9:.2f} GB", f"{b.seconds:.0f} s", L.get(PREFIX + "rocm-version", "?"),
                     L.get(PREFIX + "hipcc-version", "?"), L.get(PREFIX + "aiter-version", "?"),
                     L.get(PREFIX + "aiter-prebuilt", "?"), L.get(PREFIX + "verdicts", "?")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    return "\n".join(lines)
