"""Plotly figures of the explorer: occupancy timeline, token drill-down, per-frame quality curves.

All take plain numpy/RunHistory data and return a `go.Figure` with units on every axis and a legend;
`uirevision` keeps the user's zoom while streamed updates arrive.
"""

from __future__ import annotations

import functools

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

from backend.records import PHASES

from .history import RunHistory
from .signals import SIGNALS

LAYER_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
MAX_POINTS = 1500  # steps shown before the timeline keeps every k-th step (evictions always kept)


def _base(title: str, height: int) -> dict:
    return dict(
        title=dict(text=title, font=dict(size=14)),
        height=height,
        uirevision="keep",
        margin=dict(l=60, r=10, t=40, b=45),
        hovermode="x unified",
        legend=dict(orientation="v", x=1.02, y=1, xanchor="left"),
    )


def _layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(template="plotly_white", **_base(title, height))
    return fig


@functools.lru_cache(maxsize=1)
def _template() -> dict:
    return pio.templates["plotly_white"].to_plotly_json()


HEAD_DASHES = ("dot", "dash", "dashdot", "longdash", "longdashdot")


def _head_lines(a: dict, keep: np.ndarray, x: list) -> list[dict]:
    """Per-head policies (Dummy Forcing, Forcing-KV): each head's tokens as a thin line in its layer's colour,
    one dash per head, only where heads of a layer hold different counts (a layer line already says the
    rest)."""
    heads = a.get("heads")
    if heads is None:
        return []
    out = []
    for layer in range(heads.shape[1]):
        per = heads[keep, layer]  # (S', H)
        if (per == per[:, :1]).all():
            continue
        for head in range(per.shape[1]):
            out.append(
                dict(
                    type="scatter",
                    x=x,
                    y=per[:, head].tolist(),
                    mode="lines",
                    line=dict(shape="hv", color=LAYER_COLOURS[layer % 8], width=1, dash=HEAD_DASHES[head % 5]),
                    name=f"layer {layer} head {head}",
                    legendgroup=f"heads{layer}",
                    xaxis="x",
                    yaxis="y",
                )
            )
    return out


def occupancy_figure(
    h: RunHistory, budget: int | None = None, current_step: int | None = None, title: str = "KV cache occupancy"
) -> go.Figure:
    """Tokens per layer (top; with a per-head policy also each head's, dashed) and KV megabytes, all layers
    (bottom) over steps; eviction markers; the budget,
    which holds after each eviction, and the budget plus one chunk, which the cache reaches between a commit
    and its eviction; `current_step` (the scrubbed time) as a cyan line.

    Built from plain dicts without plotly's per-property validation: it is redrawn on every streamed step."""
    a = h.arrays()
    n = len(a["phase"])
    data = []
    if n:
        evict = a["phase"] == PHASES.index("evict")
        keep = np.ones(n, bool)
        if n > MAX_POINTS:
            keep[:] = False
            keep[:: int(np.ceil(n / MAX_POINTS))] = True
            keep |= evict
            keep[-1] = True
        x = np.arange(n)[keep].tolist()
        for layer in range(h.n_layer):
            data.append(
                dict(
                    type="scatter",
                    x=x,
                    y=a["occupancy"][keep, layer].tolist(),
                    mode="lines",
                    line=dict(shape="hv", color=LAYER_COLOURS[layer % 8], width=1.5),
                    name=f"layer {layer}",
                    xaxis="x",
                    yaxis="y",
                )
            )
        data += _head_lines(a, keep, x)
        data.append(
            dict(
                type="scatter",
                x=x,
                y=(a["nbytes"][keep].sum(1) / 1e6).round(4).tolist(),
                mode="lines",
                line=dict(shape="hv", color="#444", width=1.5),
                name="KV MB (all layers)",
                xaxis="x",
                yaxis="y2",
            )
        )
        ev_x = np.nonzero(evict & (a["n_evicted"].sum(1) > 0))[0]
        if len(ev_x):
            data.append(
                dict(
                    type="scatter",
                    x=ev_x.tolist(),
                    y=a["occupancy"][ev_x].max(1).tolist(),
                    mode="markers",
                    name="eviction",
                    marker=dict(symbol="triangle-down", size=7, color="#d62728"),
                    customdata=a["n_evicted"][ev_x].sum(1).tolist(),
                    xaxis="x",
                    yaxis="y",
                    hovertemplate="evicted %{customdata} tokens (all layers)<extra></extra>",
                )
            )
    shapes, notes = [], []
    if budget is not None:
        chunk = h.chunk_frames * h.tokens_per_frame
        shapes.append(
            dict(
                type="rect",
                xref="x domain",
                x0=0,
                x1=1,
                yref="y",
                y0=budget,
                y1=budget + chunk,
                fillcolor="rgba(214, 39, 40, 0.07)",
                line=dict(width=0),
                layer="below",
            )
        )
        shapes.append(
            dict(
                type="line",
                xref="x domain",
                x0=0,
                x1=1,
                yref="y",
                y0=budget,
                y1=budget,
                line=dict(dash="dash", color="#d62728"),
            )
        )
        notes.append(
            dict(
                xref="x domain",
                x=0,
                yref="y",
                y=budget,
                text=f"budget {budget} tokens/layer (after each eviction)",
                showarrow=False,
                xanchor="left",
                yanchor="top",
                font=dict(color="#d62728", size=11),
            )
        )
        notes.append(
            dict(
                xref="x domain",
                x=0,
                yref="y",
                y=budget + chunk,
                text="+ the newest chunk, from its commit to its eviction",
                showarrow=False,
                xanchor="left",
                yanchor="bottom",
                font=dict(color="#d62728", size=11),
            )
        )
    if current_step is not None and n:
        for yref in ("y domain", "y2 domain"):
            shapes.append(
                dict(
                    type="line",
                    xref="x",
                    x0=current_step,
                    x1=current_step,
                    yref=yref,
                    y0=0,
                    y1=1,
                    line=dict(color="#17becf", width=2),
                )
            )
    layout = dict(
        xaxis=dict(anchor="y2", title=dict(text="backend step (denoise, commit, evict)")),
        yaxis=dict(domain=[0.42, 1.0], title=dict(text="tokens per layer"), rangemode="tozero"),
        yaxis2=dict(domain=[0.0, 0.32], title=dict(text="KV MB"), rangemode="tozero"),
        shapes=shapes,
        annotations=notes,
        template=_template(),
        **_base(title, 380),
    )
    return go.Figure(data=data, layout=layout, _validate=False)


