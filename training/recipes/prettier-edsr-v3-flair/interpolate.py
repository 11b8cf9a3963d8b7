"""Weight-space interpolation (WiSE-FT) of a conditioned fine-tune with the unconditioned model it started from.

    python training/recipes/prettier-edsr-v3-flair/interpolate.py prettier-edsr-v2 prettier-edsr-v3 0.5 OUT.pt

Every shared tensor becomes alpha * fine-tuned + (1 - alpha) * base. The FiLM's last layer (zero in a model that
starts from the base, see sr/models/common.py) is scaled by alpha; its first layer is kept. alpha = 0 computes
exactly what the base computes, alpha = 1 the fine-tune. Between two conditioned models (a base with a FiLM)
every tensor is blended. Issue 12, CPU session 2026-11-25; conditioned pairs 2026-11-26.
"""
import sys

from prettier_bids.sr.models import load_weights, resolve_weights, save_weights


def _load(spec):
    """(model, payload) of a shipped model name or a ``.pt`` file (the rule of ``reconstruct.load_models``)."""
    return load_weights(resolve_weights(path=spec) if spec.endswith(".pt") else resolve_weights(spec))


def main(base, tuned, alpha, out):
    (_, b), (model, t), a = _load(base), _load(tuned), float(alpha)
    state = {}
    for key, value in t["state_dict"].items():
        if key.startswith("film.") and key in b["state_dict"]:  # two conditioned models: blend their FiLMs too
            state[key] = a * value + (1 - a) * b["state_dict"][key]
        elif key.startswith("film.net.2"):
            state[key] = a * value
        elif key.startswith("film."):
            state[key] = value.clone()
        else:
            state[key] = a * value + (1 - a) * b["state_dict"][key]
    model.load_state_dict(state)
    save_weights(out, model, t["arch"], t["config"], meta=dict(t.get("meta", {}), name=f"wise{round(a * 100)}"))


if __name__ == "__main__":
    main(*sys.argv[1:5])
