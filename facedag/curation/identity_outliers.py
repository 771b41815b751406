"""dedupe's identity check: faces far from their identity's mean SFace embedding are dropped
(`identity_outlier`) before anything else is chosen.

extract already keeps one person's tracks, but a track can still carry someone else for a
few frames (a face crossing in front, a misdetection on a poster or a hand), and a wrong face
in a decoder's training set is learned like any other. Each decodable face of aligned.parquet
is warped again to SFace's 112 px template (its aligned image, through the stored matrix and
landmarks) and embedded; the identity's centre is the mean embedding, re-taken twice over the
faces within `threshold` of it, so that a minority of other faces does not pull the centre
toward themselves; a face whose cosine to the centre is below `threshold` is an outlier.
Faces whose landmarks cannot be warped (degenerate) are not judged, and with fewer than
`MIN_FACES` judged faces there is no centre to trust: nothing is dropped.

Cost: one embedding per decodable face (about 16-23 ms a face on one core, batched), streamed
in record batches: only 128 floats per face stay in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq

from facedag.curation.dedupe import READ_BATCH, FaceScan
from facedag.faces.align import transform_points
from facedag.faces.identity import Embedder, align_112, cosine, mean_embedding
from facedag.tables import decode_image

MIN_FACES = 5


@dataclass
class IdentityCheck:
    """Per scanned face: its cosine to the identity's centre (nan: not judged), and the outliers."""

    similarity: np.ndarray
    outlier: np.ndarray
    judged: int


def identity_check(source: pq.ParquetFile, scan: FaceScan, threshold: float, embedder: Embedder) -> IdentityCheck:
    """Embed the scanned faces of `source` (aligned.parquet) and flag the outliers (module doc)."""
    local = {row: i for i, row in enumerate(scan.rows)}
    sims = np.full(len(scan.rows), np.nan, np.float32)
    vectors = np.zeros((len(scan.rows), 128), np.float32)
    judged = np.zeros(len(scan.rows), bool)
    row = 0
    for batch in source.iter_batches(batch_size=READ_BATCH, columns=["image", "landmarks", "matrix"]):
        cols = batch.to_pydict()
        faces, where = [], []
        for k in range(batch.num_rows):
            i = local.get(row + k)
            if i is None or cols["landmarks"][k] is None or cols["matrix"][k] is None:
                continue
            image = decode_image(cols["image"][k] or b"")
            if image is None:
                continue
            lm = transform_points(np.asarray(cols["landmarks"][k], np.float64).reshape(5, 2),
                                  np.asarray(cols["matrix"][k], np.float64).reshape(2, 3))  # fmt: skip
            try:
                faces.append(align_112(image, lm))
            except ValueError:  # degenerate landmarks: not judged
                continue
            where.append(i)
        if faces:
            vectors[where] = embedder.embed(faces)
            judged[where] = True
        row += batch.num_rows
    outlier = np.zeros(len(scan.rows), bool)
    if judged.sum() < MIN_FACES:
        return IdentityCheck(sims, outlier, int(judged.sum()))
    emb = vectors[judged]
    centre = mean_embedding(emb)
    for _ in range(2):
        near = cosine(emb, centre) >= threshold
        if near.sum() >= MIN_FACES:
            centre = mean_embedding(emb[near])
    sims[judged] = cosine(emb, centre)
    outlier[judged] = sims[judged] < threshold
    return IdentityCheck(sims, outlier, int(judged.sum()))


def drop_faces(scan: FaceScan, drop: np.ndarray) -> FaceScan:
    """The scan without the faces where `drop` is true (rows keep their table numbers)."""
    keep = np.flatnonzero(~np.asarray(drop, bool)).tolist()
    return FaceScan(
        ids=[scan.ids[i] for i in keep],
        clips=[scan.clips[i] for i in keep],
        rows=[scan.rows[i] for i in keep],
        hashes=[scan.hashes[i] for i in keep],
        thumbs=[scan.thumbs[i] for i in keep],
        features={c: [v[i] for i in keep] for c, v in scan.features.items()},
        faces_in=scan.faces_in,
    )
