"""The Gradio Blocks of the explorer: layout and wiring only; every action lives in controller.Explorer.

Heavy state stays server-side in a Workspace keyed by the browser session (`request.session_hash`).
Model work shares one queue (`concurrency_id="model"`); views (scrubber, signal, layer) are cheap and
run outside it. Errors are shown as `gr.Error` messages; the app keeps serving.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import gradio as gr
import numpy as np

from backend.config import SamplerConfig
from backend.policies import POLICIES, describe_reads
from backend.policies.build import policy_parameters, shared_parameters
from backend.prompt import VOCAB

from .controller import BUDGET_UNITS, Explorer
from .run import MAX_FRAMES, MAX_GUIDANCE
from .forms import param_form
from .scrubber import follow_toggled, pushes, scrubbed, scrubber_row
from .signals import SIGNALS
from .ui_common import config_from, errors, errors_gen, policy_choices, served_png
from .ui_compare import compare_tab, wire_compare
from .ui_sessions import sessions_tab, wire_sessions
from .views import CACHE_MAP_LEGEND

EXAMPLES = [
    "a red circle and a square on blue stripes behind a wall",
    "a yellow triangle and a circle on green checker with a camera pan",
    "a cyan square and a magenta circle on plain red behind a wall with a camera pan",
    "a blue circle and a green triangle on yellow gradient",
]
LAYERS = ["mean", "layer 0", "layer 1", "layer 2", "layer 3"]
CMAPS = ["inferno", "viridis", "magma", "turbo"]
BUDGET_DEFAULT = {"frames": (1, 8), "tokens": (64, 576), "% of full": (0.5, 12.5), "KB": (16, 512)}  # step, value

PAGE_JS = (Path(__file__).parent / "assets" / "page.js").read_text()    # hotkeys and hover tooltips

DEFINITIONS = """
**Budget**: how many KV tokens each layer keeps after each eviction (between a chunk's commit and its eviction
the cache holds up to one chunk more): in frames (8f = the prompt
anchors + 8 frames' worth of tokens), tokens, a share of the full cache at this video length, or KB of K/V over
all layers. A budget of 0 or above the full cache is rejected.
**Eviction**: after every committed chunk the policy keeps the protected tokens (prompt anchors, the newest
chunk, sinks) and its top-scored others up to the budget; the rest are dropped for good.
**Colour guidance**: every denoise step also runs the model with the prompt's object colours left open
(only the cached prompt tokens are swapped) and moves the prediction away from it by this factor:
v = v_open + g (v_prompt - v_open). 1 = off; prompts that name no colour are never guided. It costs one more
read-only pass per step and works with every policy (our reconstruction of classifier-free guidance for a
cached model; the default was chosen on validation prompts, `docs/benchmarks/sampler.md`).
**Salience**: how much a cached token matters for the frames still to come. The heatmap paints one signal
per token of the chosen frame on one fixed colour scale for all frames and runs (grey = not cached / no value).
""" + "\n".join(f"- **{s.label}** [{s.unit}]: {s.definition}." for s in SIGNALS.values()) + """

**Policy parameters** (the *Policy parameters* box, `KEY=VALUE` pairs separated by commas), for every
policy: """ + shared_parameters() + """.

**Policies** (own parameters and defaults in brackets)
""" + "\n".join(f"- `{name}`: {desc}" + (" [" + ", ".join(f"{k}={v}" for k, v in policy_parameters(name).items())
                                          + "]" if policy_parameters(name) else "")
                for name, (_, desc) in sorted(POLICIES.items()))

CSS = """
#status, #cmp_status {font-size: 0.9em}
.hidden-data {display: none !important}
.compact-row {gap: 6px}
"""


def policy_help(name: str) -> str:
    """The policy's one-line description and what attention it reads (its cost at every commit)."""
    if name not in POLICIES:
        return ""
    return f"{POLICIES[name][1]}. With its defaults it {describe_reads(name)[1]}."


def build(ex: Explorer) -> gr.Blocks:
    with gr.Blocks(title="KV-cache explorer", fill_width=True, delete_cache=(3600, 3600)) as demo:
        gr.Markdown("## KV-cache explorer · autoregressive video diffusion\n"
                    "Generate a video chunk by chunk with a KV-cache policy and watch what the cache keeps. "
                    + (f"Model: the student in `{ex.custom_models}` ({ex.model_hash[:8]})." if ex.custom_models else
                       "Model: the shipped student (see `assets/models/MODEL_CARD.md`)."))
        with gr.Row(elem_classes="compact-row"):
            prompt = gr.Textbox(EXAMPLES[0], label="Prompt", elem_id="prompt", scale=4,
                                info="words of the world's grammar: " + ", ".join(VOCAB))
            seed = gr.Number(0, label="Seed", precision=0, elem_id="seed", scale=1, minimum=0)
            frames = gr.Number(32, label=f"Frames (1-{MAX_FRAMES})", precision=0, elem_id="frames", scale=1)
            guidance = gr.Number(SamplerConfig().guidance, label="Colour guidance", elem_id="guidance", scale=1,
                                 minimum=0, maximum=MAX_GUIDANCE, step=0.5,
                                 info="1 = off; pushes sprites to the prompted colours (see Definitions)")
        gr.Examples(EXAMPLES, [prompt], label="Example prompts")
        with gr.Tabs(elem_id="tabs") as tabs:
            with gr.Tab("Generate", id="generate"):
                g = _generate_tab(ex, demo)
            with gr.Tab("Compare", id="compare"):
                c = compare_tab(ex)
            with gr.Tab("Sessions", id="sessions"):
                s = sessions_tab(ex)
            with gr.Tab("Definitions", id="definitions"):
                gr.Markdown(DEFINITIONS, elem_id="definitions_text")
        _wire_generate(ex, demo, [prompt, seed, frames, guidance], g)
        wire_compare(ex, [prompt, seed, frames, guidance], c)
        wire_sessions(ex, demo, s, g, c, tabs)
        def cleanup(request: gr.Request):
            ex.registry.drop(request.session_hash)
        demo.unload(cleanup)
    return demo


# ============================================================================ Generate
def _generate_tab(ex: Explorer, demo: gr.Blocks) -> dict:
    g = {}
    with gr.Row():
        with gr.Column(scale=1, min_width=330):
            g["policy"] = gr.Dropdown(policy_choices(), value="window", label="Cache policy",
                                      elem_id="policy")
            g["policy_help"] = gr.Markdown(policy_help("window"), elem_id="policy_help")
            g["unit"] = gr.Radio(list(BUDGET_UNITS), value="frames", label="Budget unit", elem_id="budget_unit")
            st, v = BUDGET_DEFAULT["frames"]
            g["budget"] = gr.Number(v, step=st, label="Cache budget per layer (frames)", elem_id="budget",
                                    info="holds after each eviction; 0 and above the full cache are rejected, as "
                                         "on the command line")
            g["params"] = gr.Textbox("", label="Policy parameters", placeholder="e.g. alpha=0.3, storage=int4",
                                     elem_id="params", info="KEY=VALUE pairs; the form below writes them")
            with gr.Accordion("Parameter form", open=False, elem_id="param_form"):
                param_form(g["policy"], g["params"], demo)
            with gr.Row(elem_classes="compact-row"):
                g["step"] = gr.Button("Step", elem_id="step_btn", size="sm")
                g["step_frame"] = gr.Button("Step frame", elem_id="step_frame_btn", size="sm")
                g["run"] = gr.Button("Run", variant="primary", elem_id="run_btn", size="sm")
                g["stop"] = gr.Button("Stop", variant="stop", elem_id="stop_btn", size="sm")
                g["reset"] = gr.Button("Reset", elem_id="reset_btn", size="sm")
            g["status"] = gr.Markdown("No run yet.", elem_id="status")
            g["cli"] = gr.Textbox("", label="This run from the command line", elem_id="cli_command", lines=2,
                                  interactive=False, buttons=["copy"], max_lines=4)
            with gr.Accordion("Export", open=False):
                g["overlay"] = gr.Checkbox(False, label="with heatmap overlay", elem_id="export_overlay")
                with gr.Row(elem_classes="compact-row"):
                    g["exp_mp4"] = gr.Button("MP4", size="sm", elem_id="export_mp4")
                    g["exp_gif"] = gr.Button("GIF", size="sm", elem_id="export_gif")
                    g["exp_png"] = gr.Button("PNG", size="sm", elem_id="export_png")
                    g["exp_csv"] = gr.Button("CSV", size="sm", elem_id="export_csv")
                    g["exp_json"] = gr.Button("JSON", size="sm", elem_id="export_json")
                    g["exp_zip"] = gr.Button("Session zip", size="sm", elem_id="export_zip")
                g["file"] = gr.File(label="Download", elem_id="export_file", interactive=False)
        with gr.Column(scale=3):
            with gr.Row():
                g["frame_img"] = gr.Image(label="Frame", type="numpy", format="png", elem_id="frame",
                                          interactive=False, buttons=["download", "fullscreen"], height=280)
                g["preview_img"] = gr.Image(label="Denoise preview", type="numpy", format="png", elem_id="preview",
                                            interactive=False, buttons=["fullscreen"], height=280)
                g["heat_img"] = gr.Image(label="Salience heatmap (click a token)", type="numpy", format="png",
                                         elem_id="heatmap", interactive=False, buttons=["download", "fullscreen"],
                                         height=280)
            g["row"] = scrubber_row("", "Frame: the time every view shows (← / → keys)")
            with gr.Row(elem_classes="compact-row"):
                g["signal"] = gr.Dropdown([(s.label, k) for k, s in SIGNALS.items()], value="score",
                                          label="Salience signal", elem_id="signal", scale=2)
                g["layer"] = gr.Dropdown(LAYERS, value="mean", label="Layer", elem_id="layer", scale=1)
                g["cmap"] = gr.Dropdown(CMAPS, value="inferno", label="Colour map", elem_id="cmap", scale=1)
                g["teacher"] = gr.Button("Teacher salience", size="sm", elem_id="teacher_btn", scale=1)
            g["hover"] = gr.Textbox("{}", elem_id="hover_data", elem_classes="hidden-data", container=False)
            g["signal_help"] = gr.Markdown(SIGNALS["score"].definition, elem_id="signal_help")
            with gr.Row():
                g["occupancy"] = gr.Plot(label="Occupancy timeline", elem_id="occupancy", scale=3)
                with gr.Column(scale=2):
                    g["cache_img"] = gr.Image(label="Cache map (click a token)", type="numpy", format="png",
                                              elem_id="cachemap", interactive=False, buttons=["fullscreen"],
                                              height=330)
                    gr.Markdown(CACHE_MAP_LEGEND)
            with gr.Row():
                g["token_plot"] = gr.Plot(label="Token drill-down", elem_id="token_plot", scale=3)
                g["token_info"] = gr.Markdown("Click a token on the heatmap or the cache map to follow it over time.",
                                              elem_id="token_info")
            with gr.Accordion("Numbers: the policy's score against the teacher and the oracle; when each object left "
                              "the cache", open=False, elem_id="numbers"):
                g["numbers_btn"] = gr.Button("Compute (the teacher over every frame + a full-cache run of the same "
                                             "noise)", size="sm", elem_id="numbers_btn")
                g["numbers_note"] = gr.Markdown("", elem_id="numbers_note")
                g["agreement"] = gr.Dataframe(label="Agreement per layer (Spearman in [-1, 1]; recall in [0, 1])",
                                              elem_id="agreement_table", interactive=False)
                g["objects"] = gr.Dataframe(label="Prompted objects: when their tokens left each layer's cache",
                                            elem_id="objects_table", interactive=False)
    return g


def _wire_generate(ex: Explorer, demo, shared: list, g: dict) -> None:
    row = g["row"]
    cfg_in = [*shared, g["policy"], g["budget"], g["unit"], g["params"]]
    view_in = [g["signal"], g["layer"], g["cmap"]]
    view_out = [g["frame_img"], g["preview_img"], g["heat_img"], g["cache_img"], g["occupancy"], g["status"],
                g["hover"], row.scrub, row.live, row.follow]
    action_out = view_out + [g["cli"]]
    served = functools.partial(served_png, folder=g["frame_img"].GRADIO_CACHE)

    def outputs(ws, signal, layer, cmap, set_follow=True, force=False):
        """Every Generate view at the workspace's time: the scrubbed frame, or the newest while following."""
        s = ws.scrub["run"]
        v = ex.view(ws, None if s.follow else s.frame, signal, layer, cmap)
        return (served(v.frame_img), served(v.preview_img), served(v.heat_img), served(v.cache_img), v.occupancy,
                v.status, json.dumps(v.hover), *pushes(s, v.frames_done, v.frame, set_follow, force))

    def cli(ws):
        return ws.run.data.config.cli(ex.custom_models) if ws.run is not None else ""

    def action(fn):
        @errors
        def inner(prompt, seed, frames, guidance, policy, budget, unit, params, signal, layer, cmap,
                  request: gr.Request):
            ws = ex.ws(request.session_hash)
            before = ws.run
            fn(ws, config_from(prompt, seed, frames, guidance, policy, budget, unit, params))
            return outputs(ws, signal, layer, cmap, force=ws.run is not before) + (cli(ws),)
        return inner

    @errors_gen
    def do_run(prompt, seed, frames, guidance, policy, budget, unit, params, signal, layer, cmap,
               request: gr.Request, progress=gr.Progress()):
        ws = ex.ws(request.session_hash)
        before, first = ws.run, True
        for _ in ex.run_iter(ws, config_from(prompt, seed, frames, guidance, policy, budget, unit, params),
                             progress=progress):
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
    run_ev = g["run"].click(do_run, cfg_in + view_in, action_out, api_name="generate", show_progress="minimal",
                            **model)
    g["stop"].click(do_stop, view_in, view_out, api_name="stop", concurrency_limit=None)
    g["reset"].click(do_reset, view_in, view_out + [g["cli"], g["token_plot"], g["token_info"], g["file"],
                                                    g["agreement"], g["objects"], g["numbers_note"]],
                     api_name="reset", **model)
    g["teacher"].click(do_teacher, view_in, view_out + [g["signal"]], api_name="teacher_salience", **model)
    row.wire()
    row.scrub.change(do_view, [row.scrub, row.follow, *view_in], view_out, api_name="view",
                     trigger_mode="always_last", show_progress="hidden", concurrency_limit=None)
    row.follow.change(do_follow, [row.follow, *view_in], view_out, api_visibility="private",
                      show_progress="hidden", concurrency_limit=None)
    for comp in (g["signal"], g["layer"], g["cmap"]):
        comp.change(do_redraw, view_in, view_out, api_visibility="private", trigger_mode="always_last",
                    show_progress="hidden")
    g["signal"].change(lambda s: SIGNALS[s].definition if s in SIGNALS else "", g["signal"], g["signal_help"],
                       api_visibility="private")
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
        if hit is not None:                        # go to the token's frame: the heatmap shows it boxed
            ws.scrub["run"].follow, ws.scrub["run"].frame = False, hit[1]
        fig, info = ex.drill_down(ws, signal)
        return outputs(ws, signal, layer, cmap, set_follow=hit is not None, force=hit is not None) + (fig, info)

    drill_out = view_out + [g["token_plot"], g["token_info"]]
    g["heat_img"].select(pick_heat, view_in, drill_out, api_visibility="private", show_progress="hidden")
    g["cache_img"].select(pick_map, view_in, drill_out, api_visibility="private", show_progress="hidden")

    def redrill(signal, request: gr.Request):
        return ex.drill_down(ex.ws(request.session_hash), signal)
    g["signal"].change(redrill, g["signal"], [g["token_plot"], g["token_info"]], api_visibility="private")
    row.scrub.change(redrill, g["signal"], [g["token_plot"], g["token_info"]], api_visibility="private",
                     trigger_mode="always_last", show_progress="hidden")

    @errors
    def do_numbers(request: gr.Request, progress=gr.Progress()):
        import pandas as pd
        rows, objects, note = ex.salience_numbers(ex.ws(request.session_hash), progress)
        return pd.DataFrame(rows).round(3), pd.DataFrame(objects), note
    g["numbers_btn"].click(do_numbers, None, [g["agreement"], g["objects"], g["numbers_note"]],
                           api_name="salience_numbers", **model)

    # export
    def exporter(kind):
        @errors
        def fn(overlay, signal, layer, frame, request: gr.Request):
            return str(ex.export(ex.ws(request.session_hash), "run", kind, signal if overlay else None, layer, frame))
        return fn
    for kind in ("mp4", "gif", "png", "csv", "json", "zip"):
        g[f"exp_{kind}"].click(exporter(kind), [g["overlay"], g["signal"], g["layer"], row.scrub], g["file"],
                               api_name=f"export_run_{kind}", **model)
    demo.load(do_redraw, view_in, view_out, api_visibility="private")
    g["run_event"], g["refresh"], g["view_out"] = run_ev, do_reset_view, view_out


def launch_kwargs() -> dict:
    from .sessions import DEFAULT_ROOT
    return dict(css=CSS, js=PAGE_JS, allowed_paths=[str(DEFAULT_ROOT)], footer_links=["gradio", "settings"])


__all__ = ["build", "launch_kwargs", "EXAMPLES", "np"]
