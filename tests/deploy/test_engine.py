"""engine.image_config: the one reader of ``docker inspect`` labels and env, against the real engine."""

from __future__ import annotations

import io
import uuid

import pytest
from docker.errors import ImageNotFound

from rocm_fp8_deploy import engine

pytestmark = pytest.mark.docker


def test_image_config_reads_labels_env_and_id(docker_client):
    tag = f"rocm-fp8-test-engine-{uuid.uuid4().hex[:8]}:config"
    dockerfile = (b"FROM scratch\nLABEL rocm-fp8.example=\"a b\" other=1\n"
                  b"ENV PYTHONPATH=/x:/y EMPTY= WITH_EQUALS=k=v\n")
    image, _ = docker_client.images.build(fileobj=io.BytesIO(dockerfile), tag=tag, rm=True)
    try:
        config = engine.image_config(docker_client, tag)
        assert config.id == image.id
        assert config.labels == {"rocm-fp8.example": "a b", "other": "1"}
        assert config.env["PYTHONPATH"] == "/x:/y"
        assert config.env["EMPTY"] == "" and config.env["WITH_EQUALS"] == "k=v"
    finally:
        docker_client.images.remove(tag, force=True)


def test_image_config_of_a_missing_image_raises_image_not_found(docker_client):
    with pytest.raises(ImageNotFound):
        engine.image_config(docker_client, f"rocm-fp8-missing-{uuid.uuid4().hex[:8]}.invalid/none:tag")
