"""Which way SGML's attribute weighting should point, on validation folds only.

    .venv/bin/python benchmarks/sgml_weighting.py --seeds 0 1 2

The `sgml` experiment of params.yaml (its `default`: METHODS.md's reconstructed form, negatives
that share attributes down-weighted by ``(1 − g)^kappa``) against the other readings of its
weighting, one change at a time: no weighting, negatives that share attributes weighted up
(``kappa < 0``), positives weighted by ``(1 + g)^pos_kappa`` either way. Each is trained as the
train stage trains it and scored by its selected epoch's validation MAP@R (the test classes are
never read), with its paired difference against the default over the same seeds
(``recipe_sweep.py`` does the work). Writes benchmarks/results/sgml_weighting.json.
"""

from __future__ import annotations

from recipe_sweep import main

WEIGHTINGS = {
    "default": {},
    "no weighting (kappa 0)": {"loss.kappa": 0.0},
    "negatives up (kappa -1)": {"loss.kappa": -1.0},
    "positives sharing much up (pos_kappa 1)": {"loss.pos_kappa": 1.0},
    "positives sharing little up (pos_kappa -1)": {"loss.pos_kappa": -1.0},
}

if __name__ == "__main__":
    main(WEIGHTINGS, doc=__doc__, experiments=("sgml",), out="benchmarks/results/sgml_weighting.json")
