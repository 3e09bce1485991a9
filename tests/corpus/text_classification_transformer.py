# Origin: keras-team/keras-io examples/nlp/text_classification_with_transformer.py
# https://github.com/keras-team/keras-io/blob/master/examples/nlp/text_classification_with_transformer.py
# `TransformerBlock`, `TokenAndPositionEmbedding`, the classifier and its compile (vocabulary 20000 -> 500,
# 200 -> 32 tokens); IMDB replaced by synthetic token ids (given as floats, as the example's `Input` is).
import keras
from keras import layers, ops

from corpus import synthetic

ORIGIN = "examples/nlp/text_classification_with_transformer.py"
SUPPORTS_XLA = True
vocab_size = 500  # Only consider the top 20k words
maxlen = 32  # Only consider the first 200 words of each movie review
embed_dim = 32  # Embedding size for each token
num_heads = 2  # Number of attention heads
ff_dim = 32  # Hidden layer size in feed forward network inside transformer


class TransformerBlock(layers.Layer):
    def __init__(self, embed_dim, num_heads, ff_dim, rate=0.1):
        super().__init__()
        self.att = layers.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim)
        self.ffn = keras.Sequential([layers.Dense(ff_dim, activation="relu"), layers.Dense(embed_dim)])
        self.layernorm1 = layers.LayerNormalization(epsilon=1e-6)
        self.layernorm2 = layers.LayerNormalization(epsilon=1e-6)
        self.dropout1 = layers.Dropout(rate)
        self.dropout2 = layers.Dropout(rate)

    def call(self, inputs):
        attn_output = self.att(inputs, inputs)
        attn_output = self.dropout1(attn_output)
        out1 = self.layernorm1(inputs + attn_output)
        ffn_output = self.ffn(out1)
        ffn_output = self.dropout2(ffn_output)
        return self.layernorm2(out1 + ffn_output)


class TokenAndPositionEmbedding(layers.Layer):
    def __init__(self, maxlen, vocab_size, embed_dim):
        super().__init__()
        self.token_emb = layers.Embedding(input_dim=vocab_size, output_dim=embed_dim)
        self.pos_emb = layers.Embedding(input_dim=maxlen, output_dim=embed_dim)

    def call(self, x):
        maxlen = ops.shape(x)[-1]
        positions = ops.arange(start=0, stop=maxlen, step=1)
        positions = self.pos_emb(positions)
        x = self.token_emb(x)
        return x + positions


def build(jit_compile=False):
    x, y = synthetic.tokens(16 * 30, maxlen, vocab_size, 2)
    inputs = layers.Input(shape=(maxlen,))
    embedding_layer = TokenAndPositionEmbedding(maxlen, vocab_size, embed_dim)
    x_ = embedding_layer(inputs)
    transformer_block = TransformerBlock(embed_dim, num_heads, ff_dim)
    x_ = transformer_block(x_)
    x_ = layers.GlobalAveragePooling1D()(x_)
    x_ = layers.Dropout(0.1)(x_)
    x_ = layers.Dense(20, activation="relu")(x_)
    x_ = layers.Dropout(0.1)(x_)
    outputs = layers.Dense(2, activation="softmax")(x_)

    model = keras.Model(inputs=inputs, outputs=outputs)
    model.compile(
        optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"], jit_compile=jit_compile
    )
    from corpus.harness import Built

    return Built(model, x.astype("float32"), y, {"batch_size": 16})
