"""Markdown tables of the validation benchmarks (weights, first frame, decoder): which files were compared,
and their scores per row, alone or paired against a baseline."""

from __future__ import annotations

import math
from pathlib import Path

from .report import mean_ci, paired_cell


def weights_record(path: str) -> dict:
    """What a per-file doc stores about a student file: its sha256 and the autoencoder it is evaluated with
    (its folder's, else the shipped one: `loading.folder_autoencoder`)."""
    from ..loading import file_hash, folder_autoencoder

    return {"sha256": file_hash(path), "autoencoder": str(folder_autoencoder(Path(path).parent))}


def weights_label(path: str, record: dict) -> str:
    """ "`path` (first 8 hex digits of its sha256)", naming the autoencoder when it is not the shipped one."""
    from ..loading import DEFAULT_AE

    ae = record.get("autoencoder")
    own = f" with `{ae}`" if ae and Path(ae).resolve() != DEFAULT_AE.resolve() else ""
    return f"`{path}` ({record['sha256'][:8]}){own}"


def file_labels(doc: dict) -> dict[str, str]:
    """A stored per-file doc's labels: path -> `weights_label`."""
    return {p: weights_label(p, r) for p, r in doc["results"].items()}


def table_head(first: str, second: str, scores) -> list[str]:
    """The two header lines of a markdown table with columns first | second | scores..."""
    return [f"| {first} | {second} | " + " | ".join(scores) + " |", "|---" * (len(scores) + 2) + "|"]


def file_lines(name: str, rs: list[dict], rows, scores) -> list[str]:
    """Markdown rows "| name | row | mean ± CI ... |" of per-pair results rs ({row: {score: value}}) over pairs."""
    out = []
    for row in rows:
        cells = (mean_ci([r[row][s] for r in rs]) for s in scores)
        out.append(f"| {name} | {row} | " + " | ".join(f"{m:.3f} ± {c:.3f}" for m, c in cells) + " |")
    return out


def paired_file_lines(name: str, rs: list[dict], base: list[dict], rows, scores) -> list[str]:
    """Markdown rows of rs minus base, pair by pair (same pairs, same order), over the pairs where both are
    defined: "| name | row | +d ± CI (n) ... |", with ▲ / ▼ where the CI excludes 0."""

    def defined(x):
        return x is not None and not (isinstance(x, float) and math.isnan(x))

    out = []
    for row in rows:
        cells = []
        for s in scores:
            d = [a[row][s] - b[row][s] for a, b in zip(rs, base) if defined(a[row][s]) and defined(b[row][s])]
            cells.append(paired_cell((*mean_ci(d), len(d))))
        out.append(f"| {name} | {row} | " + " | ".join(cells) + " |")
    return out
