"""The report's identity parts: who extract kept in each identity's footage, who convert
replaced in the target (identity groups with their contact sheets, so that a user can name
another group with `reference: group:N`), and how much the output looks like src, frame by
frame (evaluate_video's id_src / id_dst, facedag.quality.identity).

Called from facedag.report.html.build_page; each function returns one section's HTML and says
what is missing instead of failing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from facedag.report.html import Report, _fmt, _img, _note, _read_json, _table, esc


def _groups(rep: Report, folder: Path, what: str, key: str, stage: str) -> str:
    data = _read_json(folder / "identity.json")
    if data is None:
        return _note(f"missing {rep.rel(folder / 'identity.json')}: run {stage}")
    groups: list[dict[str, Any]] = data.get("groups") or []
    if not groups:
        return f"<p>No identity groups: {esc(data.get('mode'))} (set the policy to identity to tell people apart).</p>"
    mode = data.get("mode")
    how = {"reference": f"the reference ({data.get('reference')})", "largest_group": "the group with most faces"}
    rows = [(g["group"], g["faces"], len(g["tracks"]), _fmt(g.get("size")), _fmt(g.get("similarity")),
             "kept" if g["kept"] else "") for g in groups]  # fmt: skip
    parts = [f"<p>{esc(len(groups))} identity group(s) among {esc(what)}; kept: {esc(how.get(mode, mode))}. "
             f"To take another person, set {esc(key)}: group:N (numbers hold for the same footage "
             "and params).</p>",
             _table(["group", "faces", "tracks", "face size (px)", "cosine to the kept person", ""], rows)]  # fmt: skip
    sheet = folder / "identity.png"
    if sheet.is_file():
        parts.append(_img(rep.images.add_file(sheet, max_width=1100), f"identity groups of {what}", "wide"))
    else:
        parts.append(_note(f"missing {rep.rel(sheet)}"))
    return "".join(parts)


def identity_groups(rep: Report, name: str) -> str:
    """extract@name's identity groups and which was kept."""
    return _groups(rep, rep.root / "data" / "extract" / name, f"{name}'s footage",
                   f"identities.{name}.reference", f"extract@{name}")  # fmt: skip


def target_identity(rep: Report) -> str:
    """convert's identity groups of the target and which was replaced."""
    return _groups(rep, rep.root / "data" / "convert", "the target", "target.reference", "convert")


def identity_curve(rep: Report) -> str:
    """Per swapped frame: the output face's cosine to src's and to dst's mean face."""
    import pandas as pd

    metrics = _read_json(rep.root / "data" / "evaluate" / "video" / "metrics.json")
    table = rep.root / "data" / "evaluate" / "video" / "frames.parquet"
    if metrics is None or not table.is_file():
        return _note("missing data/evaluate/video/metrics.json or frames.parquet: run evaluate_video")
    frames = pd.read_parquet(table)
    if "id_src" not in frames.columns or frames["id_src"].isna().all():
        return _note("no identity figures in data/evaluate/video: rerun evaluate_video")
    text = (f"<p>id_retrieval {esc(_fmt(metrics.get('id_retrieval')))} (share of {esc(metrics.get('id_frames'))} "
            f"scored frames whose face is nearer to src than to any other identity), id_margin "
            f"{esc(_fmt(metrics.get('id_margin')))} (cosine to src minus cosine to dst). SFace, which training "
            "never uses.</p>")  # fmt: skip
    fig, ax = plt.subplots(figsize=(9, 3))
    ax.plot(frames["frame"], frames["id_src"], label="cosine to src", lw=1.2)
    if "id_dst" in frames.columns:
        ax.plot(frames["frame"], frames["id_dst"], label="cosine to dst", lw=1.2)
    ax.axhline(0.363, color="grey", lw=0.8, ls="--", label="same person (0.363)")
    ax.set_xlabel("frame")
    ax.set_ylabel("SFace cosine")
    ax.set_title("who the output's face is, frame by frame")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return text + _img(rep.images.add_figure(fig), "per-frame identity of the output", "wide")
