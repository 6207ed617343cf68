"""Training plumbing: every stage runs, writes safetensors and resumes from its state (tiny sizes)."""
from safetensors import safe_open

from backend import checkpoint
from backend.train.__main__ import main


def test_stages_run_export_and_resume(tmp_path):
    runs, models = tmp_path / "runs", tmp_path / "models"
    common = ["--recipe", "quick", "--runs-dir", str(runs), "--models-dir", str(models)]
    main(["ae", "--steps", "2", *common])
    main(["teacher", "--steps", "2", "--preset", "tiny", *common])
    main(["student", "--steps", "2", "--preset", "tiny", *common])
    for name in ("autoencoder", "teacher", "student"):
        _, cfg, extra = checkpoint.read(models / f"{name}.safetensors")
        assert cfg
    with safe_open(str(runs / "student" / "state.safetensors"), "pt") as f:
        assert f.metadata()["step"] == "2"
    main(["student", "--steps", "3", "--preset", "tiny", *common])       # resumes at 2, runs one more
    with safe_open(str(runs / "student" / "state.safetensors"), "pt") as f:
        assert f.metadata()["step"] == "3"
    assert (runs / "student" / "log.jsonl").read_text().count("next_frame_mse") == 2
    main(["salience", "--steps", "3", *common])
    _, _, extra = checkpoint.read(models / "salience_head.safetensors")
    assert len(extra["heldout"]["spearman_per_layer"]) == 2 and extra["labels"] == "sse"
    main(["salience", "--steps", "2", "--labels", "hindsight", *common])
    _, _, extra = checkpoint.read(models / "salience_head_hindsight.safetensors")
    assert extra["labels"] == "hindsight" and len(extra["heldout"]["recall_top25_per_layer"]) == 2
    enc_before = checkpoint.read(models / "autoencoder.safetensors")[0]
    main(["decoder", "--steps", "2", *common])
    enc_after = checkpoint.read(models / "autoencoder.safetensors")[0]
    changed = {k for k in enc_before if not (enc_before[k] == enc_after[k]).all()}
    assert changed and all(k.startswith("decoder.") for k in changed)     # the latent space is untouched
