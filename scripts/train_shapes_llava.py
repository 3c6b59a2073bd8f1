"""Train shapes-llava (LLaVA-1.5 in miniature) on ShapesVQA, the way LLaVA was trained.

Stage 1, vision encoder: the CLIP ViT learns from scratch, with its pooled [CLS]
output predicting the whole scene (for each of the 9 grid cells: colour, shape,
size and printed character of what is there, plus the object count), so that CLS
is a real global aggregator, as in CLIP. An auxiliary per-patch head on the
penultimate layer (the layer LLaVA reads) predicts the colour, shape and character
under each patch; it stands in for the dense features CLIP gets from web-scale
pretraining. Both heads are thrown away.

Stage 2, projector + LM: the ViT is frozen (as in LLaVA-1.5); the MLP projector and
the Llama decoder learn next-token prediction of "answer </s>" after
"USER: <image>\\n{question} ASSISTANT:", on every question kind.

The held-out set (scenes of another seed) is never trained on. Each stage runs
for a time budget (steps = budget / measured step time, cosine schedule), so the
whole run fits the 15-minute rule on one H100:

    python scripts/train_shapes_llava.py --out runs/shapes-llava
    python scripts/train_shapes_llava.py --out /tmp/smoke --smoke   # seconds, on CPU
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from visiondrop.data import shapes
from visiondrop.data.glyphs import CHARACTERS
from visiondrop.zoo.shapes_llava import (
    EOS_ID,
    PAD_ID,
    pixel_values,
    shapes_llava_config,
    shapes_processor,
    word_list,
)

GRID_CELLS = shapes.GRID * shapes.GRID
VISION_FILE = "vision_tower.safetensors"  # stage-1 result of --stage vision (float32)
COLOUR_IDS = {c: i + 1 for i, c in enumerate(shapes.COLOURS)}  # 0 = nothing there
SHAPE_IDS = {s: i + 1 for i, s in enumerate(shapes.SHAPES)}
CHAR_IDS = {c: i + 1 for i, c in enumerate(CHARACTERS)}
SIZE_IDS = {"small": 1, "large": 2}
CELL_CLASSES = (len(COLOUR_IDS) + 1, len(SHAPE_IDS) + 1, len(CHAR_IDS) + 1, len(SIZE_IDS) + 1)
MAX_COUNT = 7  # 0..6 objects
TOKEN_IDS = {w: i for i, w in enumerate(word_list())}
CHATS_PER_SCENE = 2  # each chat: two question sets (6 kinds each), 12 turns in random order
SETS_PER_CHAT = 2


_IMAGES: np.ndarray | None = None  # shared memmap the workers write scenes into


def conversation(questions, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """Text tokens after the image for a multi-turn chat over ``questions`` (shuffled),
    as LLaVA's instruction data is: "q1 ASSISTANT: a1 </s> USER: q2 ASSISTANT: a2 </s> ...".
    Returns the tokens and the offset of every "ASSISTANT:" in them."""
    tokens, asks = [], []
    for turn, k in enumerate(rng.permutation(len(questions))):
        q = questions[int(k)]
        if turn:
            tokens.append(TOKEN_IDS["USER:"])
        tokens += [TOKEN_IDS[w] for w in q.text.split()]
        asks.append(len(tokens))
        tokens += [TOKEN_IDS["ASSISTANT:"], TOKEN_IDS[q.answer], EOS_ID]
    return tokens, asks


def scene_arrays(task: tuple[int, int]):
    """Everything training needs from one scene (runs in workers; the image goes
    straight into the shared memmap)."""
    seed, index = task
    scene = shapes.render_scene(seed, index)
    _IMAGES[index] = scene.image
    owner = scene.patch_owner()
    labels = np.zeros((3,) + owner.shape, dtype=np.int8)  # colour, shape, char per patch
    cells = np.zeros((4, GRID_CELLS), dtype=np.int8)
    for k, obj in enumerate(scene.objects):
        labels[0][owner == k] = COLOUR_IDS[obj.colour]
        labels[1][owner == k] = SHAPE_IDS[obj.shape]
        cells[:, obj.cell] = (COLOUR_IDS[obj.colour], SHAPE_IDS[obj.shape], 0, SIZE_IDS[obj.size])
    for k, tag in enumerate(scene.tags):
        labels[2][owner == len(scene.objects) + k] = CHAR_IDS[tag.character]
        cells[2, tag.cell] = CHAR_IDS[tag.character]
    sets = [scene.questions] + [shapes._ask(np.random.default_rng([seed, index, 1 + v]), scene)
                                for v in range(1, CHATS_PER_SCENE * SETS_PER_CHAT)]
    chats = [conversation([q for qs in sets[c * SETS_PER_CHAT:(c + 1) * SETS_PER_CHAT] for q in qs],
                          np.random.default_rng([seed, index, 100 + c])) for c in range(CHATS_PER_SCENE)]
    return labels, cells, len(scene.objects), chats


def build_data(seed: int, count: int, workers: int, scratch: Path):
    global _IMAGES
    shape = (count, shapes.IMAGE_SIZE, shapes.IMAGE_SIZE, 3)
    _IMAGES = np.lib.format.open_memmap(scratch / "images.npy", mode="w+", dtype=np.uint8, shape=shape)
    n = shapes.IMAGE_SIZE // shapes.PATCH_SIZE
    patch_labels = np.empty((count, 3, n, n), dtype=np.int8)
    cell_labels = np.empty((count, 4, GRID_CELLS), dtype=np.int8)
    counts = np.empty(count, dtype=np.int64)
    chats = []
    tasks = [(seed, i) for i in range(count)]
    with mp.get_context("fork").Pool(workers) as pool:
        results = pool.imap(scene_arrays, tasks, chunksize=32) if workers > 1 else map(scene_arrays, tasks)
        for i, (labels, cells, num, scene_chats) in enumerate(tqdm(results, total=count, desc="scenes",
                                                                     mininterval=10)):
            patch_labels[i], cell_labels[i], counts[i] = labels, cells, num
            chats += scene_chats
    _IMAGES.flush()
    width = max(len(tokens) for tokens, _ in chats)
    turns = max(len(asks) for _, asks in chats)
    chat_tokens = np.full((len(chats), width), PAD_ID, dtype=np.int64)
    chat_asks = np.empty((len(chats), turns), dtype=np.int64)
    for j, (tokens, asks) in enumerate(chats):
        chat_tokens[j, :len(tokens)] = tokens
        chat_asks[j] = asks
    return np.asarray(_IMAGES), patch_labels, cell_labels, counts, chat_tokens, chat_asks


class VisionHeads(nn.Module):
    """Stage-1 objectives: scene description from pooled CLS, labels per patch."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.cells = nn.Linear(width, GRID_CELLS * sum(CELL_CLASSES) + MAX_COUNT)
        self.patch_norm = nn.LayerNorm(width)
        self.patches = nn.Linear(width, sum(CELL_CLASSES[:3]))

    def loss(self, pooled, patch_states, cell_labels, counts, patch_labels):
        out = self.cells(pooled)
        count_logits, cell_logits = out[:, -MAX_COUNT:], out[:, :-MAX_COUNT].view(len(out), GRID_CELLS, -1)
        terms = {"cls_count": F.cross_entropy(count_logits, counts)}
        for name, k, part in zip(("colour", "shape", "char", "size"), range(4), cell_logits.split(CELL_CLASSES, -1)):
            terms[f"cls_{name}"] = F.cross_entropy(part.flatten(0, 1), cell_labels[:, k].flatten())
        patch_logits = self.patches(self.patch_norm(patch_states))  # (B, 576, sum)
        for name, k, part in zip(("colour", "shape", "char"), range(3), patch_logits.split(CELL_CLASSES[:3], -1)):
            terms[f"patch_{name}"] = F.cross_entropy(part.flatten(0, 1), patch_labels[:, k].flatten(1).flatten())
        return sum(terms.values()), terms


