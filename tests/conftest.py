"""Test setup: every test sees 8 simulated CPU devices.

The flags must be set before jax initialises its backends, so this module sets them at import
time, before any test module imports jax.
"""
import atexit
import os
import shutil
import tempfile

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["JAX_NUM_CPU_DEVICES"] = "8"
# Tests are dominated by XLA compilation of small programs, not by running them: backend
# optimisation level 0 compiles 2-2.5x faster (the whole suite: 627 s -> 497 s on the 2-core
# machine) and changes no result a test checks. Subprocesses the tests start inherit it.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Many tests compile the same programs (the tiny configs train in several tests, and train.py in
# subprocesses compiles again): jax's persistent compilation cache, in one fresh folder per test
# session shared by the xdist workers and the subprocesses (they inherit the environment), compiles
# each once (the suite: 711 s -> 627 s on the 2-core machine; tests/test_checkpoint.py and
# tests/test_failsafe.py on one core 191 s -> 128 s). Removed when pytest itself exits.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _CACHE = tempfile.mkdtemp(prefix="mmjax-tests-jax-cache-")
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"

import jax  # noqa: E402
import pytest  # noqa: E402


def pytest_configure(config):
    del config
    n = len(jax.devices())
    if n != 8:
        raise RuntimeError(f"tests need 8 simulated CPU devices, jax sees {n}: jax was initialised "
                           "before tests/conftest.py could set JAX_NUM_CPU_DEVICES")


@pytest.fixture
def x64():
    """Runs a test with float64 enabled (jax.enable_x64), restoring the default afterwards."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="session")
def mesh8():
    """A 1-D mesh of the 8 CPU devices with one batch axis 'data' (AxisType.Auto)."""
    return jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory):
    """One TFDS data_dir for the session: each tiny dataset variant is prepared there once."""
    return tmp_path_factory.mktemp("tfds")
