# Origin: keras-team/keras-io examples/nlp/lstm_seq2seq.py
# https://github.com/keras-team/keras-io/blob/master/examples/nlp/lstm_seq2seq.py
# The training model as in the example: an encoder `LSTM(return_state=True)` whose output sequence is discarded
# and whose states start a decoder `LSTM(return_sequences=True, return_state=True)` (its states discarded too),
# a softmax `Dense` over the decoder's tokens, two inputs, compiled with rmsprop (latent_dim 256 -> 32). The
# English-French pairs replaced by synthetic one-hot "sentences" whose translation is a fixed character mapping
# of the source, with the example's teacher forcing ("\t" start, "\n" end, " " padding).
import keras
import numpy as np

ORIGIN = "examples/nlp/lstm_seq2seq.py"
SUPPORTS_XLA = True

latent_dim = 32  # Latent dimensionality of the encoding space.
num_encoder_tokens = 12
num_decoder_tokens = 14  # the source's 11 characters mapped, and "\t", "\n", " "
max_encoder_seq_length = 8
max_decoder_seq_length = 10


def data(n, seed=0):
    """`encoder_input_data`, `decoder_input_data`, `decoder_target_data` as the example builds them: the source
    is 3 to 7 characters (index 0 is " "), the target its characters mapped by `c -> (3 * c) % 11 + 3` between
    the start "\t" (index 1) and the end "\n" (index 2); " " (index 0) pads both."""
    rng = np.random.default_rng(seed)
    space, start, end = 0, 1, 2
    encoder_input_data = np.zeros((n, max_encoder_seq_length, num_encoder_tokens), dtype="float32")
    decoder_input_data = np.zeros((n, max_decoder_seq_length, num_decoder_tokens), dtype="float32")
    decoder_target_data = np.zeros((n, max_decoder_seq_length, num_decoder_tokens), dtype="float32")
    for i in range(n):
        source = rng.integers(1, num_encoder_tokens, rng.integers(3, max_encoder_seq_length))
        target = [start, *((3 * (source - 1)) % 11 + 3), end]
        for t, char in enumerate(source):
            encoder_input_data[i, t, char] = 1.0
        encoder_input_data[i, t + 1 :, space] = 1.0
        for t, char in enumerate(target):
            # decoder_target_data is ahead of decoder_input_data by one timestep
            decoder_input_data[i, t, char] = 1.0
            if t > 0:
                decoder_target_data[i, t - 1, char] = 1.0
        decoder_input_data[i, t + 1 :, space] = 1.0
        decoder_target_data[i, t:, space] = 1.0
    return encoder_input_data, decoder_input_data, decoder_target_data


def build(jit_compile=False):
    encoder_input_data, decoder_input_data, decoder_target_data = data(16 * 30)

    # Define an input sequence and process it.
    encoder_inputs = keras.Input(shape=(None, num_encoder_tokens))
    encoder = keras.layers.LSTM(latent_dim, return_state=True)
    encoder_outputs, state_h, state_c = encoder(encoder_inputs)

    # We discard `encoder_outputs` and only keep the states.
    encoder_states = [state_h, state_c]

    # Set up the decoder, using `encoder_states` as initial state.
    decoder_inputs = keras.Input(shape=(None, num_decoder_tokens))

    # We set up our decoder to return full output sequences,
    # and to return internal states as well. We don't use the
    # return states in the training model, but we will use them in inference.
    decoder_lstm = keras.layers.LSTM(latent_dim, return_sequences=True, return_state=True)
    decoder_outputs, _, _ = decoder_lstm(decoder_inputs, initial_state=encoder_states)
    decoder_dense = keras.layers.Dense(num_decoder_tokens, activation="softmax")
    decoder_outputs = decoder_dense(decoder_outputs)

    # Define the model that will turn
    # `encoder_input_data` & `decoder_input_data` into `decoder_target_data`
    model = keras.Model([encoder_inputs, decoder_inputs], decoder_outputs)
    model.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["accuracy"], jit_compile=jit_compile)
    from corpus.harness import Built

    return Built(model, [encoder_input_data, decoder_input_data], decoder_target_data, {"batch_size": 16})


def reference(built):
    encoder_input_data, decoder_input_data, decoder_target_data = data(32, seed=1)
    return [encoder_input_data, decoder_input_data], decoder_target_data
