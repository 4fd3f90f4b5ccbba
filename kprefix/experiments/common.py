"""Pieces every experiment shares: strategy and backbone set-up, the method."""

from absl import app

from kprefix import methods
from kprefix.runs import multi_worker, optimizers, train
from kprefix.backbones import build_backbone
from kprefix.runs.cluster import cluster_role


def strategy_and_backbone(config):
    """The distribution strategy, and the backbone built in its scope."""
    strategy = train.make_strategy(config.strategy, config.tpu, config.peer_timeout_seconds)
    train.set_precision(config.precision)
    with strategy.scope():
        try:
            backbone = build_backbone(
                config.backbone, seed=config.seed, dropout=config.backbone_dropout,
                frozen=config.method.name in methods.FROZEN_BACKBONE_METHODS)
        except ValueError as error:
            raise app.UsageError(str(error)) from None
    return strategy, backbone


def build_task(task_class, config, backbone, *args, **kwargs):
    """`task_class(backbone, ...)`; a setting the backbone cannot take (a prefix
    placement beyond its depth, say) is a usage error."""
    try:
        return task_class(backbone, *args, **kwargs)
    except ValueError as error:
        raise app.UsageError(f"--backbone={config.backbone!r}: {error}") from None


def check_batching(config, strategy, steps_per_epoch):
    """Usage errors for batches that cannot train: none per epoch, or uneven replicas."""
    if steps_per_epoch < 1:
        raise app.UsageError(
            f"--batch_size={config.batch_size} leaves no training batch per epoch (the training "
            "split is smaller); lower --batch_size.")
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise app.UsageError(
            f"--batch_size={config.batch_size} does not split evenly over the {replicas} "
            f"replicas of --strategy={config.strategy}; use a multiple of {replicas}.")


def compile_for_training(model, config, steps_per_epoch, warmup, no_weight_decay=(), loss=None,
                         **metrics):
    """Compiles `model` with the flags' optimizer and schedule and `loss`
    (default: a sparse cross-entropy on logits); `metrics` go to `model.compile`.

    `warmup` counts steps, or epochs with `--schedule_unit=epoch`;
    `no_weight_decay` lists variables kept out of the weight decay.
    """
    import keras

    try:
        schedule = optimizers.make_schedule(
            config.optimizer, config.learning_rate, config.batch_size, steps_per_epoch,
            config.epochs, warmup, config.schedule_unit, config.lr_decay)
        optimizer = optimizers.make_optimizer(
            config.optimizer, config.learning_rate, config.weight_decay, config.batch_size,
            steps_per_epoch * config.epochs, warmup, config.weight_decay_mode, config.clip_norm,
            schedule=schedule, adam_epsilon=config.adam_epsilon)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    if no_weight_decay and config.weight_decay:
        optimizer.exclude_from_weight_decay(var_list=list(no_weight_decay))
    metrics.setdefault("metrics", [])  # keras-hub tasks add their own metrics on "auto"
    model.compile(
        optimizer=optimizer,
        loss=loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=train.jit_compile_for(model.distribute_strategy, config.jit_compile),
        **metrics,
    )
    # Slots made now, not inside the first traced step: a variable created
    # there makes tf.function trace the whole step a second time.
    with model.distribute_strategy.scope():
        model.optimizer.build(model.trainable_variables)


def apply_method(model, config):
    """Applies `--method` to `model` (in the strategy's scope); returns the
    parameter accounting that `results.json` records."""
    backbone_parameters = methods.count_parameters(model.backbone.weights)
    try:
        methods.apply_method(model, config.method_config, seed=config.seed)
    except ValueError as error:
        raise app.UsageError(f"--method={config.method.name}: {error}") from None
    return methods.parameter_accounting(model, backbone_parameters)


def fit(config, model, make_epoch, steps_per_epoch):
    """`train.fit` with the flags' settings, on every worker of a cluster.

    Workers meet after each checkpoint, and after training their collectives
    wait up to `--phase_timeout_seconds`: evaluation and export may take a
    slow worker longer than `--peer_timeout_seconds`.
    """
    strategy = model.distribute_strategy

    def after_checkpoint(step):
        multi_worker.wait_for_peers(strategy, f"checkpoint-{step}", config.phase_timeout_seconds)

    result = train.fit(model, make_epoch, steps_per_epoch, config.epochs, config.workdir,
                       checkpoint_every_steps=config.checkpoint_every_steps,
                       chief=cluster_role().is_chief, divergence_factor=config.divergence_factor,
                       adopt_unverified=config.resume_from_unverified,
                       after_checkpoint=after_checkpoint)
    multi_worker.lengthen_collective_timeout(strategy, config.phase_timeout_seconds)
    return result


def describe_parameters(config, accounting):
    """'Backbone X, method Y: N trainable parameters (p% of the backbone's M)'."""
    method = config.method.name if config.method.name != "prefix" else f"prefix ({config.prefix.variant})"
    return (f"Backbone {config.backbone}, method {method}: "
            f"{accounting['trainable_parameters']:,} trainable parameters "
            f"({accounting['trainable_percent']:.3g}% of the backbone's "
            f"{accounting['backbone_parameters']:,})")
