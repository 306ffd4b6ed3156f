"""NAO-V2 (docs/methods/nao_v2.md), a method with its own loop, supernet and controller.

| module | what |
|---|---|
| `method.py` | the registered `nao_v2` method: rounds, scoring, controller, generation, re-rank |
| `pool.py` | the architecture pool (`arch_pool.json`) |
| `supernet.py`, `ws_ops.py` | the weight-sharing supernet, run one architecture at a time |
| `single_path.py` | its training step (one sampled architecture per batch) and scoring |
| `controller.py` | the encoder - predictor - decoder controller |
"""

from keras_darts.methods.nao_v2 import method  # noqa: F401  (registers "nao_v2")
