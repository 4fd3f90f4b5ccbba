"""Prefix generators: the reparameterization sublayer of prefix-tuning.

A generator owns the learned parameters of one attention layer's prefix and
returns `(prefix_key, prefix_value)`, each `(P, heads, dim)`, from
`generator.prefixes(training)`. It takes no input: its output is the same for
every example and is broadcast over the batch inside attention.

The variants encode the paper's key/value sharing structures:

- `NoSharePrefix`: key and value prefixes are independent parameters.
- `DeepSharePrefix`: one small matrix P' through an MLP whose output splits
  into key and value prefixes (Li & Liang's reparameterization).
- `SimpleSharePrefix`: one prompt p per layer; K = W_k LN(p), V = W_v LN(p)
  with the layer's frozen LayerNorm and key/value projections.
- `LinearSharePrefix`: the paper's simple linear setting, K = V = p.
- `OneLayerSharePrefix`: the one-layer network setting,
  K = s1(W1 p), V = s2(W2 p).

Example:

>>> from kprefix.prefix.generators import DeepSharePrefix
>>> gen = DeepSharePrefix(length=4, num_heads=2, key_dim=8, value_dim=8,
...                       embedding_dim=16, mlp_hidden=6)
>>> k, v = gen.prefixes(training=False)
>>> tuple(k.shape), tuple(v.shape)
((4, 2, 8), (4, 2, 8))
"""

import math

import keras
from keras import ops


def make_initializer(name, fan_in, fan_out, scale=0.02, seed=None):
    """Initializer of prefix parameters by name (see `PrefixConfig`)."""
    if name == "xavier_uniform":
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        return keras.initializers.RandomUniform(-limit, limit, seed=seed)
    if name == "normal":
        return keras.initializers.RandomNormal(stddev=scale, seed=seed)
    if name == "zeros":
        return keras.initializers.Zeros()
    raise ValueError(f"Unknown prefix initializer {name!r}.")


def linear_initializers(mlp_init, fan_in, seed=None):
    """`(kernel, bias)` initializers of a Deep-share linear map.

    `glorot`: Keras's Dense defaults (Glorot-uniform kernel, zero bias).
    `torch_linear`: PyTorch's `nn.Linear` default, kernel and bias uniform in
    +-1/sqrt(fan_in) (kaiming-uniform with a=sqrt(5) gives that bound).

    >>> kernel, bias = linear_initializers("torch_linear", fan_in=4, seed=0)
    >>> float(abs(kernel((4, 3))).numpy().max()) <= 0.5
    True
    """
    if mlp_init == "glorot":
        return "glorot_uniform", "zeros"  # Dense's defaults, drawn as before
    if mlp_init == "torch_linear":
        bound = 1.0 / math.sqrt(fan_in)
        return (keras.initializers.RandomUniform(-bound, bound, seed=seed),
                keras.initializers.RandomUniform(-bound, bound,
                                                 seed=None if seed is None else seed + 1))
    raise ValueError(f"Unknown prefix MLP initializer {mlp_init!r}; use glorot or torch_linear.")


