"""The train stage: `python -m stages.train` from the project root.

Reads params `base`, `device`, `train` and `identities`; data/dedupe/<ID>/dataset.parquet (training faces)
and holdout.parquet (held-out faces, for scoring only) of every identity. Refuses to start
(exit 1, one line naming the identity) unless every identity has a consent record. Writes
models/model.safetensors and model.json (the last step), models/best.safetensors and best.json
(the best held-out score), and the persisted models/checkpoints/, models/live/ (dvclive) and
models/previews/ (facedag.training.loop).

Exit status: 0 when it stopped at train.max_steps, train.max_minutes or early (train.patience);
1 on a clear failure; 128 + the signal number (143 for SIGTERM, 130 for SIGINT) when a signal
stopped it: it still finishes the step in progress, checkpoints and writes the model, but
reports the run as interrupted, so that DVC does not record an unfinished training as done and
the next `dvc repro` resumes it.

Several GPUs: with the environment variable FACEDAG_GPUS=N (N > 1; an environment variable, not
a param, so that the stage's hash does not change with the machine) the stage runs itself
through `torchrun --standalone --nproc_per_node N` and waits, passing SIGTERM/SIGINT on, and
exits as one process would; started by torchrun by hand (several machines, one rendezvous) it
joins as one rank of the run (facedag.training.distributed).
"""

from __future__ import annotations

import sys

from facedag.params import Params
from facedag.provenance.consent import require_consent
from facedag.stagekit import stage_main
from facedag.training.distributed import gpus_wanted, launch, under_torchrun
from facedag.training.loop import train


def run(params: Params) -> None:
    require_consent(params, list(params.identities), target=False)
    nproc = gpus_wanted()
    if nproc > 1 and not under_torchrun():
        sys.exit(launch(nproc, "stages.train", sys.argv[1:]))
    result = train(params, ".")
    if result.signal is not None:
        sys.exit(128 + result.signal)


if __name__ == "__main__":
    stage_main("train", run)
