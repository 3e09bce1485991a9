# Origin: keras-team/keras-io examples/nlp/neural_machine_translation_with_transformer.py
# https://github.com/keras-team/keras-io/blob/master/examples/nlp/neural_machine_translation_with_transformer.py
# The `TransformerEncoder`, `PositionalEmbedding` (its `compute_mask`: token 0 is padding) and
# `TransformerDecoder` (causal mask, padding masks, cross-attention; called on `[inputs, encoder_outputs]` with
# `query_mask` / `key_mask` as in the Keras 3 port) layers, the end-to-end model as the example
# assembles it (an encoder, a nested functional `decoder` model called on the encoder's output, dict inputs
# `encoder_inputs` / `decoder_inputs`) and its compile (rmsprop, sparse categorical cross-entropy); the layers'
# `tf.*` calls written with `keras.ops` as in the Keras 3 port but for the causal mask (`tf.*` as in the
# example: `ops.tile` cannot take the symbolic multiples while Keras infers the output shape); vocab_size 15000 -> 64, sequence_length 20 -> 10,
# embed_dim 256 -> 16, latent_dim 2048 -> 32, num_heads 8 -> 2. The English-Spanish pairs replaced by synthetic
# token sequences whose "translation" is a fixed token mapping between "[start]" and "[end]", 0-padded, batched
# as the example's `format_dataset` batches them.
import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

ORIGIN = "examples/nlp/neural_machine_translation_with_transformer.py"
SUPPORTS_XLA = True

vocab_size = 64
sequence_length = 10
batch_size = 16
embed_dim = 16
latent_dim = 32
num_heads = 2


class TransformerEncoder(layers.Layer):
    def __init__(self, embed_dim, dense_dim, num_heads, **kwargs):
        super().__init__(**kwargs)
        self.embed_dim = embed_dim
        self.dense_dim = dense_dim
        self.num_heads = num_heads
        self.attention = layers.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim)
        self.dense_proj = keras.Sequential(
            [
                layers.Dense(dense_dim, activation="relu"),
                layers.Dense(embed_dim),
            ]
        )
        self.layernorm_1 = layers.LayerNormalization()
        self.layernorm_2 = layers.LayerNormalization()
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is not None:
            padding_mask = ops.cast(mask[:, None, :], dtype="int32")
        else:
            padding_mask = None
        attention_output = self.attention(query=inputs, value=inputs, key=inputs, attention_mask=padding_mask)
        proj_input = self.layernorm_1(inputs + attention_output)
        proj_output = self.dense_proj(proj_input)
        return self.layernorm_2(proj_input + proj_output)

    def get_config(self):
        config = super().get_config()
        config.update({"embed_dim": self.embed_dim, "dense_dim": self.dense_dim, "num_heads": self.num_heads})
        return config


class PositionalEmbedding(layers.Layer):
    def __init__(self, sequence_length, vocab_size, embed_dim, **kwargs):
        super().__init__(**kwargs)
        self.token_embeddings = layers.Embedding(input_dim=vocab_size, output_dim=embed_dim)
        self.position_embeddings = layers.Embedding(input_dim=sequence_length, output_dim=embed_dim)
        self.sequence_length = sequence_length
        self.vocab_size = vocab_size
        self.embed_dim = embed_dim

    def call(self, inputs):
        length = ops.shape(inputs)[-1]
        positions = ops.arange(0, length, 1)
        embedded_tokens = self.token_embeddings(inputs)
        embedded_positions = self.position_embeddings(positions)
        return embedded_tokens + embedded_positions

    def compute_mask(self, inputs, mask=None):
        return ops.not_equal(inputs, 0)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"sequence_length": self.sequence_length, "vocab_size": self.vocab_size, "embed_dim": self.embed_dim}
        )
        return config