def token_figure(h: RunHistory, signal: str, tid: int, current_chunk: int | None = None) -> go.Figure:
    """One token's salience over time per layer, the chunk at which each layer evicted it (one label per
    chunk, naming every layer that evicted it then) and the scrubbed time as a cyan line."""
    sig = SIGNALS[signal]
    frame, y, x = h.token_pos(tid)
    fig = go.Figure()
    if signal in h.static:
        vals = h.static[signal][:, tid - h.n_prompt]
        fig.add_trace(
            go.Bar(
                x=[f"layer {layer}" for layer in range(h.n_layer)],
                y=vals,
                name=sig.label,
                marker_color=LAYER_COLOURS[: h.n_layer],
            )
        )
        fig.update_xaxes(title_text="layer")
    else:
        chunks, vals = h.token_series(signal, tid)
        by_chunk: dict[int, list[int]] = {}
        for layer in range(h.n_layer):
            fig.add_trace(
                go.Scatter(
                    x=chunks,
                    y=vals[:, layer],
                    mode="lines+markers",
                    name=f"layer {layer}",
                    line=dict(color=LAYER_COLOURS[layer % 8]),
                )
            )
            ev = int(h.evicted_at[layer, tid])
            if ev >= 0:
                by_chunk.setdefault(ev, []).append(layer)
        for i, (ev, layers) in enumerate(sorted(by_chunk.items())):
            colour = LAYER_COLOURS[layers[0] % 8] if len(layers) == 1 else "#555"
            fig.add_vline(x=ev, line_dash="dot", line_color=colour)
            fig.add_annotation(
                x=ev,
                yref="paper",
                y=1.0 - 0.1 * (i % 3),
                showarrow=False,
                xanchor="left",
                text=("L" + ",".join(map(str, layers)) + " evicted"),
                font=dict(size=10, color=colour),
                bgcolor="rgba(255,255,255,0.8)",
            )
        if current_chunk is not None:
            fig.add_vline(x=current_chunk, line_color="#17becf", line_width=2)
        cf = h.chunk_frames
        span = "= frame" if cf == 1 else f"frames {cf}c to {cf}c+{cf - 1}"
        fig.update_xaxes(title_text=f"chunk c ({span}); cyan = the scrubbed time")
    fig.update_yaxes(title_text=f"{sig.label} [{sig.unit}]")
    return _layout(fig, f"token (frame {frame}, y {y}, x {x}): {sig.label} over time", 300)


