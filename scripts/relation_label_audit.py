"""Audit ShapesVQA's relation labels against the objects' pixel centres.

Relation truth is decided by grid cell (see ``visiondrop.data.shapes``): two objects in
one column are neither left nor right of each other. This counts the held-out relation
questions whose pair shares a row or column, how many of those the centres contradict,
and (from a committed fidelity table) how many of them the full model got wrong.

    python scripts/relation_label_audit.py [--fidelity docs/fidelity/fidelity.json]
"""

from __future__ import annotations

import argparse
import re

from visiondrop.data import shapes
from visiondrop.eval import fidelity
from visiondrop.eval.vqa import items_of

PATTERN = re.compile(r"is the (\w+) (\w+) (left of|right of|above|below) the (\w+) (\w+) \?")


def centre_truth(a: shapes.SceneObject, b: shapes.SceneObject, relation: str) -> bool:
    (ax, ay), (bx, by) = a.center, b.center
    return {"left of": ax < bx, "right of": ax > bx, "above": ay < by, "below": ay > by}[relation]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fidelity", default="docs/fidelity/fidelity.json", help="committed fidelity.json")
    args = parser.parse_args(argv)
    items = items_of(shapes.heldout())
    full = fidelity.load(args.fidelity).full
    if len(full.correct) != len(items):
        parser.error(f"--fidelity: {args.fidelity} covers {len(full.correct)} questions, not the {len(items)} held out")
    relation = shared = contradicted = wrong_shared = wrong_contradicted = 0
    for k, item in enumerate(items):
        if item.question.kind != "relation":
            continue
        relation += 1
        ca, sa, rel, cb, sb = PATTERN.fullmatch(item.question.text).groups()
        by_name = {(o.colour, o.shape): o for o in item.scene.objects}
        a, b = by_name[ca, sa], by_name[cb, sb]
        if a.cell % shapes.GRID != b.cell % shapes.GRID and a.cell // shapes.GRID != b.cell // shapes.GRID:
            continue
        shared += 1
        is_wrong = full.correct[k] == "0"
        wrong_shared += is_wrong
        if centre_truth(a, b, rel) != (item.question.answer == "yes"):
            contradicted += 1
            wrong_contradicted += is_wrong
    print(f"held-out relation questions: {relation}")
    print(f"  pair shares a row or column: {shared} (full model wrong on {wrong_shared})")
    print(f"  of which the centres contradict the label: {contradicted} (full model wrong on {wrong_contradicted})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