def sincos_position_embedding(num_patches_side: int, width: int, scale: float = 0.2) -> torch.Tensor:
    """2-D sine-cosine position table (MAE-style) for [CLS] + patches, used as the
    *initial* value of CLIP's learned position embedding: training from scratch
    in minutes needs the grid layout from the start."""
    quarter = width // 4
    omega = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter))
    grid = torch.arange(num_patches_side, dtype=torch.float64)
    ys, xs = torch.meshgrid(grid, grid, indexing="ij")
    parts = [f(c.flatten()[:, None] * omega[None]) for c in (xs, ys) for f in (torch.sin, torch.cos)]
    table = torch.cat(parts, dim=1)
    table = torch.cat([torch.zeros(1, table.shape[1], dtype=table.dtype), table])
    return (scale * table).float()


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def timed_loop(name, budget_s, max_steps, step_fn, optimizer, peak_lr, warmup, log, skip=10, every=50, every_s=5.0):
    """Run ``step_fn(step)`` for about ``budget_s`` seconds under a warmup + cosine
    schedule. The step count is re-estimated from the measured speed every ``every``
    steps or ``every_s`` seconds, whichever comes first, so the schedule ends on time on
    any GPU and on a CPU, where one step can take seconds. Steps before the first ``skip``
    (or the first ``every_s`` seconds), slow while kernels warm up, are not counted."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    total, step, start = max_steps, 0, time.time()
    mark = mark_step = None  # where the speed measurement starts
    checked = start
    while step < total:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, total, peak_lr * group.get("scale", 1.0), min(warmup, total // 10 + 1))
        metrics = step_fn(step)
        step += 1
        if mark is None and (step == skip or time.time() - start > every_s):
            sync()
            mark = checked = time.time()
            mark_step = step
        elif mark is not None and (step % every == 0 or time.time() - checked > every_s):
            sync()
            checked = time.time()
            per_step = (checked - mark) / (step - mark_step)
            remaining = budget_s - (checked - start)
            total = max(step, min(max_steps, step + int(remaining / per_step)))
        if step % 250 == 0 or step == total:
            entry = {"stage": name, "step": step, "of": total, "seconds": round(time.time() - start, 1),
                     **{k: round(float(v), 4) for k, v in metrics.items()}}
            log.append(entry)
            print(json.dumps(entry), flush=True)
    return step


def train(args) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(args.seed)
    amp = dict(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    t0 = time.time()
    scratch = Path(tempfile.mkdtemp(prefix="shapes-vqa-"))
    images, patch_labels, cell_labels, counts, chat_tokens, chat_asks = build_data(args.seed, args.scenes,
                                                                                    args.workers, scratch)
    data_time = time.time() - t0
    print(f"data: {len(images)} scenes, {len(chat_tokens)} chats in {data_time:.0f}s", flush=True)
    log: list[dict] = []

    from transformers import LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration(shapes_llava_config()).to(device)
    vision = model.model.vision_tower
    with torch.no_grad():
        table = vision.embeddings.position_embedding.weight
        side = shapes.IMAGE_SIZE // shapes.PATCH_SIZE
        table.copy_(sincos_position_embedding(side, table.shape[1]).to(table.device))
    images_gpu = torch.from_numpy(images).to(device)
    patch_labels_gpu = torch.from_numpy(patch_labels).long().to(device)
    cell_labels_gpu = torch.from_numpy(cell_labels).long().to(device)
    counts_gpu = torch.from_numpy(counts).to(device)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    vision_call = None  # stage 1's own run, when it was a separate call (--vision-from)
    if args.vision_from is not None:  # stage 1 was run by an earlier call (--stage vision)
        from safetensors.torch import load_file

        vision.load_state_dict(load_file(args.vision_from))
        vision.eval().requires_grad_(False)
        vision_steps, vision_time = 0, 0.0
        earlier = Path(args.vision_from).with_name("vision_log.json")
        if earlier.is_file():  # carry stage 1's record into this run's log
            stage1 = json.loads(earlier.read_text())
            vision_steps, vision_time = stage1["steps"], stage1["seconds"]
            vision_call = {"command": stage1["command"], "total_seconds": stage1.get("total_seconds")}
            log.extend(stage1["log"])
    else:
        # Stage 1: the vision encoder.
        heads = VisionHeads(vision.config.hidden_size).to(device)
        params = list(vision.parameters()) + list(heads.parameters())
        opt = torch.optim.AdamW(params, lr=args.vision_lr, weight_decay=0.05, betas=(0.9, 0.98))

        def vision_step(step):
            idx = torch.randint(len(images_gpu), (args.vision_batch,), device=device)
            with torch.autocast(**amp):
                out = vision(pixel_values(images_gpu[idx]), output_hidden_states=True)
                loss, terms = heads.loss(out.pooler_output.float(), out.hidden_states[-2][:, 1:].float(),
                                         cell_labels_gpu[idx], counts_gpu[idx], patch_labels_gpu[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            return {"loss": loss.detach(), **{k: v.detach() for k, v in terms.items()}}

        vision.train()
        t1 = time.time()
        vision_steps = timed_loop("vision", args.vision_seconds, args.max_steps, vision_step, opt, args.vision_lr,
                                  args.warmup, log)
        vision_time = time.time() - t1
        vision.eval().requires_grad_(False)
        heads = opt = None  # free memory (the closures above are done with them)
    if args.stage == "vision":
        from safetensors.torch import save_file

        path = out / VISION_FILE
        save_file({k: v.detach().float().contiguous().cpu() for k, v in vision.state_dict().items()}, path)
        (out / "vision_log.json").write_text(json.dumps({"command": "python " + " ".join(sys.argv),
                                                          "steps": vision_steps, "seconds": round(vision_time, 1),
                                                          "total_seconds": round(time.time() - t0, 1),
                                                          "log": log}, indent=1) + "\n")
        print(f"vision stage done: {path} (continue with --vision-from {path})", flush=True)
        return {"total_seconds": round(time.time() - t0, 1)}


    # Stage 2: projector + LM on frozen ViT features (penultimate layer, CLS dropped).
    with torch.no_grad(), torch.autocast(**amp):
        features = torch.cat([vision(pixel_values(images_gpu[i:i + 256]), output_hidden_states=True)
                              .hidden_states[-2][:, 1:].to(torch.bfloat16 if device.type == "cuda" else torch.float32)
                              for i in range(0, len(images_gpu), 256)])
    images_gpu = images = None
    shutil.rmtree(scratch, ignore_errors=True)
    chat_tokens_gpu, chat_asks_gpu = torch.from_numpy(chat_tokens).to(device), torch.from_numpy(chat_asks).to(device)
    projector, lm, lm_head = model.model.multi_modal_projector, model.model.language_model, model.lm_head
    params = list(projector.parameters()) + list(lm.parameters()) + list(lm_head.parameters())
    opt = torch.optim.AdamW(params, lr=args.lm_lr, weight_decay=0.0, betas=(0.9, 0.98))
    num_patches = features.shape[1]
    head = torch.tensor([TOKEN_IDS["USER:"]], device=device)
    text_start = 1 + num_patches
    rows = torch.arange(args.lm_batch, device=device)[:, None]

    def lm_step(step):
        pick = torch.randint(len(chat_tokens_gpu), (args.lm_batch,), device=device)
        text = chat_tokens_gpu[pick]
        asks = chat_asks_gpu[pick]  # (B, turns): "ASSISTANT:" offsets within the text
        # Right padding needs no mask: causal attention never looks past the last answer.
        with torch.autocast(**amp):
            embeds = torch.cat([lm.embed_tokens(head).expand(args.lm_batch, 1, -1),
                                projector(features[pick // CHATS_PER_SCENE]).to(lm.embed_tokens.weight.dtype),
                                lm.embed_tokens(text)], dim=1)
            hidden = lm(inputs_embeds=embeds).last_hidden_state
            positions = torch.cat([asks, asks + 1], 1) + text_start  # predict answer, then </s>
            logits = lm_head(hidden[rows, positions]).float()
        targets = text.gather(1, torch.cat([asks + 1, asks + 2], 1))
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        turns = asks.shape[1]
        correct = logits[:, :turns].argmax(-1) == targets[:, :turns]
        return {"loss": loss.detach(), "answer_acc": correct.float().mean()}

    lm.train()
    t2 = time.time()
    lm_steps = timed_loop("lm", args.lm_seconds, args.max_steps, lm_step, opt, args.lm_lr, args.warmup, log)
    lm_time = time.time() - t2
    model.eval()
    features = None

    model.generation_config.pad_token_id = PAD_ID
    model.generation_config.eos_token_id = EOS_ID
    model.to(torch.float16).save_pretrained(out)  # fp16 on disk: 20 MB; loads as float32 on CPU
    shapes_processor().save_pretrained(out)
    model.to(torch.float32)

    from visiondrop.eval.vqa import accuracy_by_kind, answer, items_of

    eval_scenes = shapes.heldout(args.eval_scenes)
    items = items_of(eval_scenes)
    answers = answer(model, shapes_processor(), items, batch_size=64)
    accuracy = accuracy_by_kind(items, answers)
    print("held-out accuracy:", json.dumps({k: round(v, 4) for k, v in accuracy.items()}), flush=True)
    summary = {
        "command": "python " + " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d"),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__,
                     "python": platform.python_version(), "numpy": np.__version__},
        "data": {"seed": args.seed, "train_scenes": args.scenes, "train_chats": int(len(chat_tokens)),
                 "questions_per_chat": int(chat_asks.shape[1]),
                 "heldout_seed": shapes.HELDOUT_SEED, "heldout_scenes": len(eval_scenes),
                 "heldout_questions": len(items)},
        "data_seconds": round(data_time, 1),
        "stage1_vision": {"steps": vision_steps, "batch": args.vision_batch, "lr": args.vision_lr,
                          "seconds": round(vision_time, 1), "loaded_from": args.vision_from,
                          "separate_call": vision_call},
        "stage2_projector_lm": {"steps": lm_steps, "batch": args.lm_batch, "lr": args.lm_lr,
                                "seconds": round(lm_time, 1)},
        "total_seconds": round(time.time() - t0, 1),
        "heldout_accuracy": accuracy,
        "parameters": sum(p.numel() for p in model.parameters()),
        "log": log,
    }
    (out / "training_log.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output checkpoint folder")
    parser.add_argument("--seed", type=int, default=shapes.TRAIN_SEED)
    parser.add_argument("--scenes", type=int, default=40_000, help="training scenes (two 12-question chats each)")
    parser.add_argument("--workers", type=int, default=max(1, (mp.cpu_count() or 2) - 1))
    parser.add_argument("--vision-seconds", type=float, default=240.0)
    parser.add_argument("--lm-seconds", type=float, default=450.0)
    parser.add_argument("--max-steps", type=int, default=100_000)
    parser.add_argument("--vision-batch", type=int, default=128)
    parser.add_argument("--lm-batch", type=int, default=96)
    parser.add_argument("--vision-lr", type=float, default=1.5e-3)
    parser.add_argument("--lm-lr", type=float, default=6e-4)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--eval-scenes", type=int, default=shapes.HELDOUT_SCENES)
    parser.add_argument("--stage", choices=("all", "vision"), default="all",
                        help="'vision': run stage 1 only and save vision_tower.safetensors to --out, so that a "
                             "longer stage 2 can run in a later call with --vision-from")
    parser.add_argument("--vision-from", default=None, help="skip stage 1: load the ViT from this safetensors file")
    parser.add_argument("--smoke", action="store_true", help="a seconds-long CPU run that checks the script")
    args = parser.parse_args(argv)
    if args.smoke:
        args.scenes, args.workers, args.max_steps = 8, 1, 2
        args.vision_batch = args.lm_batch = 2
        args.eval_scenes, args.warmup = 1, 1
    for name in ("scenes", "workers", "max_steps", "vision_batch", "lm_batch", "eval_scenes"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.stage == "vision" and args.vision_from:
        parser.error("--vision-from skips stage 1; it cannot be combined with --stage vision")
    if args.vision_from and not Path(args.vision_from).is_file():
        parser.error(f"--vision-from: no such file {args.vision_from!r}")
    if args.eval_scenes > shapes.HELDOUT_SCENES:
        parser.error(f"--eval-scenes must be <= {shapes.HELDOUT_SCENES} (the held-out set)")
    summary = train(args)
    print(f"done in {summary['total_seconds']:.0f}s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
