"""Train shapes-llava-2 (issue 21) on ShapesVQA-2, the way LLaVA-1.5 and its parts were trained.

1. ``vision``: the CLIP ViT learns from scratch, CLIP-style: its pooled [CLS] output against a
   small text encoder's embedding of 2-4 of the same scene's captions joined (symmetric InfoNCE
   over the batch, learned temperature). No per-patch heads. ``--region-weight`` adds the same
   kind of loss between each object's phrase and the mean of its patch tokens at layer -2, so
   that the tokens LLaVA reads learn what lies under them. The text encoder is thrown away.
2. ``text``: the 32-layer Llama LM is pre-trained on text alone, next-token prediction on
   every position: ``<s>``, the system prompt, the scene told in words (its captions), then
   turns of questions and answers about it. Language layers and an attention sink can form
   before any image is seen.
3. ``align``: the projector alone learns image -> caption (LLaVA's stage 1), ViT and LM frozen.
4. ``instruct``: projector and LM learn multi-turn chats ``<s> {system} USER: <image> q1
   ASSISTANT: a1 </s> USER: q2 ...`` with the loss on the answers' tokens (LLaVA's stage 2); the
   ViT, read at layer -2 with [CLS] dropped, stays frozen as in LLaVA-1.5, or learns on at a tenth
   of the LM's rate with ``--tune-tower`` (minutes of contrastive training give a weaker tower
   than CLIP's).

Each stage runs for a time budget (steps re-estimated from the measured speed, cosine
schedule), so the whole run fits one device call; the held-out accuracy is measured at the
end. The checkpoint is saved in float16, in shards small enough to come back from a device
call (``--shard-mb``).

    python scripts/train_shapes_llava2.py --out runs/shapes-llava-2
    python scripts/train_shapes_llava2.py --out /tmp/smoke --smoke   # seconds, on CPU
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from visiondrop.data import shapes2

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the v1 recipe's schedule and position table
from train_shapes_llava import sincos_position_embedding, timed_loop  # noqa: E402

from visiondrop.zoo.shapes_llava import EOS_ID, PAD_ID, pixel_values
from visiondrop.zoo.shapes_llava2 import PROMPT, shapes2_processor, shapes2_tokenizer, shapes_llava2_config, word_list

TOKEN_IDS = {w: i for i, w in enumerate(word_list())}
CAPTION_TOKENS = 40
VIEW_TOKENS, VIEWS = 64, 4  # contrastive captions: several short ones joined, so that one scene matches
MAX_OBJECTS, PHRASE_TOKENS = 12, 3  # --region-weight: each object's phrase ("large red circle")
SETS_PER_CHAT = 2  # question sets per chat: 14 turns
VISION_FILE = "vision_tower.safetensors"  # --stage vision's result (float32, 11 MB: a device call returns it)
_IMAGES: np.ndarray | None = None  # shared memmap the workers write scenes into


def ids(text: str) -> list[int]:
    return [TOKEN_IDS[w] for w in text.split()]


HEAD = ids(PROMPT.split("<image>")[0])  # "<s> {system} USER:" before the image


def chat(questions, rng) -> tuple[list[int], list[int]]:
    """Tokens after the image for a chat over ``questions`` (shuffled) and, per token, 1 where
    it is an answer token or the ``</s>`` that ends an answer (the loss's targets)."""
    tokens, targets = [], []
    for turn, k in enumerate(rng.permutation(len(questions))):
        q = questions[int(k)]
        asked = ([TOKEN_IDS["USER:"]] if turn else []) + ids(q.text) + [TOKEN_IDS["ASSISTANT:"]]
        answered = ids(q.answer) + [EOS_ID]
        tokens += asked + answered
        targets += [0] * len(asked) + [1] * len(answered)
    return tokens, targets


def scene_arrays(task):
    """Everything training needs from one scene (in workers; the image goes to the memmap)."""
    seed, index = task
    scene = shapes2.render_scene(seed, index)
    _IMAGES[index] = scene.image
    rng = np.random.default_rng([seed, index, 7])
    texts = scene.captions()
    captions = [ids(c)[:CAPTION_TOKENS] for c in texts]
    # One short caption ("10 objects and 1 sign on a checkered background .") fits many scenes of
    # a batch, which capped in-batch retrieval near 20 % (runs 1-2); 2-4 of them joined in a
    # random order pin the scene down, as a real caption's many details do.
    views = [ids(" ".join(texts[int(k)] for k in rng.permutation(len(texts))[:rng.integers(2, 5)]))[:VIEW_TOKENS]
             for _ in range(VIEWS)]
    sets = [scene.questions] + [shapes2.ask(rng, scene) for _ in range(2 * SETS_PER_CHAT - 1)]
    chats = [chat([q for qs in sets[c * SETS_PER_CHAT:(c + 1) * SETS_PER_CHAT] for q in qs], rng) for c in range(2)]
    told = [t for c in scene.captions()[1:] for t in ids(c)]
    document = HEAD[:-1] + told + [TOKEN_IDS["USER:"]] + chats[0][0]  # the scene in words, then a chat
    owner = scene.patch_owner(min_cover=0.3).ravel()
    owner = np.where(owner < len(scene.objects), owner, -1).astype(np.int8)  # signs: no phrase
    phrases = [ids(o.name) for o in scene.objects]
    return captions, views, chats, document, owner, phrases


def padded(rows: list[list[int]], width: int | None = None, fill: int = PAD_ID) -> np.ndarray:
    width = width or max(map(len, rows))
    out = np.full((len(rows), width), fill, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, :min(width, len(row))] = row[:width]
    return out


def build_data(seed: int, count: int, workers: int, scratch: Path) -> dict:
    global _IMAGES
    shape = (count, shapes2.IMAGE_SIZE, shapes2.IMAGE_SIZE, 3)
    _IMAGES = np.lib.format.open_memmap(scratch / "images.npy", mode="w+", dtype=np.uint8, shape=shape)
    tasks = [(seed, i) for i in range(count)]
    with mp.get_context("fork").Pool(workers) as pool:
        results = list(pool.imap(scene_arrays, tasks, chunksize=64) if workers > 1 else map(scene_arrays, tasks))
    _IMAGES.flush()
    captions = [r[0] for r in results]
    per_scene = max(map(len, captions))
    caption_ids = np.stack([padded(c + [[]] * (per_scene - len(c)), CAPTION_TOKENS) for c in captions])
    caption_counts = np.array([len(c) for c in captions])
    views = np.stack([padded(r[1], VIEW_TOKENS) for r in results])
    chats = [c for r in results for c in r[2]]
    phrases = np.full((count, MAX_OBJECTS, VIEW_TOKENS), PAD_ID, dtype=np.int64)
    present = np.zeros((count, MAX_OBJECTS), dtype=bool)  # objects that own at least one patch
    for i, r in enumerate(results):
        phrases[i, :len(r[5]), :PHRASE_TOKENS] = r[5]
        present[i, np.unique(r[4][r[4] >= 0])] = True
    return {"region_owner": np.stack([r[4] for r in results]), "region_phrases": phrases, "region_present": present,
            "images": np.asarray(_IMAGES), "captions": caption_ids, "caption_counts": caption_counts,
            "views": views, "chat_tokens": padded([c[0] for c in chats]),
            "chat_targets": padded([c[1] for c in chats], fill=0), "documents": padded([r[3] for r in results])}


class CaptionEncoder(nn.Module):
    """The small text tower CLIP-style training pairs the ViT with (thrown away after)."""

    def __init__(self, vocab: int, width: int, out: int, layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width, padding_idx=PAD_ID)
        self.position = nn.Parameter(torch.randn(VIEW_TOKENS, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, 4, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.project = nn.Linear(width, out, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        real = tokens != PAD_ID
        x = self.encoder(self.embed(tokens) + self.position, src_key_padding_mask=~real)
        pooled = (self.norm(x) * real[..., None]).sum(1) / real.sum(1, keepdim=True).clamp(min=1)
        return self.project(pooled)


def train(args) -> dict:  # noqa: PLR0915 (the stages, read top to bottom)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(args.seed)
    amp = dict(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    t0 = time.time()
    data = build_data(args.seed, args.scenes, args.workers, Path(tempfile.mkdtemp(prefix="shapes-vqa2-")))
    print(f"data: {args.scenes} scenes, {len(data['chat_tokens'])} chats in {time.time() - t0:.0f}s", flush=True)
    log: list[dict] = []
    stages: dict[str, dict] = {}

    def timed_stage(name, *arguments):
        start = time.time()
        steps = timed_loop(name, *arguments)
        return {"steps": steps, "seconds": round(time.time() - start, 1),
                "batch": args.vision_batch if name == "vision" else args.lm_batch}

    from transformers import LlavaForConditionalGeneration

    if args.init_from is not None:  # an earlier call's checkpoint trains on
        model = LlavaForConditionalGeneration.from_pretrained(args.init_from, dtype=torch.float32).to(device)
    else:
        model = LlavaForConditionalGeneration(shapes_llava2_config()).to(device)
    vision, projector = model.model.vision_tower, model.model.multi_modal_projector
    lm, lm_head = model.model.language_model, model.lm_head
    if args.init_from is None:
        with torch.no_grad():
            table = vision.embeddings.position_embedding.weight
            table.copy_(sincos_position_embedding(shapes2.IMAGE_SIZE // shapes2.PATCH_SIZE, table.shape[1]))
    images = torch.from_numpy(data["images"]).to(device)
    captions = torch.from_numpy(data["captions"]).to(device)
    caption_counts = torch.from_numpy(data["caption_counts"]).to(device)
    views = torch.from_numpy(data["views"]).to(device)

    # 1. vision: CLIP-style contrastive (or the tower an earlier call trained: --vision-from)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.init_from is not None:
        vision.eval().requires_grad_(False)
        earlier = json.loads((Path(args.init_from) / "training_log.json").read_text())
        for name, record in earlier["stages"].items():  # the earlier calls' record goes into this run's log
            stages[f"{name} (earlier call)"] = record
        stages["earlier calls"] = {"commands": earlier.get("earlier_commands", []) + [earlier["command"]],
                                   "heldout_accuracy": earlier["heldout_accuracy"]}
        log.extend(earlier["log"])
    elif args.vision_from is not None:
        from safetensors.torch import load_file

        vision.load_state_dict(load_file(args.vision_from))
        vision.eval().requires_grad_(False)
        earlier = Path(args.vision_from).with_name("vision_log.json")
        if earlier.is_file():  # the earlier call's record goes into this run's log
            record = json.loads(earlier.read_text())
            stages["vision"] = {"steps": record["steps"], "seconds": record["seconds"],
                                "loaded_from": args.vision_from, "separate_call": record["command"]}
            log.extend(record["log"])
    else:
        text_tower = CaptionEncoder(len(word_list()), 192, 128).to(device)
        image_project = nn.Linear(vision.config.hidden_size, 128, bias=False).to(device)
        log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07), device=device))
        params = [*vision.parameters(), *text_tower.parameters(), *image_project.parameters(), log_scale]
        if args.region_weight > 0:
            region_project = nn.Linear(vision.config.hidden_size, 128, bias=False).to(device)
            params += list(region_project.parameters())
            owners = torch.from_numpy(data["region_owner"]).to(device)
            phrases = torch.from_numpy(data["region_phrases"]).to(device)
            present = torch.from_numpy(data["region_present"]).to(device)
        opt = torch.optim.AdamW(params, lr=args.vision_lr, weight_decay=0.05, betas=(0.9, 0.98))

        def vision_step(step):
            pick = torch.randint(len(images), (args.vision_batch,), device=device)
            which = torch.randint(VIEWS, (len(pick),), device=device)
            scale = log_scale.clamp(max=math.log(100)).exp()
            with torch.autocast(**amp):
                out = vision(pixel_values(images[pick]), output_hidden_states=args.region_weight > 0)
                image_embed = F.normalize(image_project(out.pooler_output).float(), dim=-1)
                text_embed = F.normalize(text_tower(views[pick, which]).float(), dim=-1)
            logits = image_embed @ text_embed.T * scale
            labels = torch.arange(len(pick), device=device)
            loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
            metrics = {"acc": (logits.argmax(-1) == labels).float().mean()}
            if args.region_weight > 0:
                region_loss, metrics["region_acc"] = region_contrast(out.hidden_states[-2][:, 1:], pick, scale)
                loss = loss + args.region_weight * region_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            return {"loss": loss.detach(), **metrics}

        def region_contrast(patches, pick, scale):
            """One object per image: the mean of its patch tokens at the layer LLaVA reads against
            its phrase, InfoNCE over the batch (every image with the same phrase counts as a
            positive). CLIP-style still (a text tower, no per-patch labels), but it reaches the
            patch tokens, which the [CLS] objective barely does (scripts/probe_tower.py)."""
            chosen = torch.multinomial(present[pick].float() + 1e-6, 1)[:, 0]
            inside = (owners[pick] == chosen[:, None]).to(patches.dtype)  # (B, 576)
            with torch.autocast(**amp):
                region = (patches * inside[..., None]).sum(1) / inside.sum(1, keepdim=True).clamp(min=1)
                region_embed = F.normalize(region_project(region).float(), dim=-1)
                phrase = phrases[pick, chosen]
                phrase_embed = F.normalize(text_tower(phrase).float(), dim=-1)
            logits = region_embed @ phrase_embed.T * scale
            same = (phrase[:, None, :PHRASE_TOKENS] == phrase[None, :, :PHRASE_TOKENS]).all(-1)
            row = torch.logsumexp(logits, 1) - torch.logsumexp(logits.masked_fill(~same, -1e4), 1)
            column = torch.logsumexp(logits, 0) - torch.logsumexp(logits.masked_fill(~same, -1e4), 0)
            hit = same[torch.arange(len(pick), device=pick.device), logits.argmax(1)].float().mean()
            return (row.mean() + column.mean()) / 2, hit

        vision.train()
        stages["vision"] = timed_stage("vision", args.vision_seconds, args.max_steps, vision_step, opt, args.vision_lr,
                                      args.warmup, log)
        vision.eval().requires_grad_(False)
        text_tower = image_project = region_project = opt = None

    if args.stage == "vision":  # a later call goes on with --vision-from (a device call lasts 10 minutes)
        from safetensors.torch import save_file

        save_file({k: v.detach().float().contiguous().cpu() for k, v in vision.state_dict().items()},
                  out / VISION_FILE)
        (out / "vision_log.json").write_text(json.dumps({"command": "python " + " ".join(sys.argv),
                                                          **stages["vision"], "log": log}, indent=1) + "\n")
        print(f"vision stage done: {out / VISION_FILE} (go on with --vision-from)", flush=True)
        return {"total_seconds": round(time.time() - t0, 1)}

    # 2. text: the LM alone, every position
    documents = torch.from_numpy(data["documents"]).to(device)
    params = [*lm.parameters(), *lm_head.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lm_lr, weight_decay=0.0, betas=(0.9, 0.98))

    def text_step(step):
        tokens = documents[torch.randint(len(documents), (args.lm_batch,), device=device)]
        with torch.autocast(**amp):
            logits = lm_head(lm(input_ids=tokens[:, :-1]).last_hidden_state).float()
        loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten(), ignore_index=PAD_ID)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return {"loss": loss.detach()}

    lm.train()
    stages["text"] = {"skipped": True} if args.text_seconds <= 0 else \
        timed_stage("text", args.text_seconds, args.max_steps, text_step, opt, args.lm_lr, args.warmup, log)
    documents = opt = None

    def read_tower(batch_images):  # what LLaVA reads: layer -2, [CLS] dropped
        return vision(pixel_values(batch_images), output_hidden_states=True).hidden_states[-2][:, 1:]

    if args.tune_tower:  # the tower learns on in instruct: features per step
        features = None
    else:  # frozen from here on: features once
        with torch.no_grad(), torch.autocast(**amp):
            features = torch.cat([read_tower(images[i:i + 256]).to(torch.bfloat16 if device.type == "cuda"
                                                                    else torch.float32)
                                  for i in range(0, len(images), 256)])
        images = None

    def scene_features(scenes):
        if features is not None:
            return features[scenes]
        with torch.set_grad_enabled(vision.training):
            return read_tower(images[scenes])
    head = torch.tensor(HEAD, device=device)
    chat_tokens = torch.from_numpy(data["chat_tokens"]).to(device)
    chat_targets = torch.from_numpy(data["chat_targets"]).to(device).bool()

    def multimodal_step(opt, params, text, targets, scenes):
        with torch.autocast(**amp):
            visual = scene_features(scenes)
            start = len(HEAD) + visual.shape[1]
            embeds = torch.cat([lm.embed_tokens(head).expand(len(text), -1, -1),
                                projector(visual).to(lm.embed_tokens.weight.dtype),
                                lm.embed_tokens(text)], dim=1)
            hidden = lm(inputs_embeds=embeds).last_hidden_state[:, start - 1:-1]  # predicts each text token
            logits = lm_head(hidden).float()  # every position (the vocabulary is small): no host sync
        wanted = text.masked_fill(~targets, -100)
        loss = F.cross_entropy(logits.flatten(0, 1), wanted.flatten(), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        hits = (logits.argmax(-1) == text) & targets
        return {"loss": loss.detach(), "token_acc": hits.sum() / targets.sum()}

    # 3. align: the projector alone, image -> caption ("the image shows : {caption}")
    opt = torch.optim.AdamW(projector.parameters(), lr=args.align_lr, weight_decay=0.0)
    lead = ids("describe the image briefly . ASSISTANT:")

    def align_step(step):
        scenes = torch.randint(args.scenes, (args.lm_batch,), device=device)
        which = (torch.rand(len(scenes), device=device) * caption_counts[scenes]).long()
        caption = captions[scenes, which]
        text = torch.cat([torch.tensor(lead, device=device).expand(len(scenes), -1), caption,
                          torch.full((len(scenes), 1), PAD_ID, device=device)], 1)
        ends = (caption != PAD_ID).sum(1) + len(lead)
        text[torch.arange(len(scenes), device=device), ends] = EOS_ID
        targets = torch.zeros_like(text, dtype=torch.bool)
        targets[:, len(lead):] = (text[:, len(lead):] != PAD_ID)
        return multimodal_step(opt, list(projector.parameters()), text, targets, scenes)

    lm.eval()
    stages["align"] = {"skipped": True} if args.align_seconds <= 0 else \
        timed_stage("align", args.align_seconds, args.max_steps, align_step, opt, args.align_lr, args.warmup, log)

    # 4. instruct: projector + LM on chats, loss on the answers
    params = [*projector.parameters(), *lm.parameters(), *lm_head.parameters()]
    groups = [{"params": params}]
    if args.tune_tower:
        vision.train().requires_grad_(True)
        groups.append({"params": list(vision.parameters()), "scale": args.tower_lr_scale})
        params = params + groups[1]["params"]
    opt = torch.optim.AdamW(groups, lr=args.lm_lr, weight_decay=0.0, betas=(0.9, 0.98))

    def instruct_step(step):
        pick = torch.randint(len(chat_tokens), (args.lm_batch,), device=device)
        return multimodal_step(opt, params, chat_tokens[pick], chat_targets[pick], pick // 2)

    lm.train()
    stages["instruct"] = timed_stage("instruct", args.instruct_seconds, args.max_steps, instruct_step, opt,
                                    args.lm_lr, args.warmup, log)
    model.eval()
    features = images = None

    model.generation_config.pad_token_id = PAD_ID
    model.generation_config.eos_token_id = EOS_ID
    model.to(torch.float16).save_pretrained(out, max_shard_size=f"{args.shard_mb}MB")
    shapes2_processor().save_pretrained(out)
    model.to(torch.float32)

    from visiondrop.eval.vqa2 import accuracy_by_kind, answer, items_of

    items = items_of(shapes2.heldout(args.eval_scenes))
    answers = answer(model, shapes2_tokenizer(), PROMPT, items, batch_size=64)
    accuracy = accuracy_by_kind(items, answers)
    print("held-out accuracy:", json.dumps({k: round(v, 4) for k, v in accuracy.items()}), flush=True)
    summary = {
        "command": "python " + " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"),
        "earlier_commands": stages["earlier calls"]["commands"] if args.init_from else [],
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__,
                     "python": platform.python_version(), "numpy": np.__version__},
        "data": {"seed": args.seed, "train_scenes": args.scenes, "train_chats": int(len(chat_tokens)),
                 "heldout_seed": shapes2.HELDOUT_SEED, "heldout_scenes": args.eval_scenes,
                 "heldout_questions": len(items)},
        "stages": stages,
        "total_seconds": round(time.time() - t0, 1), "heldout_accuracy": accuracy,
        "parameters": sum(p.numel() for p in model.parameters()), "log": log,
    }
    (out / "training_log.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output checkpoint folder")
    parser.add_argument("--seed", type=int, default=shapes2.TRAIN_SEED)
    parser.add_argument("--scenes", type=int, default=40_000, help="training scenes (two 14-turn chats each)")
    parser.add_argument("--workers", type=int, default=max(1, (mp.cpu_count() or 2) - 1))
    parser.add_argument("--vision-seconds", type=float, default=150.0)
    parser.add_argument("--text-seconds", type=float, default=90.0)
    parser.add_argument("--align-seconds", type=float, default=30.0)
    parser.add_argument("--instruct-seconds", type=float, default=210.0)
    parser.add_argument("--max-steps", type=int, default=100_000)
    parser.add_argument("--vision-batch", type=int, default=256)
    parser.add_argument("--lm-batch", type=int, default=48)
    parser.add_argument("--vision-lr", type=float, default=1e-3)
    parser.add_argument("--region-weight", type=float, default=0.0,
                        help="vision stage: weight of a second contrastive loss, each object's patch tokens "
                             "against its phrase (0: the [CLS]-caption loss alone, as in run 3)")
    parser.add_argument("--lm-lr", type=float, default=6e-4)
    parser.add_argument("--align-lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--tune-tower", action="store_true",
                        help="the ViT learns on during instruct (LLaVA-1.5 keeps it frozen; later LLaVAs tune it)")
    parser.add_argument("--tower-lr-scale", type=float, default=0.1,
                        help="the ViT's share of --lm-lr with --tune-tower")
    parser.add_argument("--eval-scenes", type=int, default=shapes2.HELDOUT_SCENES)
    parser.add_argument("--shard-mb", type=int, default=15, help="checkpoint shard size (a device call returns "
                                                                 "files of at most 16 MiB)")
    parser.add_argument("--stage", choices=("all", "vision"), default="all",
                        help="'vision': train the tower only and save it to --out, so that the other stages can "
                             "run longer in a later call with --vision-from")
    parser.add_argument("--vision-from", default=None, help="skip the vision stage: load the tower from this file")
    parser.add_argument("--init-from", default=None,
                        help="train on from this checkpoint folder (an earlier call's; tower frozen); stages given "
                             "0 seconds are skipped, e.g. --text-seconds 0 --align-seconds 0")
    parser.add_argument("--smoke", action="store_true", help="a seconds-long CPU run that checks the script")
    args = parser.parse_args(argv)
    if args.smoke:
        args.scenes, args.workers, args.max_steps = 6, 1, 2
        args.vision_batch = args.lm_batch = 2
        args.eval_scenes, args.warmup = 1, 1
    for name in ("scenes", "workers", "max_steps", "vision_batch", "lm_batch", "eval_scenes", "shard_mb"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.stage == "vision" and args.vision_from:
        parser.error("--vision-from skips the vision stage; it cannot be combined with --stage vision")
    if args.init_from and (args.vision_from or args.stage == "vision"):
        parser.error("--init-from starts from a whole checkpoint: no --vision-from or --stage vision with it")
    if args.init_from and not (Path(args.init_from) / "training_log.json").is_file():
        parser.error(f"--init-from: {args.init_from!r} holds no training_log.json (a folder this script wrote)")
    if args.vision_from and not Path(args.vision_from).is_file():
        parser.error(f"--vision-from: no such file {args.vision_from!r}")
    if args.eval_scenes > shapes2.HELDOUT_SCENES:
        parser.error(f"--eval-scenes must be <= {shapes2.HELDOUT_SCENES} (the held-out set)")
    summary = train(args)
    print(f"done in {summary['total_seconds']:.0f}s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
