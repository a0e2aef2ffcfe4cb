"""Third-party backends from plugin specs (``module:attr``), entry points and probe workers."""

from __future__ import annotations

import pytest

import faulty_backends as fb
from rocm_fp8 import plugins


@pytest.fixture
def registered():
    fb.register_all()
    yield
    fb.unregister_all()


def test_backend_defined_in_main_cannot_be_recreated_and_says_how_to_fix():
    errors = plugins.recreate([{"name": "mine", "module": "__main__", "qualname": "Mine"}])
    assert "--plugin module:attr" in errors["mine"]


def test_plugin_specs(registered):
    with pytest.raises(ValueError, match="cannot be imported"):
        plugins.load_plugin("no_such_module_here:X")
    with pytest.raises(ValueError, match="has no attribute"):
        plugins.load_plugin("faulty_backends:Nope")
    assert plugins.load_plugin("faulty_backends:Hangs") == ["hangs"]
    described = {d["name"] for d in plugins.describe_third_party()}
    assert set(fb.NAMES) <= described and "reference" not in described
