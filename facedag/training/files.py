"""Where a trained model lives, for the stages that read it without training (convert,
evaluate_model, render): `models/<name>.safetensors` with `<name>.json` beside it, where name
is `model` (the last step) or `best` (the best held-out score)."""

from __future__ import annotations

# params' `model: best | last` -> the weights' file stem in models/
WEIGHTS = {"best": "best", "last": "model"}