def quality_figure(
    curves: dict[str, np.ndarray],
    metric: str = "PSNR",
    unit: str = "dB",
    current_frame: int | None = None,
    sink: dict[str, dict] | None = None,
) -> go.Figure:
    """Per-frame quality against the full-cache reference, one line per configuration; with `sink` (label ->
    `backend.sink_collapse.sink_collapse` of its frames) a lower panel of each run's normalised distance to its
    first frames, a cross where a sink-collapse event starts (LoL's snap back to the sink)."""
    fig = go.Figure()
    colour = {name: LAYER_COLOURS[i % 8] for i, name in enumerate([*curves, *(sink or {})])}
    for name, y in curves.items():
        y = np.asarray(y, float)
        fig.add_trace(
            go.Scatter(
                x=np.arange(len(y)),
                y=np.where(np.isfinite(y), y, None),
                mode="lines",
                name=name,
                legendgroup=name,
                line=dict(color=colour[name]),
            )
        )
    for name, sc in (sink or {}).items():
        d, ev = np.asarray(sc["distance"], float), np.asarray(sc["events"], int)
        fig.add_trace(
            go.Scatter(
                x=np.arange(len(d)),
                y=np.where(np.isfinite(d), d, None),
                mode="lines",
                name=f"{name}: distance to sink",
                legendgroup=name,
                line=dict(color=colour[name], dash="dot", width=1),
                yaxis="y2",
            )
        )
        if len(ev):
            fig.add_trace(
                go.Scatter(
                    x=ev.tolist(),
                    y=d[ev].tolist(),
                    mode="markers",
                    name=f"{name}: sink collapse",
                    legendgroup=name,
                    marker=dict(symbol="x", size=9, color="#d62728", line=dict(color=colour[name], width=1)),
                    yaxis="y2",
                    hovertemplate="sink collapse at frame %{x}<extra>" + name + "</extra>",
                )
            )
    if current_frame is not None:
        fig.add_vline(x=current_frame, line_color="#17becf", line_width=2)
    fig.update_xaxes(title_text="frame")
    fig.update_yaxes(title_text=f"{metric} vs full cache [{unit}]")
    height = 320
    if sink:
        height = 440
        fig.update_layout(
            yaxis=dict(domain=[0.42, 1.0]),
            yaxis2=dict(domain=[0.0, 0.3], anchor="x", title_text="distance to sink [1 = typical]", rangemode="tozero"),
        )
    fig = _layout(
        fig, f"per-frame {metric} against the full-cache run (same seed, same noise; 100 dB = identical)", height
    )
    fig.update_layout(showlegend=True)  # name the line even when only one configuration
    return fig


def budget_figure(points: dict[str, list[tuple[float, float, float]]]) -> go.Figure:
    """Quality against budget per policy: mean PSNR vs the full cache (solid, left axis, dB) and adherence
    (dotted, right axis, 0-1) over the budget as a share of the full cache (log axis, %)."""
    fig = go.Figure()
    for i, (policy, pts) in enumerate(points.items()):
        x = [p[0] for p in pts]
        colour = LAYER_COLOURS[i % 8]
        fig.add_trace(
            go.Scatter(
                x=x, y=[p[1] for p in pts], mode="lines+markers", name=f"{policy}: PSNR", line=dict(color=colour)
            )
        )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=[p[2] for p in pts],
                mode="lines+markers",
                name=f"{policy}: adherence",
                line=dict(color=colour, dash="dot"),
                yaxis="y2",
            )
        )
    ticks = sorted({round(p[0], 2) for pts in points.values() for p in pts})
    fig.update_xaxes(
        title_text="cache budget [% of the full cache at this length]",
        type="log",
        tickvals=ticks,
        ticktext=[f"{t:g}%" for t in ticks],
    )
    fig.update_yaxes(title_text="PSNR vs full cache [dB]")
    fig.update_layout(yaxis2=dict(title=dict(text="adherence [0-1]"), overlaying="y", side="right", range=[0, 1.05]))
    fig = _layout(
        fig,
        "quality against budget (a budget sweep; same seed and noise)"
        if points
        else "quality against budget: run a budget sweep (two or more budgets per policy)",
        320,
    )
    fig.update_layout(showlegend=True, legend=dict(x=1.08))
    return fig
