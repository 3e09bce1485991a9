# Origin: keras-team/keras-io examples/structured_data/collaborative_filtering_movielens.py
# https://github.com/keras-team/keras-io/blob/master/examples/structured_data/collaborative_filtering_movielens.py
# The subclassed `RecommenderNet` (user and movie `Embedding`s with l2 regularisers, bias `Embedding`s,
# `ops.tensordot(user_vector, movie_vector, 2)`, a sigmoid) and its compile as in the Keras 3 version of the
# example (610 users / 9724 movies -> 60 / 120, EMBEDDING_SIZE 50 -> 8, batch 128 -> 64). The MovieLens ratings
# replaced by synthetic (user, movie) pairs rated by hidden user and movie factors, normalised to [0, 1] as the
# example normalises them. The model is subclassed: no functional graph, it is built by its first call.
import keras
import numpy as np
from keras import layers, ops

ORIGIN = "examples/structured_data/collaborative_filtering_movielens.py"
SUPPORTS_XLA = True

num_users = 60
num_movies = 120
EMBEDDING_SIZE = 8
min_rating, max_rating = 0.5, 5.0


class RecommenderNet(keras.Model):
    def __init__(self, num_users, num_movies, embedding_size, **kwargs):
        super().__init__(**kwargs)
        self.num_users = num_users
        self.num_movies = num_movies
        self.embedding_size = embedding_size
        self.user_embedding = layers.Embedding(
            num_users,
            embedding_size,
            embeddings_initializer="he_normal",
            embeddings_regularizer=keras.regularizers.l2(1e-6),
        )
        self.user_bias = layers.Embedding(num_users, 1)
        self.movie_embedding = layers.Embedding(
            num_movies,
            embedding_size,
            embeddings_initializer="he_normal",
            embeddings_regularizer=keras.regularizers.l2(1e-6),
        )
        self.movie_bias = layers.Embedding(num_movies, 1)

    def call(self, inputs):
        user_vector = self.user_embedding(inputs[:, 0])
        user_bias = self.user_bias(inputs[:, 0])
        movie_vector = self.movie_embedding(inputs[:, 1])
        movie_bias = self.movie_bias(inputs[:, 1])
        dot_user_movie = ops.tensordot(user_vector, movie_vector, 2)
        # Add all the components (including bias)
        x = dot_user_movie + user_bias + movie_bias
        # The sigmoid activation forces the rating to between 0 and 1
        return ops.nn.sigmoid(x)


def ratings(n, seed=0):
    """`x` (user, movie) index pairs and `y` the ratings (0.5 to 5 by halves) normalised to [0, 1]: a rating is
    the dot product of hidden 3-d user and movie factors plus a movie bias, rounded."""
    rng = np.random.default_rng(seed)
    users = rng.normal(size=(num_users, 3))
    movies = rng.normal(size=(num_movies, 3))
    movie_bias = rng.normal(0.0, 0.7, num_movies)
    x = np.stack([rng.integers(0, num_users, n), rng.integers(0, num_movies, n)], axis=1)
    score = 2.75 + 0.8 * (np.sum(users[x[:, 0]] * movies[x[:, 1]], axis=1) + movie_bias[x[:, 1]])
    rating = np.clip(np.round(score * 2) / 2, min_rating, max_rating)
    # Normalize the targets between 0 and 1. Makes it easy to train.
    y = (rating - min_rating) / (max_rating - min_rating)
    return x, y.astype("float32")


def build(jit_compile=False):
    x_train, y_train = ratings(64 * 30)
    model = RecommenderNet(num_users, num_movies, EMBEDDING_SIZE)
    model.compile(
        loss=keras.losses.BinaryCrossentropy(),
        optimizer=keras.optimizers.Adam(learning_rate=0.001),
        jit_compile=jit_compile,
    )
    from corpus.harness import Built

    return Built(model, x_train, y_train, {"batch_size": 64})


def reference(built):
    return ratings(32, seed=1)
