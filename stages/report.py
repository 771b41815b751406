"""report: the HTML report of the run, in pictures.

    python -m stages.report [--params params.yaml]

Reads whatever the run left (each part is optional; a missing one is a note in the page):
data/dedupe/<ID>/ (dataset.parquet, rejected.jsonl, metrics.json), data/align/<ID>/aligned.parquet
(the rejected faces' images), data/trim/<ID>/coverage.png, the other data stages' rejected.jsonl,
models/live (dvclive curves), models/previews (the timelapse), the target (`target.uri`),
data/convert/frames.parquet and data/render/ (output.mp4, output.json, metrics.json).

Writes data/report/index.html and data/report/images/, built in a temp folder and swapped in
whole (facedag.report.html), so the page links only files inside data/report and opens from disk.
"""

from __future__ import annotations

from pathlib import Path

from facedag.params import Params
from facedag.report.html import write_report
from facedag.stagekit import stage_main

STAGE = "report"
OUT = Path("data") / STAGE


def run(params: Params) -> None:
    index = write_report(Path.cwd(), OUT, identities=list(params.identities), target=params.target.uri)
    print(f"[{STAGE}] {OUT / index.name}: open it in a browser (file://{index})", flush=True)


if __name__ == "__main__":
    stage_main(STAGE, run)
