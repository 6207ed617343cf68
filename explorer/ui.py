"""The Gradio Blocks of the explorer: layout and wiring only; every action lives in controller.Explorer.

Heavy state stays server-side in a Workspace keyed by the browser session (`request.session_hash`).
Model work shares one queue (`concurrency_id="model"`); views (scrubber, signal, layer) are cheap and
run outside it. Errors are shown as `gr.Error` messages; the app keeps serving.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import numpy as np

from backend.config import SamplerConfig
from backend.kinds import KINDS
from backend.policies import POLICIES
from backend.policies.build import policy_parameters, shared_parameters
from backend.prompt import VOCAB

from .controller import BUDGET_UNITS, Explorer
from .forms import param_form
from .run import MAX_FRAMES, MAX_GUIDANCE
from .scrubber import scrubber_row
from .signals import SIGNALS
from .ui_common import BUDGET_DEFAULT, policy_choices, policy_help
from .ui_compare import compare_tab, wire_compare
from .ui_sessions import sessions_tab, wire_sessions
from .ui_wiring import wire_generate
from .views import cache_map_legend

CMAPS = ["inferno", "viridis", "magma", "turbo"]

PAGE_JS = (Path(__file__).parent / "assets" / "page.js").read_text()  # hotkeys and hover tooltips

DEFINITIONS = (
    """
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
cached model; the default was chosen on validation prompts, `docs/decisions/sampler.md`).
**Salience**: how much a cached token matters for the frames still to come. The heatmap paints one signal
per token of the chosen frame on one fixed colour scale for all frames and runs (grey = not cached / no value).
"""
    + "\n".join(f"- **{s.label}** [{s.unit}]: {s.definition}." for s in SIGNALS.values())
    + """

**Policy parameters** (the *Policy parameters* box, `KEY=VALUE` pairs separated by commas), for every
policy: """
    + shared_parameters()
    + """.

