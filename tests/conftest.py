import os

# Both must happen before TensorFlow starts, so they run when pytest imports
# this file, before any test module is collected: quiet TensorFlow's C++ logs
# (its start-up lines ignore the level, and under pytest-xdist they would end
# the run's output), and split the CPU into two logical devices so that
# MirroredStrategy can be compared with the default strategy on one machine
# (`two_cpus`).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from kprefix.cli.tensorflow_logs import import_tensorflow_quietly  # noqa: E402

tf = import_tensorflow_quietly(verbosity=None)

_cpus = tf.config.list_physical_devices("CPU")
if len(tf.config.get_logical_device_configuration(_cpus[0]) or []) < 2:
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
    )


@pytest.fixture(scope="session")
def two_cpus():
    """The names of the two logical CPU devices, for a MirroredStrategy of two replicas."""
    names = [device.name for device in tf.config.list_logical_devices("CPU")[:2]]
    assert len(names) == 2, "TensorFlow started before tests/conftest.py split the CPU"
    return names


def pytest_addoption(parser):
    # The README's command runs everything (as CI does); developers may leave
    # out the slow end-to-end tests while iterating.
    parser.addoption("--skip_large", action="store_true", default=False,
                     help="skip tests marked large (slow end-to-end runs)")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "large: slow end-to-end test (subprocess launches, wheel builds); "
        "run by default, left out with --skip_large or -m 'not large'")


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--skip_large"):
        return
    skip_large = pytest.mark.skip(reason="large test left out by --skip_large")
    for item in items:
        if "large" in item.keywords:
            item.add_marker(skip_large)
