"""The Sessions tab: saved sessions (reload, delete, save as) and the runs across them."""

from __future__ import annotations

import gradio as gr

from .controller import Explorer
from .ui_common import errors


def sessions_tab(ex: Explorer) -> dict:
    s = {}
    gr.Markdown(
        "Every run and comparison is saved under `sessions/<id>/` (config, model hash, library versions, "
        "frames, step records). Reloading renders it without recomputing."
    )
    with gr.Row(elem_classes="compact-row"):
        s["refresh"] = gr.Button("Refresh", size="sm", elem_id="sessions_refresh")
        s["id"] = gr.Textbox("", label="Session id", elem_id="session_id", scale=3)
        s["load"] = gr.Button("Reload", variant="primary", size="sm", elem_id="session_load")
        s["delete"] = gr.Button("Delete", variant="stop", size="sm", elem_id="session_delete")
    with gr.Row(elem_classes="compact-row"):
        s["name"] = gr.Textbox("", label="Save the current run as", elem_id="session_name", scale=3)
        s["save"] = gr.Button("Save", size="sm", elem_id="session_save")
    s["msg"] = gr.Markdown("", elem_id="session_msg")
    s["table"] = gr.Dataframe(
        headers=["id", "kind", "created", "frames", "summary"],
        label="Saved sessions",
        elem_id="sessions_table",
        interactive=False,
        wrap=True,
    )
    s["problems"] = gr.Markdown("", elem_id="session_problems")
    with gr.Accordion(
        "Runs across sessions: a sortable table; PSNR and occupancy curves over each other",
        open=False,
        elem_id="runs_panel",
    ):
        s["runs_build"] = gr.Button("Build the runs table (reads every session)", size="sm", elem_id="runs_build")
        s["runs"] = gr.Dataframe(
            label="Every saved run (sort from a header's ⋮ menu; PSNR/SSIM against its full-cache "
            "run with the same noise, blank when none is saved)",
            elem_id="runs_table",
            interactive=False,
            wrap=True,
        )
        with gr.Row(elem_classes="compact-row"):
            s["runs_pick"] = gr.Dropdown([], multiselect=True, label="Runs to overlay", elem_id="runs_pick", scale=4)
            s["runs_overlay"] = gr.Button("Overlay", size="sm", elem_id="runs_overlay_btn", scale=1)
        with gr.Row():
            s["runs_psnr"] = gr.Plot(label="Per-frame PSNR", elem_id="runs_psnr")
            s["runs_occ"] = gr.Plot(label="KV cache after each eviction", elem_id="runs_occ")
    return s


def wire_sessions(ex: Explorer, demo, s: dict, g: dict, c: dict, tabs) -> None:
    def listing():
        rows, note = ex.sessions()
        return rows or [["", "", "", None, "no sessions yet"]], note

    s["refresh"].click(listing, None, [s["table"], s["problems"]], api_name="list_sessions")
    demo.load(listing, None, [s["table"], s["problems"]], api_visibility="private")

    @errors
    def do_load(sid, signal, layer, cmap, request: gr.Request):
        ws = ex.ws(request.session_hash)
        kind = ex.load_session(ws, str(sid or "").strip())
        msg = f"reloaded `{sid}` ({kind})"
        return msg, gr.Tabs(selected="compare" if kind == "compare" else "generate")

    @errors
    def do_delete(sid, request: gr.Request):
        ex.delete_session(ex.ws(request.session_hash), str(sid or "").strip())
        return f"deleted `{sid}`"

    @errors
    def do_save(name, request: gr.Request):
        sid = ex.save_as(ex.ws(request.session_hash), str(name or ""))
        return f"saved as `{sid}`"

    def select_row(evt: gr.SelectData, table):
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        try:
            return str(table.iloc[row, 0]) if hasattr(table, "iloc") else str(table[row][0])
        except Exception:
            return ""

    table_out = [s["table"], s["problems"]]
    ev = s["load"].click(
        do_load, [s["id"], g["signal"], g["layer"], g["cmap"]], [s["msg"], tabs], api_name="load_session"
    )
    ev.success(listing, None, table_out, api_visibility="private")
    ev.success(g["refresh"], [g["signal"], g["layer"], g["cmap"]], g["view_out"], api_visibility="private")
    ev.success(c["refresh"], [c["a"]], c["out"], api_visibility="private")
    s["delete"].click(do_delete, s["id"], s["msg"], api_name="delete_session").success(
        listing, None, table_out, api_visibility="private"
    )
    s["save"].click(do_save, s["name"], s["msg"], api_name="save_session").success(
        listing, None, table_out, api_visibility="private"
    )
    s["table"].select(select_row, s["table"], s["id"], api_visibility="private")

    @errors
    def build_runs(progress=gr.Progress()):
        import pandas as pd

        rows, keys = ex.runs_table(progress)
        table = pd.DataFrame(rows).round(3) if rows else pd.DataFrame({"run": []})
        return table, gr.Dropdown(choices=keys, value=keys[:4])

    @errors
    def overlay(keys):
        return ex.runs_overlay(list(keys or []))

    s["runs_build"].click(build_runs, None, [s["runs"], s["runs_pick"]], api_name="runs_table")
    s["runs_overlay"].click(overlay, s["runs_pick"], [s["runs_psnr"], s["runs_occ"]], api_name="runs_overlay")
