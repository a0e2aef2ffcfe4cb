"""Talking to the Docker engine: connect, make sure a base image is there, run a command in a container.

Everything here uses the real engine through docker-py.  Errors that a user can fix come out as
:class:`DeployError` with one message; the narrow docker exceptions are caught first and
``DockerException`` last, so a surprise is still reported with its own words.
"""

from __future__ import annotations

import grp
import glob
import os
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from requests.exceptions import ConnectionError as RequestsConnectionError
from requests.exceptions import ReadTimeout

from rocm_fp8_deploy.errors import DeployError
from rocm_fp8_deploy.flavours import split_tag

DAEMON_FIX = ("start it (`sudo systemctl start docker`, or `sudo ci/setup-docker.sh start` on a bare "
              "Debian host) or point DOCKER_HOST at a running engine")


def daemon_address() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def connect(timeout: int = 600) -> docker.DockerClient:
    """A client for a daemon that answered a ping, or a DeployError saying how to get one.

    ``timeout`` is the per-request timeout: builds stream for a long time, so it is generous.
    """
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
        return client
    except APIError as exc:
        raise DeployError(f"the Docker daemon at {daemon_address()} refused the connection: "
                          f"{exc.explanation or exc}; {DAEMON_FIX}") from exc
    except DockerException as exc:
        raise DeployError(f"cannot reach a Docker daemon at {daemon_address()} ({_first_line(exc)}); "
                          f"{DAEMON_FIX}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def image_exists(client: docker.DockerClient, reference: str) -> bool:
    try:
        client.api.inspect_image(reference)
        return True
    except ImageNotFound:
        return False


@dataclass(frozen=True)
class ImageConfig:
    """What ``docker inspect`` says about a local image, in the few fields we read."""

    id: str
    labels: dict[str, str]
    env: dict[str, str]


def image_config(client: docker.DockerClient, reference: str) -> ImageConfig:
    """The id, labels and environment of a local image. Raises docker's ImageNotFound when absent."""
    info = client.api.inspect_image(reference)
    config = info.get("Config") or {}
    env = dict(item.split("=", 1) for item in config.get("Env") or [] if "=" in item)
    return ImageConfig(id=info.get("Id", ""), labels=dict(config.get("Labels") or {}), env=env)


def ensure_image(client: docker.DockerClient, reference: str, *, pull: bool = True,
                 log: Callable[[str], None] = print, what: str = "base image") -> None:
    """Make sure ``reference`` is in the local image store, pulling it when allowed.

    The refusal names the image and the ``--registry`` option, because the usual reason a pull
    fails on a build host is that Docker Hub is not reachable but a mirror is.
    """
    if image_exists(client, reference):
        return
    hint = ("if your hosts pull through a mirror, pass --registry MIRROR (it rewrites base images to "
            "MIRROR/rocm/pytorch:...); or `docker load` the image on this host first")
    if not pull:
        raise DeployError(f"{what} {reference} is not present locally and pulling is disabled; {hint}")
    repository, tag = split_tag(reference)
    log(f"pulling {what} {reference} (not present locally) ...")
    try:
        last_status = None
        for event in client.api.pull(repository, tag=tag, stream=True, decode=True):
            if "error" in event:
                raise DeployError(f"{what} {reference} is not present locally and cannot be pulled: "
                                  f"{event['error']}; {hint}")
            status = event.get("status")
            if status and status != last_status and "id" not in event:
                log(f"  {status}")
                last_status = status
    except (NotFound, ImageNotFound) as exc:
        raise DeployError(f"{what} {reference} is not present locally and the registry does not have it "
                          f"({exc.explanation or exc}); {hint}") from exc
    except APIError as exc:
        raise DeployError(f"{what} {reference} is not present locally and cannot be pulled "
                          f"({exc.explanation or exc}); {hint}") from exc
    except DockerException as exc:
        raise DeployError(f"{what} {reference} is not present locally and cannot be pulled "
                          f"({_first_line(exc)}); {hint}") from exc
    if not image_exists(client, reference):
        raise DeployError(f"pulling {what} {reference} finished without the image appearing; {hint}")


# ---------------------------------------------------------------------------------------------
# Containers


@dataclass
class RunResult:
    exit_code: int
    output: str           # stdout and stderr interleaved, as the container wrote them
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


def run_in_image(client: docker.DockerClient, image: str, command: list[str] | str, *,
                 user: Optional[str] = None, environment: Optional[dict[str, str]] = None,
                 entrypoint: Optional[list[str] | str] = None, volumes: Optional[dict] = None,
                 devices: Optional[list[str]] = None, group_add: Optional[list[str]] = None,
                 timeout: Optional[float] = 600, stream: Optional[Callable[[str], None]] = None,
                 **run_options) -> RunResult:
    """Run ``command`` in a fresh container of ``image`` and return its exit code and output.

    The container is always removed.  ``stream`` receives output lines as they arrive (live
    progress); a container still running after ``timeout`` seconds is killed and reported as
    timed out.  Extra keyword arguments go to ``containers.create`` (e.g. ``shm_size``).
    """
    import threading

    try:
        container = client.containers.create(
            image, command, user=user, environment=environment, entrypoint=entrypoint,
            volumes=volumes, devices=devices, group_add=group_add, detach=True, **run_options)
    except ImageNotFound as exc:
        raise DeployError(f"image {image} is not present locally; build it first (`invoke build`)") from exc
    except APIError as exc:
        raise DeployError(f"cannot create a container from {image}: {exc.explanation or exc}") from exc
    chunks: list[str] = []
    try:
        container.start()

        def pump() -> None:
            pending = ""
            for raw in container.logs(stream=True, follow=True):
                text = raw.decode("utf-8", "replace")
                chunks.append(text)
                if stream is not None:
                    pending += text
                    *lines, pending = pending.split("\n")
                    for line in lines:
                        stream(line)
            if stream is not None and pending:
                stream(pending)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        timed_out = False
        try:
            status = container.wait(timeout=timeout)
            exit_code = int(status.get("StatusCode", -1))
        except (ReadTimeout, RequestsConnectionError):
            # docker-py surfaces wait(timeout=) expiring as requests' ReadTimeout (or a
            # ConnectionError wrapping urllib3's read timeout, depending on the transport)
            timed_out = True
            container.kill()
            exit_code = int(container.wait(timeout=60).get("StatusCode", -1))
        reader.join(timeout=30)
        return RunResult(exit_code=exit_code, output="".join(chunks), timed_out=timed_out)
    finally:
        try:
            container.remove(force=True)
        except NotFound:
            pass
        except APIError:
            pass


def remove_repository(client: docker.DockerClient, repository: str) -> list[str]:
    """Remove every tag of ``repository`` (e.g. one test run's images); returns what was removed."""
    removed = []
    for image in client.api.images(name=repository):
        for tag in image.get("RepoTags") or []:
            if tag.startswith(repository + ":"):
                try:
                    client.api.remove_image(tag, force=True)
                    removed.append(tag)
                except (ImageNotFound, NotFound):
                    pass
                except APIError:
                    pass
    return removed


def read_file_from_image(client: docker.DockerClient, image: str, path: str) -> str:
    """The text of one file inside an image, read through a short-lived container."""
    result = run_in_image(client, image, ["cat", path], entrypoint="", user="0", timeout=120)
    if not result.ok:
        raise DeployError(f"cannot read {path} from image {image}: {result.output.strip()[-400:]}")
    return result.output


def amd_device_options(render_nodes: Optional[Iterable[str]] = None) -> dict:
    """``containers.create`` options that give a container the host's AMD GPUs (docs/reference.md section 6).

    ``render_nodes`` pins specific GPUs (e.g. ``["/dev/dri/renderD128"]``); by default all of the
    host's render nodes.  Groups are added by numeric id, because the names inside the image need
    not match the host's.  Empty ``devices`` means this host has no AMD GPU.
    """
    nodes = list(render_nodes) if render_nodes is not None else sorted(glob.glob("/dev/dri/renderD*"))
    devices = []
    if os.path.exists("/dev/kfd"):
        devices.append("/dev/kfd:/dev/kfd:rwm")
    devices += [f"{n}:{n}:rwm" for n in nodes if os.path.exists(n)]
    gids = []
    for name in ("video", "render"):
        try:
            gids.append(str(grp.getgrnam(name).gr_gid))
        except KeyError:
            pass
    return {
        "devices": devices,
        "group_add": gids,
        "security_opt": ["seccomp=unconfined"],
        "shm_size": "16g",
    }
