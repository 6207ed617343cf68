"""The Compare tab: layout and wiring (actions in compare_actions.CompareActions)."""

from __future__ import annotations

import functools

import gradio as gr

from .compare import MAX_CONFIGS, SWEEP_MAX, metric_widths
from .compare_actions import SHARES
from .controller import Explorer
from .scrubber import follow_toggled, pushes, scrubbed, scrubber_row
from .signals import SIGNALS
from .ui_common import config_from, errors, errors_gen, policy_choices, served_png


def compare_tab(ex: Explorer) -> dict:
    c = {}
    with gr.Row():
        with gr.Column(scale=1, min_width=330):
            c["policies"] = gr.CheckboxGroup(
                policy_choices(exclude=("full",)),
                value=["window", "pafu"],
                label="Policies",
                elem_id="cmp_policies",
                info="each is run against the full cache with the same noise",
            )
            c["shares"] = gr.CheckboxGroup(
                list(SHARES), value=["1/8"], label="Budgets (share of the full cache)", elem_id="cmp_shares"
            )
            c["custom"] = gr.Textbox(
                "", label="Other budgets", placeholder="e.g. 8f, 2048, 512KB", elem_id="cmp_custom"
            )
            gr.Markdown(
                f"At most {MAX_CONFIGS} policy x budget configurations (a budget sweep: up to "
                f"{SWEEP_MAX}, the chosen policies at every share); the full cache is added as the reference."
            )
            with gr.Row(elem_classes="compact-row"):
                c["go"] = gr.Button("Compare", variant="primary", elem_id="compare_btn", size="sm")
                c["sweep_btn"] = gr.Button("Budget sweep (all four shares)", elem_id="sweep_btn", size="sm")
                c["stop"] = gr.Button("Stop", variant="stop", elem_id="cmp_stop", size="sm")
            c["status"] = gr.Markdown("No comparison yet.", elem_id="cmp_status")
            with gr.Accordion("Export", open=False):
                c["overlay"] = gr.Checkbox(False, label="with heatmap overlay", elem_id="cmp_export_overlay")
                c["signal"] = gr.Dropdown(
                    [(s.label, k) for k, s in SIGNALS.items()],
                    value="score",
                    label="Overlay signal",
                    elem_id="cmp_signal",
                )
                with gr.Row(elem_classes="compact-row"):
                    for kind in ("mp4", "gif", "png", "csv", "json", "zip"):
                        c[f"exp_{kind}"] = gr.Button(
                            kind.upper() if kind != "zip" else "Session zip", size="sm", elem_id=f"cmp_export_{kind}"
                        )
                c["file"] = gr.File(label="Download", elem_id="cmp_export_file", interactive=False)
        with gr.Column(scale=3):
            c["grid"] = gr.Image(
                label="Side by side (same seed, same noise)",
                type="numpy",
                format="png",
                elem_id="cmp_grid",
                interactive=False,
                buttons=["download", "fullscreen"],
            )
            c["row"] = scrubber_row("cmp_", "Frame, all panels (← / → keys)")
            c["a"] = gr.Dropdown([], label="Wipe / difference: configuration A (B = full cache)", elem_id="cmp_a")
            with gr.Row():
                c["wipe"] = gr.ImageSlider(
                    label="Wipe: A | full cache", type="numpy", elem_id="cmp_wipe", slider_position=50, max_height=300
                )
                c["diff"] = gr.Image(
                    label="|A - full cache|", type="numpy", format="png", elem_id="cmp_diff", interactive=False
                )
            with gr.Row():
                c["psnr"] = gr.Plot(label="Per-frame PSNR", elem_id="cmp_psnr")
                c["sweep"] = gr.Plot(label="Quality against budget", elem_id="cmp_sweep")
            c["table"] = gr.Dataframe(
                label="Metrics (frames so far; PSNR/SSIM from the first frame that differs from the "
                "full cache, 100 dB = identical)",
                elem_id="cmp_table",
                interactive=False,
                wrap=True,
                pinned_columns=1,
                column_widths=metric_widths(ex.world),
            )
    return c


