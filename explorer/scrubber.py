"""The frame scrubber of a tab: ◀ slider ▶ and *Follow live*, one time axis for every view of the tab.

Rules that keep it from ever locking the app:
- the slider clamps an out-of-range value to its range instead of rejecting it (`FrameSlider`), and ◀ / ▶
  clamp in the browser to the slider's own range;
- no action (Step, Run, Reset, Compare) takes the scrubber as an input: the server keeps the scrubbed frame
  (`state.Scrub`), so a stale or odd value can only ever affect the view, never a run;
- while following live, the server pushes the newest frame into a hidden number (`live`) and the browser
  copies it to the slider only while *Follow live* is ticked: a user's ◀ / ▶ / drag unticks it in the same
  browser step, so a streamed update can never take the scrubber back.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr


class FrameSlider(gr.Slider):
    """A gr.Slider whose out-of-range values are clamped to [minimum, maximum] (Gradio's own raises)."""

    def get_block_name(self) -> str:
        return "slider"

    def preprocess(self, payload):
        if payload is None:
            return None
        v = min(max(float(payload), float(self.minimum)), float(self.maximum))
        return int(round(v))


@dataclass
class ScrubberRow:
    prev: gr.Button
    scrub: FrameSlider
    next: gr.Button
    follow: gr.Checkbox
    live: gr.Number

    def wire(self) -> None:
        """The browser-side moves: ◀ / ▶ clamp to the range and untick Follow live; a drag unticks it; the
        pushed newest frame reaches the slider only while Follow live is ticked."""
        sid = self.scrub.elem_id
        self.prev.click(
            None,
            self.scrub,
            [self.scrub, self.follow],
            js="(i) => [Math.max(0, Math.round(Number(i) || 0) - 1), false]",
        )
        self.next.click(
            None,
            self.scrub,
            [self.scrub, self.follow],
            js=f"(i) => {{ const r = document.querySelector('#{sid} input[type=range]'); "
            "const m = r ? Number(r.max) : Number(i) + 1; "
            "return [Math.max(0, Math.min(m, Math.round(Number(i) || 0) + 1)), false]; }",
        )
        self.scrub.input(None, None, self.follow, js="() => false")
        self.live.change(
            None,
            [self.live, self.follow, self.scrub],
            self.scrub,
            js="(l, f, s) => (f && l !== null && l >= 0) ? l : s",
        )
        self.follow.change(
            None,
            [self.follow, self.live, self.scrub],
            self.scrub,
            js="(f, l, s) => (f && l !== null && l >= 0) ? l : s",
        )


def scrubber_row(prefix: str, label: str) -> ScrubberRow:
    """◀ slider ▶ and *Follow live*, with elem_ids `{prefix}prev_frame`-style names the hotkeys click."""
    ids = {
        "": ("prev_frame", "scrubber", "next_frame", "follow", "live_frame"),
        "cmp_": ("cmp_prev", "cmp_scrubber", "cmp_next", "cmp_follow", "cmp_live_frame"),
    }[prefix]
    with gr.Row(elem_classes="compact-row"):
        prev = gr.Button("◀", size="sm", elem_id=ids[0], scale=0, min_width=40)
        scrub = FrameSlider(0, 1, value=0, step=1, label=label, elem_id=ids[1], scale=6)
        nxt = gr.Button("▶", size="sm", elem_id=ids[2], scale=0, min_width=40)
        follow = gr.Checkbox(
            True, label="Follow live", elem_id=ids[3], scale=0, min_width=110, info="views follow the newest frame"
        )
    live = gr.Number(-1, precision=0, elem_id=ids[4], elem_classes="hidden-data", container=False)
    return ScrubberRow(prev, scrub, nxt, follow, live)


def pushes(state, frames_done: int, frame: int, set_follow: bool = True, force: bool = False):
    """Outputs for (scrub, live, follow) after the server drew `frame`: the slider's range always; the newest
    frame pushed while following; the follow box when the action decides it (Step, Run, Reset); `force` sets
    the slider itself too (a new run, a reset, a reloaded session: nothing of the user's to keep)."""
    top = max(frames_done - 1, 1)  # Gradio needs minimum < maximum; views clamp to the frames made
    live = state.push(frame) if state.follow else gr.skip()
    slider = gr.Slider(minimum=0, maximum=top, value=frame) if force else gr.Slider(minimum=0, maximum=top)
    return slider, live, gr.Checkbox(value=state.follow) if set_follow else gr.skip()


def follow_toggled(state, follow) -> bool:
    """Record the Follow live box; True when the views must redraw (it was just ticked: go to the newest)."""
    if bool(follow) == state.follow:
        return False
    state.follow = bool(follow)
    return state.follow


def scrubbed(state, frame, follow_in_browser) -> bool:
    """Record a change of the slider; False when it only echoes a value the server pushed while following
    (nothing to redraw). A user's move stops following."""
    frame = int(frame or 0)
    if state.is_echo(frame, bool(follow_in_browser)):
        return False
    state.follow = False
    state.frame = frame
    return True
