import os

# Quiet TensorFlow's C++ logs, and give tests two logical CPU devices so that
# MirroredStrategy can be compared with the default strategy on one machine.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
if len(tf.config.get_logical_device_configuration(_cpus[0]) or []) < 2:
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
    )