def wire_compare(ex: Explorer, shared: list, c: dict) -> None:
    row = c["row"]
    out = [
        c["grid"],
        c["wipe"],
        c["diff"],
        c["psnr"],
        c["sweep"],
        c["table"],
        c["status"],
        c["a"],
        row.scrub,
        row.live,
        row.follow,
    ]
    served = functools.partial(served_png, folder=c["grid"].GRADIO_CACHE)

    def outputs(ws, a, set_follow=True, force=False, labels=False):
        import pandas as pd

        s = ws.scrub["compare"]
        v = ex.compare_view(ws, None if s.follow else s.frame, a)
        table = pd.DataFrame(v.table).round(3) if v.table else pd.DataFrame({"config": []})
        names = _labels(ws)
        a_out = gr.Dropdown(choices=names, value=names[0] if names else None) if labels else gr.skip()
        return (
            served(v.grid),
            served(v.wipe),
            served(v.diff),
            v.psnr,
            v.sweep,
            table,
            v.status,
            a_out,
            *pushes(s, v.frames_done, v.frame, set_follow, force),
        )

    def stream(ws, configs, a, progress):
        before, first = ws.compare, True
        for _ in ex.compare_iter(ws, configs, progress=progress):
            new = first and ws.compare is not before
            yield outputs(ws, None if new else a, set_follow=first, force=new, labels=new)
            first = False

    @errors_gen
    def do_compare(
        prompt, seed, frames, guidance, policies, shares, custom, a, request: gr.Request, progress=gr.Progress()
    ):
        ws = ex.ws(request.session_hash)
        base = config_from(prompt, seed, frames, guidance, "full", 1, "frames", "", ex.kind)
        yield from stream(ws, ex.compare_configs(base, list(policies or []), list(shares or []), custom), a, progress)

    @errors_gen
    def do_sweep(prompt, seed, frames, guidance, policies, a, request: gr.Request, progress=gr.Progress()):
        ws = ex.ws(request.session_hash)
        base = config_from(prompt, seed, frames, guidance, "full", 1, "frames", "", ex.kind)
        configs, note = ex.sweep_configs(base, list(policies or []))
        if note:
            gr.Info(f"Budget sweep: {note}", duration=10)
        yield from stream(ws, configs, a, progress)

    @errors
    def do_view(frame, follow, a, request: gr.Request):
        ws = ex.ws(request.session_hash)
        s = ws.scrub["compare"]
        if not scrubbed(s, frame, follow):
            return (gr.skip(),) * len(out)
        n = ws.compare.frames_done if ws.compare is not None else 0
        return outputs(ws, a, force=int(frame or 0) > max(n - 1, 0))

    @errors
    def do_redraw(a, request: gr.Request):
        return outputs(ex.ws(request.session_hash), a)

    def do_follow(follow, a, request: gr.Request):
        if follow_toggled(ex.ws(request.session_hash).scrub["compare"], follow):
            return do_redraw(a, request)
        return (gr.skip(),) * len(out)

    @errors
    def do_reload(a, request: gr.Request):
        ws = ex.ws(request.session_hash)
        ws.scrub["compare"].follow = True
        return outputs(ws, None, force=True, labels=True)

    def do_stop(a, request: gr.Request):
        ws = ex.ws(request.session_hash)
        if ex.stop(ws, "compare"):
            return (gr.skip(),) * len(out)
        return outputs(ws, a, set_follow=False)

    model = dict(concurrency_id="model", concurrency_limit=2)
    c["go"].click(
        do_compare,
        [*shared, c["policies"], c["shares"], c["custom"], c["a"]],
        out,
        api_name="compare",
        show_progress="minimal",
        **model,
    )
    c["sweep_btn"].click(
        do_sweep, [*shared, c["policies"], c["a"]], out, api_name="budget_sweep", show_progress="minimal", **model
    )
    c["stop"].click(do_stop, c["a"], out, api_name="stop_compare", concurrency_limit=None)
    row.wire()
    row.scrub.change(
        do_view,
        [row.scrub, row.follow, c["a"]],
        out,
        api_visibility="private",
        trigger_mode="always_last",
        show_progress="hidden",
        concurrency_limit=None,
    )
    row.follow.change(
        do_follow, [row.follow, c["a"]], out, api_visibility="private", show_progress="hidden", concurrency_limit=None
    )
    c["a"].change(do_redraw, c["a"], out, api_visibility="private", trigger_mode="always_last", show_progress="hidden")
    c["refresh"], c["out"] = do_reload, out

    def exporter(kind):
        @errors
        def fn(overlay, signal, frame, request: gr.Request):
            return str(
                ex.export(ex.ws(request.session_hash), "compare", kind, signal if overlay else None, "mean", frame)
            )

        return fn

    for kind in ("mp4", "gif", "png", "csv", "json", "zip"):
        c[f"exp_{kind}"].click(
            exporter(kind),
            [c["overlay"], c["signal"], row.scrub],
            c["file"],
            api_name=f"export_compare_{kind}",
            **model,
        )


def _labels(ws) -> list[str]:
    """The compared configurations other than the full-cache reference (choices for the wipe's A)."""
    if ws.compare is None:
        return []
    return [d.config.label for i, d in enumerate(ws.compare.datas) if i != ws.compare.reference]