class TransformerDecoder(layers.Layer):
    def __init__(self, embed_dim, latent_dim, num_heads, **kwargs):
        super().__init__(**kwargs)
        self.embed_dim = embed_dim
        self.latent_dim = latent_dim
        self.num_heads = num_heads
        self.attention_1 = layers.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim)
        self.attention_2 = layers.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim)
        self.dense_proj = keras.Sequential(
            [
                layers.Dense(latent_dim, activation="relu"),
                layers.Dense(embed_dim),
            ]
        )
        self.layernorm_1 = layers.LayerNormalization()
        self.layernorm_2 = layers.LayerNormalization()
        self.layernorm_3 = layers.LayerNormalization()
        self.supports_masking = True

    def call(self, inputs, mask=None):
        inputs, encoder_outputs = inputs
        causal_mask = self.get_causal_attention_mask(inputs)

        if mask is None:
            inputs_padding_mask, encoder_outputs_padding_mask = None, None
        else:
            inputs_padding_mask, encoder_outputs_padding_mask = mask

        attention_output_1 = self.attention_1(
            query=inputs,
            value=inputs,
            key=inputs,
            attention_mask=causal_mask,
            query_mask=inputs_padding_mask,
        )
        out_1 = self.layernorm_1(inputs + attention_output_1)

        attention_output_2 = self.attention_2(
            query=out_1,
            value=encoder_outputs,
            key=encoder_outputs,
            query_mask=inputs_padding_mask,
            key_mask=encoder_outputs_padding_mask,
        )
        out_2 = self.layernorm_2(out_1 + attention_output_2)

        proj_output = self.dense_proj(out_2)
        return self.layernorm_3(out_2 + proj_output)

    def get_causal_attention_mask(self, inputs):
        input_shape = tf.shape(inputs)
        batch_size, sequence_length = input_shape[0], input_shape[1]
        i = tf.range(sequence_length)[:, tf.newaxis]
        j = tf.range(sequence_length)
        mask = tf.cast(i >= j, dtype="int32")
        mask = tf.reshape(mask, (1, input_shape[1], input_shape[1]))
        mult = tf.concat(
            [tf.expand_dims(batch_size, -1), tf.constant([1, 1], dtype=tf.int32)],
            axis=0,
        )
        return tf.tile(mask, mult)

    def get_config(self):
        config = super().get_config()
        config.update({"embed_dim": self.embed_dim, "latent_dim": self.latent_dim, "num_heads": self.num_heads})
        return config


def pairs(n, seed=0):
    """Vectorised pairs as `format_dataset` returns them: English ids (4 to 8 tokens in [4, vocab_size), 0-padded
    to `sequence_length`) and Spanish ids "[start]" (2), each English token mapped by `t -> (5 * t) % 60 + 4`,
    "[end]" (3), 0-padded to `sequence_length + 1`."""
    rng = np.random.default_rng(seed)
    eng = np.zeros((n, sequence_length), "int64")
    spa = np.zeros((n, sequence_length + 1), "int64")
    for i in range(n):
        words = rng.integers(4, vocab_size, rng.integers(4, sequence_length - 1))
        eng[i, : len(words)] = words
        target = [2, *((5 * words) % 60 + 4), 3]
        spa[i, : len(target)] = target
    return {"encoder_inputs": eng, "decoder_inputs": spa[:, :-1]}, spa[:, 1:]


def build(jit_compile=False):
    inputs, targets = pairs(batch_size * 30)
    train_ds = tf.data.Dataset.from_tensor_slices((inputs, targets)).batch(batch_size)

    encoder_inputs = keras.Input(shape=(None,), dtype="int64", name="encoder_inputs")
    x = PositionalEmbedding(sequence_length, vocab_size, embed_dim)(encoder_inputs)
    encoder_outputs = TransformerEncoder(embed_dim, latent_dim, num_heads)(x)
    encoder = keras.Model(encoder_inputs, encoder_outputs)  # noqa: F841 - as in the example (for inference)

    decoder_inputs = keras.Input(shape=(None,), dtype="int64", name="decoder_inputs")
    encoded_seq_inputs = keras.Input(shape=(None, embed_dim), name="decoder_state_inputs")
    x = PositionalEmbedding(sequence_length, vocab_size, embed_dim)(decoder_inputs)
    x = TransformerDecoder(embed_dim, latent_dim, num_heads)([x, encoded_seq_inputs])
    x = layers.Dropout(0.5)(x)
    decoder_outputs = layers.Dense(vocab_size, activation="softmax")(x)
    decoder = keras.Model([decoder_inputs, encoded_seq_inputs], decoder_outputs)

    decoder_outputs = decoder([decoder_inputs, encoder_outputs])
    transformer = keras.Model([encoder_inputs, decoder_inputs], decoder_outputs, name="transformer")

    transformer.compile(
        "rmsprop", loss="sparse_categorical_crossentropy", metrics=["accuracy"], jit_compile=jit_compile
    )
    from corpus.harness import Built

    return Built(transformer, train_ds)


def reference(built):
    return pairs(32, seed=1)
