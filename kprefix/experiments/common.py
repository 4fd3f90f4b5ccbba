"""Pieces every experiment shares: strategy and backbone set-up."""

from absl import app

from kprefix import train
from kprefix.backbones import build_backbone


def strategy_and_backbone(FLAGS):
    """The distribution strategy, and the backbone built in its scope."""
    strategy = train.make_strategy(FLAGS.strategy, FLAGS.tpu, FLAGS.peer_timeout_seconds)
    train.set_precision(FLAGS.precision)
    with strategy.scope():
        try:
            backbone = build_backbone(FLAGS.backbone, seed=FLAGS.seed)
        except ValueError as error:
            raise app.UsageError(str(error)) from None
    return strategy, backbone


def compile_for_training(model, FLAGS, steps_per_epoch, warmup_steps, **metrics):
    """Compiles `model` with the flags' optimizer and schedule and a
    sparse cross-entropy on logits; `metrics` go to `model.compile`."""
    import keras

    model.compile(
        optimizer=train.make_optimizer(
            FLAGS.optimizer, FLAGS.learning_rate, FLAGS.weight_decay, FLAGS.batch_size,
            steps_per_epoch * FLAGS.epochs, warmup_steps,
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=train.jit_compile_for(model.distribute_strategy, FLAGS.jit_compile),
        **metrics,
    )


def count_parameters(weights):
    import keras

    return sum(int(keras.ops.size(w)) for w in weights)
