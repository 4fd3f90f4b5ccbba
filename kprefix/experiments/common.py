"""Pieces every experiment shares: strategy and backbone set-up, the method."""

from absl import app

from kprefix import methods
from kprefix.runs import multi_worker, optimizers, train
from kprefix.backbones import build_backbone
from kprefix.runs.cluster import cluster_role


def strategy_and_backbone(FLAGS):
    """The distribution strategy, and the backbone built in its scope."""
    strategy = train.make_strategy(FLAGS.strategy, FLAGS.tpu, FLAGS.peer_timeout_seconds)
    train.set_precision(FLAGS.precision)
    with strategy.scope():
        try:
            backbone = build_backbone(FLAGS.backbone, seed=FLAGS.seed,
                                      dropout=FLAGS.backbone_dropout)
        except ValueError as error:
            raise app.UsageError(str(error)) from None
    return strategy, backbone


def build_task(task_class, FLAGS, backbone, *args, **kwargs):
    """`task_class(backbone, ...)`; a setting the backbone cannot take (a prefix
    placement beyond its depth, say) is a usage error."""
    try:
        return task_class(backbone, *args, **kwargs)
    except ValueError as error:
        raise app.UsageError(f"--backbone={FLAGS.backbone!r}: {error}") from None


def check_batching(FLAGS, strategy, steps_per_epoch):
    """Usage errors for batches that cannot train: none per epoch, or uneven replicas."""
    if steps_per_epoch < 1:
        raise app.UsageError(
            f"--batch_size={FLAGS.batch_size} leaves no training batch per epoch (the training "
            "split is smaller); lower --batch_size.")
    replicas = strategy.num_replicas_in_sync
    if FLAGS.batch_size % replicas:
        raise app.UsageError(
            f"--batch_size={FLAGS.batch_size} does not split evenly over the {replicas} "
            f"replicas of --strategy={FLAGS.strategy}; use a multiple of {replicas}.")


def compile_for_training(model, FLAGS, steps_per_epoch, warmup, no_weight_decay=(), loss=None,
                         **metrics):
    """Compiles `model` with the flags' optimizer and schedule and `loss`
    (default: a sparse cross-entropy on logits); `metrics` go to `model.compile`.

    `warmup` counts steps, or epochs with `--schedule_unit=epoch`;
    `no_weight_decay` lists variables kept out of the weight decay.
    """
    import keras

    try:
        schedule = optimizers.make_schedule(
            FLAGS.optimizer, FLAGS.learning_rate, FLAGS.batch_size, steps_per_epoch,
            FLAGS.epochs, warmup, FLAGS.schedule_unit, FLAGS.lr_decay)
        optimizer = optimizers.make_optimizer(
            FLAGS.optimizer, FLAGS.learning_rate, FLAGS.weight_decay, FLAGS.batch_size,
            steps_per_epoch * FLAGS.epochs, warmup, FLAGS.weight_decay_mode, FLAGS.clip_norm,
            schedule=schedule, adam_epsilon=FLAGS.adam_epsilon)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    if no_weight_decay and FLAGS.weight_decay:
        optimizer.exclude_from_weight_decay(var_list=list(no_weight_decay))
    metrics.setdefault("metrics", [])  # keras-hub tasks add their own metrics on "auto"
    model.compile(
        optimizer=optimizer,
        loss=loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=train.jit_compile_for(model.distribute_strategy, FLAGS.jit_compile),
        **metrics,
    )


def apply_method(model, FLAGS):
    """Applies `--method` to `model` (in the strategy's scope); returns the
    parameter accounting that `results.json` records."""
    backbone_parameters = methods.count_parameters(model.backbone.weights)
    config = methods.config_from_flags(FLAGS)
    try:
        methods.apply_method(model, config, seed=FLAGS.seed)
    except ValueError as error:
        raise app.UsageError(f"--method={FLAGS.method}: {error}") from None
    return methods.parameter_accounting(model, backbone_parameters)


def fit(FLAGS, model, make_epoch, steps_per_epoch):
    """`train.fit` with the flags' settings, on every worker of a cluster.

    Workers meet after each checkpoint, and after training their collectives
    wait up to `--phase_timeout_seconds`: evaluation and export may take a
    slow worker longer than `--peer_timeout_seconds`.
    """
    strategy = model.distribute_strategy

    def after_checkpoint(step):
        multi_worker.wait_for_peers(strategy, f"checkpoint-{step}", FLAGS.phase_timeout_seconds)

    result = train.fit(model, make_epoch, steps_per_epoch, FLAGS.epochs, FLAGS.workdir,
                       checkpoint_every_steps=FLAGS.checkpoint_every_steps,
                       chief=cluster_role().is_chief, divergence_factor=FLAGS.divergence_factor,
                       adopt_unverified=FLAGS.resume_from_unverified,
                       after_checkpoint=after_checkpoint)
    multi_worker.lengthen_collective_timeout(strategy, FLAGS.phase_timeout_seconds)
    return result


def describe_parameters(FLAGS, accounting):
    """'Backbone X, method Y: N trainable parameters (p% of the backbone's M)'."""
    method = FLAGS.method if FLAGS.method != "prefix" else f"prefix ({FLAGS.prefix_variant})"
    return (f"Backbone {FLAGS.backbone}, method {method}: "
            f"{accounting['trainable_parameters']:,} trainable parameters "
            f"({accounting['trainable_percent']:.3g}% of the backbone's "
            f"{accounting['backbone_parameters']:,})")
