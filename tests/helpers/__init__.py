"""What the tests share, one module per kind of thing; a test module imports what it uses
(`from helpers import synthetic`, `from helpers.models import mlp`): `tests/` is on `sys.path` under pytest.

- `models`: the small Keras models the tests train (`mlp`, `planted`, `frozen_cnn`, `GAN`).
- `data`: seeded synthetic data (`regression`, `normal`, `cnn_data`, `activation_cases`, `offset_activation`).
- `oracle`: the NumPy oracle of every statistic.
- `zoo`: the model zoos (`keras.applications` and small healthy architectures) and their fit-and-diagnose runs.
- `synthetic`: synthetic tfprobe runs written with the real `WindowWriter` (the `synthetic_logdir` fixture).
- `tensorboard`: a real `tensorboard` server in a subprocess, `http_get`, the artifacts folder.
- `plugin`: the plugin in process (data provider, werkzeug client, `get_json`).
- `chromium`: Debian's chromium through playwright (`browser` and `page` fixtures, `MARKS`, `open_dashboard`).
- `incidents`: the live incidents replayed from logs.
- `examples`: the scripts of `examples/` imported as modules.

Fixtures are registered in `tests/conftest.py`; helpers never import a test module.
"""