class PrefixGenerator(keras.layers.Layer):
    """Base class: shapes, prefix dropout and the `prefixes` entry point.

    Subclasses implement `generate()`, returning key and value prefixes of
    shapes `(length, num_heads, key_dim)` and `(length, num_heads, value_dim)`.
    Variables are float32 whatever the compute policy; attention casts the
    prefixes to its own dtype.
    """

    def __init__(self, length, num_heads, key_dim, value_dim, dropout=0.0, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.length = int(length)
        self.num_heads = int(num_heads)
        self.key_dim = int(key_dim)
        self.value_dim = int(value_dim)
        self.dropout = float(dropout)
        self._dropout_layer = keras.layers.Dropout(self.dropout, dtype="float32")

    @property
    def key_shape(self):
        return (self.length, self.num_heads, self.key_dim)

    @property
    def value_shape(self):
        return (self.length, self.num_heads, self.value_dim)

    def generate(self):
        raise NotImplementedError

    def prefixes(self, training=None):
        key, value = self.generate()
        if self.dropout > 0.0:
            key = self._dropout_layer(key, training=training)
            value = self._dropout_layer(value, training=training)
        return key, value

    def get_config(self):
        config = super().get_config()
        config.update(
            length=self.length,
            num_heads=self.num_heads,
            key_dim=self.key_dim,
            value_dim=self.value_dim,
            dropout=self.dropout,
        )
        return config


class NoSharePrefix(PrefixGenerator):
    """Independent key and value prefix parameters (No-share).

    With `trainable=False` this is also the folded, constant prefix that
    `PrefixTuning.fold_into` fills with any generator's output.
    """

    def __init__(
        self,
        length,
        num_heads,
        key_dim,
        value_dim,
        initializer="xavier_uniform",
        init_scale=0.02,
        seed=None,
        initial_key=None,
        initial_value=None,
        **kwargs,
    ):
        super().__init__(length, num_heads, key_dim, value_dim, **kwargs)
        self.initializer = initializer
        self.init_scale = init_scale
        self.prefix_key = self._prefix_weight("prefix_key", self.key_shape, seed, initial_key)
        self.prefix_value = self._prefix_weight(
            "prefix_value", self.value_shape, None if seed is None else seed + 1, initial_value
        )

    def _prefix_weight(self, name, shape, seed, initial=None):
        if self.initializer == "word":
            # The starting values (the backbone's own keys/values) come from outside.
            if initial is None or tuple(initial.shape) != tuple(shape):
                raise ValueError(f"the 'word' initializer needs an initial {name} of shape "
                                 f"{shape}; got {None if initial is None else initial.shape}.")
            initializer = keras.initializers.Constant(initial)
        else:
            width = shape[1] * shape[2]
            initializer = make_initializer(self.initializer, width, width, self.init_scale, seed)
        return self.add_weight(shape=shape, initializer=initializer, name=name)

    def generate(self):
        return self.prefix_key, self.prefix_value

    def get_config(self):
        config = super().get_config()
        config.update(initializer=self.initializer, init_scale=self.init_scale)
        return config


class DeepShareTrunk(keras.layers.Layer):
    """P' and the first MLP layer of Deep-share: `act(P' W1 + b1)`.

    One trunk per layer (vision) or one trunk for all layers (language, Li &
    Liang); each layer then has its own output projection, which together
    equal the single wide output layer of the reference implementation.
    """

    def __init__(self, length, embedding_dim, mlp_hidden, activation="tanh",
                 initializer="xavier_uniform", init_scale=0.02, seed=None, mlp_init="glorot",
                 **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.length = int(length)
        self.embedding_dim = int(embedding_dim)
        self.mlp_hidden = int(mlp_hidden)
        self.activation = activation
        self.embedding = self.add_weight(
            shape=(self.length, self.embedding_dim),
            initializer=make_initializer(
                initializer, self.embedding_dim, self.embedding_dim, init_scale, seed
            ),
            name="embedding",
        )
        kernel_init, bias_init = linear_initializers(
            mlp_init, self.embedding_dim, None if seed is None else seed + 2)
        self.hidden = keras.layers.Dense(
            self.mlp_hidden, activation=activation, dtype="float32", name="hidden",
            kernel_initializer=kernel_init, bias_initializer=bias_init,
        )
        with keras.name_scope(self.name):
            self.hidden.build((self.length, self.embedding_dim))

    def features(self):
        """`act(P' W1 + b1)`, shape `(length, mlp_hidden)`.

        A shared trunk recomputes this small product once per layer; that
        costs far less than threading one result through the backbone.
        """
        return self.hidden(self.embedding)


class DeepSharePrefix(PrefixGenerator):
    """Deep-share: `Linear(act(Linear(P')))`, split into key and value.

    Pass `trunk` to share P' and the first layer with other layers;
    otherwise this generator makes its own.
    """

    def __init__(self, length, num_heads, key_dim, value_dim, embedding_dim=None,
                 mlp_hidden=48, mlp_activation="tanh", trunk=None,
                 initializer="xavier_uniform", init_scale=0.02, seed=None, mlp_init="glorot",
                 **kwargs):
        super().__init__(length, num_heads, key_dim, value_dim, **kwargs)
        if trunk is None:
            trunk = DeepShareTrunk(
                length, embedding_dim or num_heads * key_dim, mlp_hidden,
                mlp_activation, initializer, init_scale, seed, mlp_init=mlp_init, name="trunk",
            )
        if trunk.length != self.length:
            raise ValueError(f"Shared trunk has length {trunk.length}, expected {self.length}.")
        self.trunk = trunk
        self.mlp_activation = mlp_activation
        self.mlp_init = mlp_init
        kernel_init, bias_init = linear_initializers(
            mlp_init, trunk.mlp_hidden, None if seed is None else seed + 4)
        self.output_projection = keras.layers.Dense(
            num_heads * (key_dim + value_dim), dtype="float32", name="output_projection",
            kernel_initializer=kernel_init, bias_initializer=bias_init,
        )
        self.output_projection.build((self.length, trunk.mlp_hidden))

    def get_config(self):
        # A shared trunk is not part of the config: `from_config` makes its own.
        config = super().get_config()
        config.update(embedding_dim=self.trunk.embedding_dim, mlp_hidden=self.trunk.mlp_hidden,
                      mlp_activation=self.mlp_activation, mlp_init=self.mlp_init)
        return config

    def generate(self):
        out = self.output_projection(self.trunk.features())
        split = self.num_heads * self.key_dim
        return (
            ops.reshape(out[:, :split], self.key_shape),
            ops.reshape(out[:, split:], self.value_shape),
        )


class SimpleSharePrefix(PrefixGenerator):
    """Simple-share: one prompt through the frozen LayerNorm and K/V maps.

    `K = W_k LN(p)`, `V = W_v LN(p)`; `norm=None` for post-LN backbones, whose
    attention input is already normalized. With `dropout_site="prompt"` the
    dropout acts on `p` before the LayerNorm, one mask for key and value (the
    reference); with `"output"` on K and V, one mask each.
    """

    def __init__(self, length, num_heads, key_dim, value_dim, key_dense, value_dense,
                 norm=None, hidden_dim=None, initializer="xavier_uniform",
                 init_scale=0.02, seed=None, dropout_site="output", **kwargs):
        super().__init__(length, num_heads, key_dim, value_dim, **kwargs)
        self.dropout_site = dropout_site
        hidden_dim = int(hidden_dim or num_heads * key_dim)
        self.prompt = self.add_weight(
            shape=(self.length, hidden_dim),
            initializer=make_initializer(initializer, hidden_dim, hidden_dim, init_scale, seed),
            name="prompt",
        )
        # Frozen backbone layers, used but not owned: left untracked.
        object.__setattr__(self, "_frozen", (norm, key_dense, value_dense))

    def get_config(self):
        return {**super().get_config(), "dropout_site": self.dropout_site}

    def prefixes(self, training=None):
        if self.dropout_site == "prompt":
            return self.generate(training)
        return super().prefixes(training)

    def generate(self, training=False):
        norm, key_dense, value_dense = self._frozen
        prompt = self.prompt[None]
        if training and self.dropout > 0.0:
            prompt = self._dropout_layer(prompt, training=training)
        if norm is not None:
            prompt = norm(prompt)
        key = ops.cast(key_dense(prompt)[0], "float32")
        value = ops.cast(value_dense(prompt)[0], "float32")
        return key, value


class LinearSharePrefix(PrefixGenerator):
    """The paper's simple linear setting: key prefix = value prefix = p."""

    def __init__(self, length, num_heads, key_dim, value_dim, initializer="xavier_uniform",
                 init_scale=0.02, seed=None, **kwargs):
        if key_dim != value_dim:
            raise ValueError(
                f"linear_share needs key_dim == value_dim; got {key_dim} and {value_dim}."
            )
        super().__init__(length, num_heads, key_dim, value_dim, **kwargs)
        width = num_heads * key_dim
        self.prompt = self.add_weight(
            shape=self.key_shape,
            initializer=make_initializer(initializer, width, width, init_scale, seed),
            name="prompt",
        )

    def generate(self):
        return self.prompt, self.prompt


class OneLayerSharePrefix(PrefixGenerator):
    """The one-layer network setting: `K = s1(W1 p)`, `V = s2(W2 p)`."""

    def __init__(self, length, num_heads, key_dim, value_dim, embedding_dim=None,
                 key_activation="tanh", value_activation="sigmoid",
                 initializer="xavier_uniform", init_scale=0.02, seed=None, **kwargs):
        super().__init__(length, num_heads, key_dim, value_dim, **kwargs)
        embedding_dim = int(embedding_dim or num_heads * key_dim)
        self.prompt = self.add_weight(
            shape=(self.length, embedding_dim),
            initializer=make_initializer(initializer, embedding_dim, embedding_dim, init_scale, seed),
            name="prompt",
        )
        self.key_map = keras.layers.Dense(
            num_heads * key_dim, activation=key_activation, use_bias=False,
            dtype="float32", name="key_map",
        )
        self.value_map = keras.layers.Dense(
            num_heads * value_dim, activation=value_activation, use_bias=False,
            dtype="float32", name="value_map",
        )
        self.key_map.build((self.length, embedding_dim))
        self.value_map.build((self.length, embedding_dim))
        self.embedding_dim = embedding_dim
        self.key_activation = key_activation
        self.value_activation = value_activation

    def get_config(self):
        config = super().get_config()
        config.update(embedding_dim=self.embedding_dim, key_activation=self.key_activation,
                      value_activation=self.value_activation)
        return config

    def generate(self):
        return (
            ops.reshape(self.key_map(self.prompt), self.key_shape),
            ops.reshape(self.value_map(self.prompt), self.value_shape),
        )
