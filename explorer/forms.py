"""The typed parameter form of the Generate tab: one input per parameter of the chosen policy, with its type,
default, range and unit from the policy's own fields (`backend.policies.params`). The form writes the
`KEY=VALUE` text (what runs and the API take; only values that differ from the defaults), and is drawn anew
when the policy changes or the text is edited by hand, so both always say the same."""

from __future__ import annotations

import gradio as gr

from backend.policies.params import Param, is_own, parameters
from backend.settings import parse_params


def _input(p: Param, value):
    unit = f" [{p.spec.unit}]" if p.spec.unit else ""
    label, info = f"{p.name}{unit}", f"{p.spec.help} (default {p.default})"
    if p.kind == "bool":
        return gr.Checkbox(bool(value), label=label, info=info)
    if p.choices:
        choices = list(p.choices) + (["none"] if p.optional else [])
        v = "none" if value is None else str(value)
        return gr.Dropdown(choices, value=v if v in choices else choices[0], label=label, info=info)
    if p.kind in ("int", "float"):
        return gr.Number(
            value, label=label, info=info, precision=0 if p.kind == "int" else None, step=1 if p.kind == "int" else 0.05
        )
    return gr.Textbox("" if value is None else str(value), label=label, info=info)


def form_text(params: list[Param], values: list) -> str:
    """'k=v, ...' for the values that differ from the policy's defaults, in the form's order."""
    out = []
    for p, v in zip(params, values):
        if p.kind == "int" and isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, str) and v == "none" and p.optional:
            v = None
        if v is None and not p.optional:
            continue
        if v != p.default:
            out.append(f"{p.name}={'none' if v is None else v}")
    return ", ".join(out)


def param_form(policy: gr.Dropdown, text: gr.Textbox, demo: gr.Blocks) -> None:
    """Render the form for `policy` here (inside the caller's layout); edits write `text`."""

    @gr.render(inputs=[policy, text], triggers=[policy.change, text.blur, text.submit, demo.load])
    def form(name, current):
        if not name:
            return
        try:
            cur = parse_params(current)
        except ValueError:
            cur = {}
        ps = list(parameters(name).values())
        own = [p for p in ps if is_own(p)]
        shared = [p for p in ps if not is_own(p)]
        comps = []
        with gr.Row(elem_classes="compact-row"):
            for p in own:
                comps.append(_input(p, cur.get(p.name, p.default)))
        if not own:
            gr.Markdown("*This policy has no parameters of its own.*")
        with gr.Accordion("Shared: storage, RoPE, layer split, probes, period", open=False):
            with gr.Row(elem_classes="compact-row"):
                for p in shared:
                    comps.append(_input(p, cur.get(p.name, p.default)))
        order = own + shared

        def write(*values):
            return form_text(order, list(values))

        for c in comps:
            events = [c.change] if isinstance(c, (gr.Checkbox, gr.Dropdown)) else [c.blur, c.submit]
            for ev in events:
                ev(write, comps, text, api_visibility="private", show_progress="hidden")
