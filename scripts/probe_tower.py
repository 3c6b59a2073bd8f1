"""Do a tower's patch features say what lies under each patch? A linear probe (issue 21).

The LM can only read what the features it is given carry. For each patch of ShapesVQA-2
scenes, the probe predicts the shape of the object covering it ("none" for background and
signs) from that patch's feature at the layer LLaVA reads (-2, [CLS] dropped). A patch inside
a large shape shows only flat colour, so the shape must come from context: raw pixels cannot
give it, a tower that mixes its neighbourhood can. Four inputs are compared: the tower in
``--tower`` (a ``train_shapes_llava2.py --stage vision`` file), the same architecture with
random weights, the patch's raw pixels, and, for scale, shapes-llava's tower (the same
architecture, trained with per-patch heads on ShapesVQA: features an LM learned to read).
Train on ``--train`` scenes, score on the next ``--test`` scenes (both from the held-out seed:
the tower never saw them).

    python scripts/probe_tower.py --tower vision_tower.safetensors --out docs/proxy
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from visiondrop.data import shapes2
from visiondrop.zoo.shapes_llava import pixel_values


def labels(scenes) -> torch.Tensor:
    """(scenes * 576,) shape index of each patch's owner; len(SHAPES) for none or a sign."""
    shapes = sorted(shapes2.SHAPES)
    rows = []
    for scene in scenes:
        owner = scene.patch_owner(min_cover=0.5).ravel()
        table = np.array([shapes.index(o.shape) for o in scene.objects] + [len(shapes)] * (len(scene.signs) + 1))
        rows.append(table[owner])  # owner -1 (background) reads the last entry: none
    return torch.from_numpy(np.concatenate(rows))


@torch.no_grad()
def features(tower, scenes, batch: int = 16) -> torch.Tensor:
    out = []
    for start in range(0, len(scenes), batch):
        images = torch.from_numpy(np.stack([s.image for s in scenes[start:start + batch]]))
        states = tower(pixel_values(images), output_hidden_states=True).hidden_states[-2][:, 1:]
        out.append(states.flatten(0, 1).float())
    return torch.cat(out)


def raw_patches(scenes) -> torch.Tensor:
    p, n = shapes2.PATCH_SIZE, shapes2.NUM_PATCHES
    images = np.stack([s.image for s in scenes]).astype(np.float32) / 255
    patches = images.reshape(len(scenes), n, p, n, p, 3).transpose(0, 1, 3, 2, 4, 5)
    return torch.from_numpy(patches.reshape(len(scenes) * n * n, -1))


def probe(train_x, train_y, test_x, test_y, classes: int, steps: int = 300) -> float:
    """Mean recall over the shapes of a softmax regression (standardised inputs, full-batch
    Adam, class-balanced loss), so a probe that always says the commonest shape scores chance."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-5
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    weight = torch.zeros(train_x.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    counts = torch.bincount(train_y, minlength=classes).float()
    balance = counts.sum() / (classes * counts.clamp(min=1))
    opt = torch.optim.Adam([weight, bias], lr=0.05)
    for _ in range(steps):
        loss = F.cross_entropy(train_x @ weight + bias, train_y, weight=balance) + 1e-4 * weight.square().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    predicted = (test_x @ weight + bias).argmax(-1)
    recalls = [(predicted[test_y == c] == c).float().mean() for c in range(classes - 1) if (test_y == c).any()]
    return float(torch.stack(recalls).mean())  # over the shapes: what the probe is for; "none" left out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tower", required=True, help="vision_tower.safetensors from --stage vision")
    parser.add_argument("--train", type=int, default=60, help="scenes to fit the probe on")
    parser.add_argument("--test", type=int, default=30, help="scenes to score it on")
    parser.add_argument("--out", default=None, help="folder for probe-<tower>.json")
    args = parser.parse_args(argv)
    if not Path(args.tower).is_file():
        parser.error(f"--tower: no such file {args.tower!r}")
    if args.train < 1 or args.test < 1 or args.train + args.test > shapes2.HELDOUT_SCENES:
        parser.error(f"--train and --test must be >= 1 and add up to at most {shapes2.HELDOUT_SCENES}")
    from safetensors.torch import load_file
    from transformers import LlavaForConditionalGeneration

    from visiondrop.zoo.shapes_llava import load_shapes_llava
    from visiondrop.zoo.shapes_llava2 import shapes_llava2_config

    start = time.time()
    torch.manual_seed(0)
    scenes = shapes2.heldout(args.train + args.test)
    train, test = scenes[:args.train], scenes[args.train:]
    classes = len(shapes2.SHAPES) + 1
    train_y, test_y = labels(train), labels(test)
    trained = LlavaForConditionalGeneration(shapes_llava2_config()).model.vision_tower.eval()
    random_tower = LlavaForConditionalGeneration(shapes_llava2_config()).model.vision_tower.eval()
    trained.load_state_dict(load_file(args.tower))
    reference = load_shapes_llava()[0].model.vision_tower.eval()
    inputs = {"tower": (features(trained, train), features(trained, test)),
              "random tower": (features(random_tower, train), features(random_tower, test)),
              "raw pixels": (raw_patches(train), raw_patches(test)),
              "shapes-llava's tower": (features(reference, train), features(reference, test))}
    accuracy = {name: probe(x, train_y, y, test_y, classes) for name, (x, y) in inputs.items()}
    chance = 1 / len(shapes2.SHAPES)
    result = {"tower": args.tower, "train_scenes": args.train, "test_scenes": args.test,
              "object_patches_tested": int((test_y != classes - 1).sum()), "accuracy": accuracy,
              "chance": chance, "date": time.strftime("%Y-%m-%d"), "seconds": round(time.time() - start, 1),
              "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__},
              "command": "python scripts/probe_tower.py " + " ".join(argv or sys.argv[1:])}
    print("shape of the object under each patch, linear probe, mean recall over shapes: " +
          ", ".join(f"{k} {v:.1%}" for k, v in accuracy.items()) + f" (chance {chance:.1%})")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"probe-{Path(args.tower).stem}.json"
        path.write_text(json.dumps(result, indent=1) + "\n")
        print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
