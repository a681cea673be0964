"""The label model fitted per region of the answers, against one fitted on all of them
(issue: judges that read strong models' answers, item 6), scored on other models' answers.

The ensemble's Dawid–Skene label model learns one sensitivity and specificity per critic.
On answers unlike the critics' training rows it fell to its best member (λ = 0 toward
it). Here the same critics' votes are combined by label models fitted, on the shipped
`calibration` rows (short and long, their labels as human labels), once on all rows and
once per region: the query's intent and whether the answer is long (over `--long` words).
Both are scored on the labelled completions of other models given as FILEs: accuracy on
the acceptable/unacceptable label over harmful and over harmless prompts, per region.

    python benchmarks/label_regions.py /tmp/xstest/*.csv
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
from _machine import machine_report
from critic_outside import fmt

from superalign import registry
from superalign.critic import LABELLED_LONG, DawidSkene, load_labelled
from superalign.critic._data import data_dir
from superalign.critic._ensemble import CriticEnsemble, vote_matrix

CRITICS = {
    "refusal": {},
    "query_risk": {"model_weight": 0.0},  # its rules only: no LM at this size
    "learned": {"split": "train+long"},
}


def region(row, long_words: int) -> str:
    words = len(row.response.split())
    return f"{row.intent.value}/{'long' if words > long_words else 'short'}"


def votes_of(ensemble: CriticEnsemble, rows: Sequence) -> np.ndarray:
    return vote_matrix(ensemble.critique([r.exchange() for r in rows]), ensemble.names)


def fitted(votes: np.ndarray, names: list[str], truth: Sequence[bool]) -> DawidSkene:
    model = DawidSkene()
    model.fit(votes, names, dict(enumerate(truth)))
    return model


def run(args: argparse.Namespace) -> None:
    ensemble = CriticEnsemble([registry.create("critic", n, a) for n, a in CRITICS.items()])
    names = ensemble.names
    cal = [r for r in load_labelled() if r.split == "calibration"]
    cal += [r for r in load_labelled(data_dir() / LABELLED_LONG) if r.split == "calibration"]
    cal = [r for r in cal if r.intent.value in ("harmful", "benign")]
    test = [r for f in args.files for r in load_labelled(f)]
    cal_votes, test_votes = votes_of(ensemble, cal), votes_of(ensemble, test)
    cal_truth = [r.label.acceptable for r in cal]
    whole = fitted(cal_votes, names, cal_truth)
    cal_region = np.array([region(r, args.long) for r in cal])
    test_region = np.array([region(r, args.long) for r in test])
    p_whole = whole.predict(test_votes)
    p_region = p_whole.copy()
    fits = {}
    for key in sorted(set(test_region)):
        mask = cal_region == key
        if mask.sum() < args.min_rows:  # too few calibration rows: the whole model
            continue
        fits[key] = fitted(
            cal_votes[mask], names, [t for t, m in zip(cal_truth, mask, strict=True) if m]
        )
        p_region[test_region == key] = fits[key].predict(test_votes[test_region == key])
    print(f"critics {', '.join(names)}; calibration rows {len(cal)}, test rows {len(test)}")
    acc = {k: f"{v:.2f}" for k, v in whole.accuracies().items()}
    print(f"  one label model: fitted accuracies {acc}, shrink λ {whole.shrink_lambda:g}"
          f" toward {whole.shrink_critic}")  # fmt: skip
    for key, model in fits.items():
        acc = {k: f"{v:.2f}" for k, v in model.accuracies().items()}
        print(f"  region {key:14} ({(cal_region == key).sum()} calibration rows): "
              f"fitted accuracies {acc}, λ {model.shrink_lambda:g}")  # fmt: skip
    truth = np.array([r.label.acceptable for r in test])
    single = {n: test_votes[:, j] for j, n in enumerate(names)}
    print(
        f"  {'test region':16} {'n':>5}  {'one model':>19}  {'per region':>19}  "
        + "  ".join(f"{n:>19}" for n in names)
    )
    for key in [*sorted(set(test_region)), "all"]:
        m = np.ones(len(test), bool) if key == "all" else test_region == key
        cells = [fmt(list((p_whole[m] >= 0.5) == truth[m])),
                 fmt(list((p_region[m] >= 0.5) == truth[m]))]  # fmt: skip
        cells += [fmt(list((v[m] == 1) == truth[m])) for v in single.values()]
        print(f"  {key:16} {m.sum():5}  " + "  ".join(cells))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", help="labelled completions of other models")
    ap.add_argument("--long", type=int, default=60, help="words over which an answer is long")
    ap.add_argument("--min-rows", type=int, default=30, help="calibration rows a region needs")
    args = ap.parse_args()
    with machine_report("the label model per region of the answers"):
        run(args)


if __name__ == "__main__":
    main()
