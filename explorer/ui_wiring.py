"""The Generate tab's event wiring: each control calls an Explorer action and redraws the views."""

from __future__ import annotations

import functools
import json

import gradio as gr

from .controller import Explorer
from .scrubber import follow_toggled, pushes, scrubbed
from .signals import SIGNALS
from .ui_common import BUDGET_DEFAULT, config_from, errors, errors_gen, policy_help, served_png


def wire_generate(ex: Explorer, demo, shared: list, g: dict) -> None:
    row = g["row"]
    cfg_in = [*shared, g["policy"], g["budget"], g["unit"], g["params"]]
    view_in = [g["signal"], g["layer"], g["cmap"]]
    view_out = [
        g["frame_img"],
        g["preview_img"],
        g["heat_img"],
        g["cache_img"],
        g["occupancy"],
        g["status"],
        g["hover"],
        row.scrub,
        row.live,
        row.follow,
    ]
    action_out = view_out + [g["cli"]]
    served = functools.partial(served_png, folder=g["frame_img"].GRADIO_CACHE)

    def outputs(ws, signal, layer, cmap, set_follow=True, force=False):
        """Every Generate view at the workspace's time: the scrubbed frame, or the newest while following."""
        s = ws.scrub["run"]
        v = ex.view(ws, None if s.follow else s.frame, signal, layer, cmap)
        return (
            served(v.frame_img),
            served(v.preview_img),
            served(v.heat_img),
            served(v.cache_img),
            v.occupancy,
            v.status,
            json.dumps(v.hover),
            *pushes(s, v.frames_done, v.frame, set_follow, force),
        )

    def cli(ws):
        return ex.cli(ws.run.data.config) if ws.run is not None else ""

    def action(fn):
        @errors
        def inner(
            prompt, seed, frames, guidance, policy, budget, unit, params, signal, layer, cmap, request: gr.Request
        ):
            ws = ex.ws(request.session_hash)
            before = ws.run
            fn(ws, config_from(prompt, seed, frames, guidance, policy, budget, unit, params, ex.kind))
            return outputs(ws, signal, layer, cmap, force=ws.run is not before) + (cli(ws),)

        return inner

    @errors_gen
    def do_run(
        prompt,
        seed,
        frames,
        guidance,
        policy,
        budget,
        unit,
        params,
        signal,
        layer,
        cmap,
        request: gr.Request,
        progress=gr.Progress(),
    ):
        ws = ex.ws(request.session_hash)
        before, first = ws.run, True
        for _ in ex.run_iter(
            ws, config_from(prompt, seed, frames, guidance, policy, budget, unit, params, ex.kind), progress=progress
        ):
            yield outputs(ws, signal, layer, cmap, set_follow=first, force=first and ws.run is not before) + (cli(ws),)
            first = False

    @errors
    def do_view(frame, follow, signal, layer, cmap, request: gr.Request):
        """The user moved the scrubber: draw that time (an echo of a pushed value draws nothing)."""
        ws = ex.ws(request.session_hash)
        s = ws.scrub["run"]
        if not scrubbed(s, frame, follow):
            return (gr.skip(),) * len(view_out)
        clamped = ws.run is not None and int(frame or 0) > max(ws.run.data.frames_done - 1, 0)
        return outputs(ws, signal, layer, cmap, force=clamped)

    @errors
    def do_redraw(signal, layer, cmap, request: gr.Request):
        """Signal, layer or colour map changed, or Follow live was ticked: draw the workspace's time."""
        return outputs(ex.ws(request.session_hash), signal, layer, cmap)

    def do_follow(follow, signal, layer, cmap, request: gr.Request):
        if follow_toggled(ex.ws(request.session_hash).scrub["run"], follow):
            return do_redraw(signal, layer, cmap, request)
        return (gr.skip(),) * len(view_out)

    def do_stop(signal, layer, cmap, request: gr.Request):
        """Pause between frames. A streaming Run reports the pause itself; otherwise the views say so here."""
        ws = ex.ws(request.session_hash)
        if ex.stop(ws, "run"):
            return (gr.skip(),) * len(view_out)
        return outputs(ws, signal, layer, cmap, set_follow=False)

    @errors
    def do_reset(signal, layer, cmap, request: gr.Request):
        ws = ex.ws(request.session_hash)
        ex.reset(ws)
        fig, info = ex.drill_down(ws, signal)
        return outputs(ws, signal, layer, cmap, force=True) + ("", fig, info, None, None, None, "")

    @errors
    def do_reset_view(signal, layer, cmap, request: gr.Request):
        """A reloaded session: draw its newest frame."""
        ws = ex.ws(request.session_hash)
        ws.scrub["run"].follow = True
        return outputs(ws, signal, layer, cmap, force=True)

    @errors
    def do_teacher(signal, layer, cmap, request: gr.Request):
        ws = ex.ws(request.session_hash)
        ex.teacher_salience(ws, ex.shown_frame(ws))
        return outputs(ws, "teacher", layer, cmap, set_follow=False) + (gr.Dropdown(value="teacher"),)

    model = dict(concurrency_id="model", concurrency_limit=2)
    g["step"].click(action(ex.step), cfg_in + view_in, action_out, api_name="step", **model)
    g["step_frame"].click(action(ex.step_frame), cfg_in + view_in, action_out, api_name="step_frame", **model)
    run_ev = g["run"].click(do_run, cfg_in + view_in, action_out, api_name="generate", show_progress="minimal", **model)
    g["stop"].click(do_stop, view_in, view_out, api_name="stop", concurrency_limit=None)
    g["reset"].click(
        do_reset,
        view_in,
        view_out
        + [g["cli"], g["token_plot"], g["token_info"], g["file"], g["agreement"], g["objects"], g["numbers_note"]],
        api_name="reset",
        **model,
    )
    g["teacher"].click(do_teacher, view_in, view_out + [g["signal"]], api_name="teacher_salience", **model)
    row.wire()
    row.scrub.change(
        do_view,
        [row.scrub, row.follow, *view_in],
        view_out,
        api_name="view",
        trigger_mode="always_last",
        show_progress="hidden",
        concurrency_limit=None,
    )
    row.follow.change(
        do_follow,
        [row.follow, *view_in],
        view_out,
        api_visibility="private",
        show_progress="hidden",
        concurrency_limit=None,
    )
    for comp in (g["signal"], g["layer"], g["cmap"]):
        comp.change(
            do_redraw, view_in, view_out, api_visibility="private", trigger_mode="always_last", show_progress="hidden"
        )
    g["signal"].change(
        lambda s: SIGNALS[s].definition if s in SIGNALS else "", g["signal"], g["signal_help"], api_visibility="private"
    )
    g["policy"].change(policy_help, g["policy"], g["policy_help"], api_visibility="private")

    def set_unit(unit):
        st, v = BUDGET_DEFAULT.get(unit, BUDGET_DEFAULT["frames"])
        return gr.Number(step=st, value=v, label=f"Cache budget per layer ({unit})")

    g["unit"].change(set_unit, g["unit"], g["budget"], api_visibility="private")

    # drill-down: click the heatmap or the cache map (linked: the picked token is boxed in both)
    @errors
    def pick_heat(signal, layer, cmap, evt: gr.SelectData, request: gr.Request):
        ws = ex.ws(request.session_hash)
        x, y = evt.index
        ex.pick_heatmap(ws, ex.shown_frame(ws), int(x), int(y))
        fig, info = ex.drill_down(ws, signal)
        return outputs(ws, signal, layer, cmap, set_follow=False) + (fig, info)

    @errors
    def pick_map(signal, layer, cmap, evt: gr.SelectData, request: gr.Request):
        ws = ex.ws(request.session_hash)
        x, y = evt.index
        hit = ex.pick_cache_map(ws, int(x), int(y))
        if hit is not None:  # go to the token's frame: the heatmap shows it boxed
            ws.scrub["run"].follow, ws.scrub["run"].frame = False, hit[1]
        fig, info = ex.drill_down(ws, signal)
        return outputs(ws, signal, layer, cmap, set_follow=hit is not None, force=hit is not None) + (fig, info)

    drill_out = view_out + [g["token_plot"], g["token_info"]]
    g["heat_img"].select(pick_heat, view_in, drill_out, api_visibility="private", show_progress="hidden")
    g["cache_img"].select(pick_map, view_in, drill_out, api_visibility="private", show_progress="hidden")

    def redrill(signal, request: gr.Request):
        return ex.drill_down(ex.ws(request.session_hash), signal)

    g["signal"].change(redrill, g["signal"], [g["token_plot"], g["token_info"]], api_visibility="private")
    row.scrub.change(
        redrill,
        g["signal"],
        [g["token_plot"], g["token_info"]],
        api_visibility="private",
        trigger_mode="always_last",
        show_progress="hidden",
    )

    @errors
    def do_numbers(request: gr.Request, progress=gr.Progress()):
        import pandas as pd

        rows, objects, note = ex.salience_numbers(ex.ws(request.session_hash), progress)
        return pd.DataFrame(rows).round(3), pd.DataFrame(objects), note

    g["numbers_btn"].click(
        do_numbers, None, [g["agreement"], g["objects"], g["numbers_note"]], api_name="salience_numbers", **model
    )

    # export
    def exporter(kind):
        @errors
        def fn(overlay, signal, layer, frame, request: gr.Request):
            return str(ex.export(ex.ws(request.session_hash), "run", kind, signal if overlay else None, layer, frame))

        return fn

    for kind in ("mp4", "gif", "png", "csv", "json", "zip"):
        g[f"exp_{kind}"].click(
            exporter(kind),
            [g["overlay"], g["signal"], g["layer"], row.scrub],
            g["file"],
            api_name=f"export_run_{kind}",
            **model,
        )
    demo.load(do_redraw, view_in, view_out, api_visibility="private")
    g["run_event"], g["refresh"], g["view_out"] = run_ev, do_reset_view, view_out
