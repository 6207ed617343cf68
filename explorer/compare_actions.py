"""The Compare tab's actions (a mixin of controller.Explorer): choose configurations (a comparison, or a budget
sweep), run them in lockstep against the full cache, save them, and build what the tab shows."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from . import figures, views
from .compare import MAX_CONFIGS, SWEEP_MAX, Comparison
from .persist import save_runs
from .run import RunConfig
from .state import Workspace

SHARES = {"1/16": 6.25, "1/8": 12.5, "1/4": 25.0, "1/2": 50.0}


@dataclass
class CompareView:
    grid: np.ndarray
    wipe: tuple[np.ndarray, np.ndarray]
    diff: np.ndarray
    psnr: object
    table: list[dict]
    status: str
    frame: int
    frames_done: int
    sweep: object = None  # quality against budget (figures.budget_figure)


class CompareActions:
    """Compare-tab actions; the Explorer supplies model, ae, head, store, custom_models, _stream and _meta."""

    def sweep_configs(self, base: RunConfig, policies: list[str]) -> tuple[list[RunConfig], str]:
        """A budget sweep: the chosen policies at every share (1/16 ... 1/2) of the full cache, leaving out the
        shares below what a policy always keeps at this length (said in the returned note)."""
        from backend.policies import make_policy
        from backend.policies.build import budget_tokens

        cfg = self.model.geometry
        fits, skipped = [], []
        for c in self.compare_configs(base, policies, list(SHARES), "", limit=SWEEP_MAX):
            need = make_policy(c.policy).min_budget(cfg.n_prompt, cfg.tokens_per_frame, cfg.chunk_frames)
            (fits if budget_tokens(c.budget, cfg, c.frames) >= need else skipped).append(c)
        if not fits:
            raise ValueError(
                f"every share of {base.frames} frames is below what these policies always keep: sweep a longer video"
            )
        note = (
            ("left out, below what the policy always keeps at this length: " + ", ".join(c.label for c in skipped))
            if skipped
            else ""
        )
        return fits, note

    def compare_configs(
        self, base: RunConfig, policies: list[str], shares: list[str], custom: str, limit: int = MAX_CONFIGS
    ) -> list[RunConfig]:
        budgets = [f"{SHARES[s]:g}%" for s in shares if s in SHARES]
        unknown = [s for s in shares if s not in SHARES]
        if unknown:
            raise ValueError(f"unknown budget choice {unknown[0]!r}; use {', '.join(SHARES)} or a custom budget")
        budgets += [b.strip() for b in (custom or "").split(",") if b.strip()]
        policies = [p for p in policies if p != "full"]
        if not policies:
            raise ValueError("choose at least one policy to compare with the full cache")
        if not budgets:
            raise ValueError("choose at least one budget")
        configs = [replace(base, policy=p, budget=b, params="") for p in policies for b in budgets]
        if len(configs) > limit:
            raise ValueError(
                f"{len(policies)} policies x {len(budgets)} budgets = {len(configs)} configurations; "
                f"compare at most {limit} at once"
            )
        return configs

    def compare_iter(self, ws: Workspace, configs: list[RunConfig], every_s: float = 0.4, progress=None):
        """Run a comparison in lockstep; the same configurations after Stop continue the paused one."""
        with ws.lock:
            for c in configs:  # validates budgets against the model and length
                c.validate()
            cmp = ws.compare
            if cmp is None or cmp.finished or cmp.requested != configs:
                cmp = Comparison.start(
                    configs, self.model, self.ae, self.head, progress, self.custom_models, limit=SWEEP_MAX
                )  # compare_configs / sweep_configs set the user's limits
                ws.compare, ws.compare_saved = cmp, None
            cmp.pause_requested = False
            ws.scrub["compare"].follow = True
        yield from self._stream(
            ws, "compare", cmp, lambda: ws.compare is cmp, lambda: self.autosave_compare(ws), every_s, progress
        )

    def autosave_compare(self, ws: Workspace) -> str | None:
        cmp = ws.compare
        if cmp is None or cmp.frames_done == 0:
            return None
        n = cmp.frames_done
        if ws.compare_saved and ws.compare_saved[1] == n:
            return ws.compare_saved[0]
        if ws.compare_saved:
            try:
                self.store.delete(ws.compare_saved[0])
            except ValueError:
                pass
        name = "compare-" + "-".join(sorted({d.config.policy for d in cmp.datas}))
        sid = save_runs(self.store, name, "compare", cmp.datas, cmp.reference, self._meta())
        ws.compare_saved = (sid, n)
        return sid

    def compare_view(self, ws: Workspace, frame: int | None, a_label: str | None = None) -> CompareView:
        with ws.lock:
            cmp = ws.compare
            if cmp is None:
                blank = np.full((256, 256, 3), 245, np.uint8)
                return CompareView(
                    blank,
                    (blank, blank),
                    blank,
                    figures.quality_figure({}),
                    [],
                    "No comparison yet: choose policies and budgets, then **Compare**.",
                    0,
                    0,
                    figures.budget_figure({}),
                )
            n = cmp.frames_done
            f = n - 1 if frame is None else int(np.clip(int(frame), 0, max(n - 1, 0)))
            ref = cmp.datas[cmp.reference]
            others = [d for i, d in enumerate(cmp.datas) if i != cmp.reference]
            a = next((d for d in others if d.config.label == a_label), others[0] if others else ref)
            cols = min(len(cmp.datas), 4)
            paused = cmp.pause_requested and not cmp.finished
            metrics = cmp.metrics()
            lines = [
                f"{n}/{cmp.runs[0].data.config.frames} frames in lockstep · reference: full cache, same seed "
                "and noise" + (" · **paused**: Compare with the same choices continues it" if paused else ""),
                f"saved as session `{ws.compare_saved[0]}`" if ws.compare_saved else "",
                cmp.reference_warning(),
                blank_cells_note(metrics, cmp.datas[0].config.prompt),
            ]
            return CompareView(
                views.compare_grid(cmp.datas, f, cols),
                views.wipe_pair(a, ref, f),
                views.diff_view(a, ref, f),
                figures.quality_figure(cmp.psnr_curves(), current_frame=f, sink=cmp.sink_curves()),
                metrics,
                "  \n".join(x for x in lines if x),
                f,
                n,
                figures.budget_figure(cmp.sweep_points()),
            )


def blank_cells_note(rows: list[dict], prompt: str) -> str:
    """Why some cells of the metrics table are blank (NaN), for the columns that have blanks."""
    from backend.world import WorldConfig

    why = {
        "identity": "no sprite was hidden for 3+ frames and came back, so there is nothing to score",
        "landmark revisit": (
            "the prompt has no camera pan"
            if "pan" not in prompt
            else f"the video is shorter than one pan period ({WorldConfig().pan_period} frames)"
        ),
        "PSNR vs full (dB)": "no frame differs from the full cache yet",
        "SSIM vs full": "no frame differs from the full cache yet",
    }
    blank = [k for k in why if any(isinstance(r.get(k), float) and not np.isfinite(r[k]) for r in rows)]
    return ("*Blank cells*: " + "; ".join(f"**{k}**: {why[k]}" for k in blank) + ".") if blank else ""