**Policies** (own parameters and defaults in brackets)
"""
    + "\n".join(
        f"- `{name}`: {desc}"
        + (
            " [" + ", ".join(f"{k}={v}" for k, v in policy_parameters(name).items()) + "]"
            if policy_parameters(name)
            else ""
        )
        for name, desc in sorted((n, e.help) for n, e in POLICIES.items())
    )
)

CSS = """
#status, #cmp_status {font-size: 0.9em}
.hidden-data {display: none !important}
.compact-row {gap: 6px}
"""


def build(ex: Explorer) -> gr.Blocks:
    with gr.Blocks(title="KV-cache explorer", fill_width=True, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(
            "## KV-cache explorer · autoregressive video diffusion\n"
            "Generate a video chunk by chunk with a KV-cache policy and watch what the cache keeps. " + _model_line(ex)
        )
        kind = KINDS[ex.kind]
        with gr.Row(elem_classes="compact-row"):
            prompt = gr.Textbox(
                kind.examples[0],
                label="Prompt",
                elem_id="prompt",
                scale=4,
                info=kind.prompt_help + (": " + ", ".join(VOCAB) if kind.world else ""),
            )
            seed = gr.Number(0, label="Seed", precision=0, elem_id="seed", scale=1, minimum=0)
            frames = gr.Number(32, label=f"Frames (1-{MAX_FRAMES})", precision=0, elem_id="frames", scale=1)
            guidance = gr.Number(  # only the world's model has it; elsewhere hidden and None
                SamplerConfig().guidance if kind.guidance else None,
                visible=kind.guidance,
                label="Colour guidance",
                elem_id="guidance",
                scale=1,
                minimum=0,
                maximum=MAX_GUIDANCE,
                step=0.5,
                info="1 = off; pushes sprites to the prompted colours (see Definitions)",
            )
        gr.Examples(list(kind.examples), [prompt], label="Example prompts")
        with gr.Tabs(elem_id="tabs") as tabs:
            with gr.Tab("Generate", id="generate"):
                g = _generate_tab(ex, demo)
            with gr.Tab("Compare", id="compare"):
                c = compare_tab(ex)
            with gr.Tab("Sessions", id="sessions"):
                s = sessions_tab(ex)
            with gr.Tab("Definitions", id="definitions"):
                gr.Markdown(DEFINITIONS, elem_id="definitions_text")
        wire_generate(ex, demo, [prompt, seed, frames, guidance], g)
        wire_compare(ex, [prompt, seed, frames, guidance], c)
        wire_sessions(ex, demo, s, g, c, tabs)

        def cleanup(request: gr.Request):
            ex.registry.drop(request.session_hash)

        demo.unload(cleanup)
    return demo


def _model_line(ex: Explorer) -> str:
    geo = ex.model.geometry
    if not ex.world:
        shape = (
            f"{geo.n_layer} blocks, {geo.n_head} heads x {geo.head_dim}; {geo.grid[0]}x{geo.grid[1]} tokens per "
            f"latent frame over {geo.frame_size[0]}x{geo.frame_size[1]} pixels, {geo.pixel_frames} video frames "
            f"per latent frame; frames count latent frames"
        )
        return f"Model: the Wan generator `{ex.meta_model.get('model', '')}` ({shape}; `docs/wan.md`)."
    if ex.custom_models:
        return f"Model: the student in `{ex.custom_models}` ({ex.model_hash[:8]})."
    return "Model: the shipped student (see `assets/models/MODEL_CARD.md`)."


# ============================================================================ Generate
def _generate_tab(ex: Explorer, demo: gr.Blocks) -> dict:
    g = {}
    with gr.Row():
        with gr.Column(scale=1, min_width=330):
            g["policy"] = gr.Dropdown(policy_choices(), value="window", label="Cache policy", elem_id="policy")
            g["policy_help"] = gr.Markdown(policy_help("window"), elem_id="policy_help")
            g["unit"] = gr.Radio(list(BUDGET_UNITS), value="frames", label="Budget unit", elem_id="budget_unit")
            st, v = BUDGET_DEFAULT["frames"]
            g["budget"] = gr.Number(
                v,
                step=st,
                label="Cache budget per layer (frames)",
                elem_id="budget",
                info="holds after each eviction; 0 and above the full cache are rejected, as on the command line",
            )
            g["params"] = gr.Textbox(
                "",
                label="Policy parameters",
                placeholder="e.g. alpha=0.3, storage=int4",
                elem_id="params",
                info="KEY=VALUE pairs; the form below writes them",
            )
            with gr.Accordion("Parameter form", open=False, elem_id="param_form"):
                param_form(g["policy"], g["params"], demo)
            with gr.Row(elem_classes="compact-row"):
                g["step"] = gr.Button("Step", elem_id="step_btn", size="sm")
                g["step_frame"] = gr.Button("Step frame", elem_id="step_frame_btn", size="sm")
                g["run"] = gr.Button("Run", variant="primary", elem_id="run_btn", size="sm")
                g["stop"] = gr.Button("Stop", variant="stop", elem_id="stop_btn", size="sm")
                g["reset"] = gr.Button("Reset", elem_id="reset_btn", size="sm")
            g["status"] = gr.Markdown("No run yet.", elem_id="status")
            g["cli"] = gr.Textbox(
                "",
                label="This run from the command line",
                elem_id="cli_command",
                lines=2,
                interactive=False,
                buttons=["copy"],
                max_lines=4,
            )
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
                g["frame_img"] = gr.Image(
                    label="Frame",
                    type="numpy",
                    format="png",
                    elem_id="frame",
                    interactive=False,
                    buttons=["download", "fullscreen"],
                    height=280,
                )
                g["preview_img"] = gr.Image(
                    label="Denoise preview",
                    type="numpy",
                    format="png",
                    elem_id="preview",
                    interactive=False,
                    buttons=["fullscreen"],
                    height=280,
                )
                g["heat_img"] = gr.Image(
                    label="Salience heatmap (click a token)",
                    type="numpy",
                    format="png",
                    elem_id="heatmap",
                    interactive=False,
                    buttons=["download", "fullscreen"],
                    height=280,
                )
            g["row"] = scrubber_row("", "Frame: the time every view shows (← / → keys)")
            with gr.Row(elem_classes="compact-row"):
                g["signal"] = gr.Dropdown(
                    [(s.label, k) for k, s in SIGNALS.items()],
                    value="score",
                    label="Salience signal",
                    elem_id="signal",
                    scale=2,
                )
                layers = ["mean"] + [f"layer {i}" for i in range(ex.model.geometry.n_layer)]
                g["layer"] = gr.Dropdown(layers, value="mean", label="Layer", elem_id="layer", scale=1)
                g["cmap"] = gr.Dropdown(CMAPS, value="inferno", label="Colour map", elem_id="cmap", scale=1)
                g["teacher"] = gr.Button("Teacher salience", size="sm", elem_id="teacher_btn", scale=1)
            g["hover"] = gr.Textbox("{}", elem_id="hover_data", elem_classes="hidden-data", container=False)
            g["signal_help"] = gr.Markdown(SIGNALS["score"].definition, elem_id="signal_help")
            with gr.Row():
                g["occupancy"] = gr.Plot(label="Occupancy timeline", elem_id="occupancy", scale=3)
                with gr.Column(scale=2):
                    g["cache_img"] = gr.Image(
                        label="Cache map (click a token)",
                        type="numpy",
                        format="png",
                        elem_id="cachemap",
                        interactive=False,
                        buttons=["fullscreen"],
                        height=330,
                    )
                    gr.Markdown(cache_map_legend(*ex.model.geometry.grid, ex.model.geometry.n_prompt))
            with gr.Row():
                g["token_plot"] = gr.Plot(label="Token drill-down", elem_id="token_plot", scale=3)
                g["token_info"] = gr.Markdown(
                    "Click a token on the heatmap or the cache map to follow it over time.", elem_id="token_info"
                )
            with gr.Accordion(
                "Numbers: the policy's score against the teacher and the oracle; when each object left the cache",
                open=False,
                elem_id="numbers",
            ):
                g["numbers_btn"] = gr.Button(
                    "Compute (the teacher over every frame + a full-cache run of the same noise)",
                    size="sm",
                    elem_id="numbers_btn",
                )
                g["numbers_note"] = gr.Markdown("", elem_id="numbers_note")
                g["agreement"] = gr.Dataframe(
                    label="Agreement per layer (Spearman in [-1, 1]; recall in [0, 1])",
                    elem_id="agreement_table",
                    interactive=False,
                )
                g["objects"] = gr.Dataframe(
                    label="Prompted objects: when their tokens left each layer's cache",
                    elem_id="objects_table",
                    interactive=False,
                )
    return g


def launch_kwargs() -> dict:
    from .sessions import DEFAULT_ROOT

    return dict(css=CSS, js=PAGE_JS, allowed_paths=[str(DEFAULT_ROOT)], footer_links=["gradio", "settings"])


__all__ = ["build", "launch_kwargs", "np"]
