"""``visiondrop eval``: answer a benchmark with any model (and an active pruning handle),
stream predictions to JSONL, resume, shard, merge, score.

- :func:`run` answers one shard of a dataset: samples ``i, i + N, i + 2N, ...`` of the
  dataset's fixed order for ``--shard i/N``, so N processes (torchrun, accelerate or a
  plain loop) split it without talking to each other. Each answer is appended and
  flushed as one JSON line; a rerun skips the ids already in the file (a cut-off last
  line is dropped), so an interrupted run resumes where it stopped. A sidecar
  ``<file>.meta.json`` records the dataset, the shard and how many samples it owns.
- :func:`merge` joins the shard files after checking that every shard is there and
  complete and that no id appears twice; records come back in dataset order.
- :func:`score` applies the dataset's official rule (:mod:`visiondrop.eval.scorers`)
  to a complete predictions file; a file a server must score raises instead, so no
  number is printed that the benchmark's rule did not produce.

Generation follows LLaVA-1.5's evaluation: the ``vicuna_v1`` conversation (its system
line, ``USER: <image>\\n{prompt} ASSISTANT:``), images padded to a square with the image
mean (``Dataset.pad_to_square``), greedy decoding, the dataset's ``max_new_tokens``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from .base import DataFormatError, Dataset, Sample, record

LLAVA_V1_SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
                   "The assistant gives helpful, detailed, and polite answers to the human's questions.")
TEMPLATES = {
    # LLaVA-1.5's conv_vicuna_v1, as its model_vqa_loader.py builds it for every benchmark
    "llava_v1": LLAVA_V1_SYSTEM + " USER: {media}\n{prompt} ASSISTANT:",
    # no system line: the shipped shapes-llava's training format (zoo/shapes_llava.py)
    "plain": "USER: {media}\n{prompt} ASSISTANT:",
    "chat": None,  # the processor's own chat template
}


def default_template(model) -> str:
    """The conversation format for ``model``: ``plain`` for the shipped shapes-llava (its
    training format), ``llava_v1`` for other LLaVA-1.5 models, else the processor's ``chat``."""
    from ..zoo.shapes_llava import SHAPES_LLAVA_DIR

    name = str(getattr(model.config, "_name_or_path", "") or "")
    if name and Path(name).resolve() == SHAPES_LLAVA_DIR.resolve():
        return "plain"
    return "llava_v1" if type(model).__name__ == "LlavaForConditionalGeneration" else "chat"


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/N"`` -> ``(i, N)`` with ``0 <= i < N``."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard: expected i/N such as 0/2, got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard: need 0 <= i < N, got {text!r}")
    return index, count


def shard_of(samples: Sequence[Sample], shard: tuple[int, int]) -> list[tuple[int, Sample]]:
    """``(position in the dataset, sample)`` of every sample shard ``i/N`` owns."""
    index, count = shard
    return [(position, sample) for position, sample in enumerate(samples) if position % count == index]


#: what run-resume, merge, score, export and judge read from a prediction record
#: (:func:`~visiondrop.eval.base.record` and the dataset position), with its JSON type
RECORD_FIELDS = {"id": str, "prediction": str, "reference": object, "meta": dict, "prompt": str, "position": int}
#: what they read from a sidecar (``<file>.meta.json``); "template" and "run" only merge compares
META_FIELDS = {"dataset": str, "scorer": (str, type(None)), "total": int, "shard": list, "owned": int}
_JSON_TYPES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", dict: "an object",
               list: "a list", type(None): "null", object: "any value"}


def _parse(where: str, raw: bytes):
    """``raw`` decoded strictly and parsed; a bad byte or bad JSON is an error naming ``where``."""
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise DataFormatError(f"{where}: not UTF-8 (byte {error.start}: {error.reason}); the file is damaged"
                              ) from None
    except json.JSONDecodeError as error:
        raise DataFormatError(f"{where}: not JSON ({error.msg}, column {error.colno}); the file is damaged"
                              ) from None


def _check_fields(where: str, value, fields: dict) -> dict:
    """``value`` itself, if it is a JSON object with every key of ``fields`` of its type;
    else an error naming ``where`` and the key, so no reader fails later on a KeyError."""
    if not isinstance(value, dict):
        raise DataFormatError(f"{where}: expected a JSON object, got {_JSON_TYPES[type(value)]}")
    for key, kinds in fields.items():
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        if key not in value:
            raise DataFormatError(f"{where}: no {key!r} key")
        # JSON true/false are Python ints: an integer field refuses them
        if not isinstance(value[key], kinds) or (isinstance(value[key], bool) and bool not in kinds):
            raise DataFormatError(f"{where}: {key!r} must be {' or '.join(_JSON_TYPES[k] for k in kinds)}, "
                                  f"got {_JSON_TYPES[type(value[key])]}")
    return value


def read_records(path: str | Path, fields: dict = RECORD_FIELDS) -> list[dict]:
    """The records of a predictions file (each checked to have ``fields``); a cut-off last
    line (an interrupted write) is dropped, a malformed line elsewhere is an error naming
    the file and line."""
    path = Path(path)
    if not path.is_file():
        return []
    # bytes, not text: a write cut inside a multi-byte character must not fail the decoding
    # of the whole file; what follows the last newline is the cut line (or nothing)
    lines = path.read_bytes().split(b"\n")[:-1]
    return [_check_fields(f"{path}:{number}", _parse(f"{path}:{number}", line), fields)
            for number, line in enumerate(lines, 1) if line.strip()]


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".meta.json")


def read_meta(path: str | Path) -> dict:
    side = _sidecar(Path(path))
    if not Path(path).is_file():
        raise ValueError(f"{path}: no such predictions file")
    if not side.is_file():
        raise ValueError(f"{path}: no {side.name} beside it; predictions files are written by `visiondrop eval run`")
    meta = _check_fields(str(side), _parse(str(side), side.read_bytes()), META_FIELDS)
    if len(meta["shard"]) != 2 or not all(type(part) is int for part in meta["shard"]):
        raise DataFormatError(f"{side}: 'shard' must be [i, N], got {meta['shard']!r}")
    return meta


# ------------------------------------------------------------------ answering
def prompt_text(processor, sample: Sample, template: str) -> str:
    media = "<video>" if sample.video is not None else "<image>" if sample.image is not None else ""
    if template not in TEMPLATES:
        raise ValueError(f"template: one of {sorted(TEMPLATES)}, got {template!r}")
    if TEMPLATES[template] is None:
        from ..inputs import format_prompt

        return format_prompt(processor, sample.prompt, sample.image is not None, sample.video is not None)
    text = TEMPLATES[template].format(media=media, prompt=sample.prompt)
    return text.replace("USER: \n", "USER: ") if not media else text


def _image(sample: Sample, processor, pad: bool):
    image = sample.image()
    if pad:
        from .prompts import mean_background, pad_to_square

        mean = getattr(processor.image_processor, "image_mean", None) or (0.5, 0.5, 0.5)
        image = pad_to_square(image, mean_background(mean))
    return image


@torch.no_grad()
def answer_batch(model, processor, samples: Sequence[Sample], template: str = "llava_v1",
                 pad_to_square: bool = True) -> list[str]:
    """Greedy answers of ``samples`` (one batch, left-padded)."""
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    texts = [prompt_text(processor, s, template) for s in samples]
    kwargs = {}
    if any(s.image is not None for s in samples):
        if not all(s.image is not None for s in samples):
            raise ValueError("answer_batch: a batch mixes samples with and without images")
        kwargs["images"] = [_image(s, processor, pad_to_square) for s in samples]
    if any(s.video is not None for s in samples):
        kwargs["videos"] = [s.video() for s in samples]
    tokenizer = processor.tokenizer
    tokenizer.padding_side = "left"  # generate() reads each row's last column
    batch = processor(text=texts, padding=True, return_tensors="pt", **kwargs).to(device)
    for key in ("pixel_values", "pixel_values_images", "pixel_values_videos"):
        if key in batch:
            batch[key] = batch[key].to(dtype)
    limit = max(s.max_new_tokens for s in samples)
    output = model.generate(**batch, max_new_tokens=limit, do_sample=False, num_beams=1)
    new = output[:, batch["input_ids"].shape[1]:]
    return [text.strip() for text in processor.batch_decode(new, skip_special_tokens=True)]


def run(model, processor, dataset: Dataset, out: str | Path, shard: tuple[int, int] = (0, 1),
        batch_size: int = 1, limit: int | None = None, template: str = "llava_v1", progress: bool = True,
        run_info: dict | None = None) -> Path:
    """Answer shard ``shard`` of ``dataset`` into the JSONL file ``out`` (appending,
    resuming); returns the path. ``run_info`` (model, method, budget...) goes into the
    sidecar, and a rerun with different ``run_info`` is refused rather than mixed in."""
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    samples = list(dataset.samples())
    if limit is not None:
        samples = samples[:limit]
    mine = shard_of(samples, shard)
    meta = {"dataset": dataset.name, "scorer": dataset.scorer, "total": len(samples), "shard": list(shard),
            "owned": len(mine), "template": template, "run": run_info or {}}
    side = _sidecar(out)
    if side.is_file():
        before = read_meta(out)
        if before != meta:
            raise ValueError(f"{out}: it holds predictions of another run ({before}); use a new --out")
    side.write_text(json.dumps(meta, indent=1))

    done = {r["id"] for r in read_records(out)}
    truncate_partial_line(out)
    todo = [(position, sample) for position, sample in mine if sample.id not in done]
    info = run_info or {}
    what = (f"{info.get('method', 'full')}@{info['budget']}" if info.get("budget") is not None
            else info.get("method") or "full")
    where = f", shard {shard[0]}/{shard[1]}" if shard[1] > 1 else ""
    bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc=f"{dataset.name} {what}{where}",
               disable=not progress, unit="q")
    with out.open("a", encoding="utf-8") as stream:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            answers = answer_batch(model, processor, [s for _, s in chunk], template, dataset.pad_to_square)
            for (position, sample), prediction in zip(chunk, answers):
                line = record(sample, prediction)
                line["position"] = position
                stream.write(json.dumps(line, ensure_ascii=False) + "\n")
            stream.flush()
            os.fsync(stream.fileno())
            bar.update(len(chunk))
    bar.close()
    return out


def truncate_partial_line(path: Path) -> None:
    """Drop a cut-off last line so appended records start on a line of their own."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[:data.rfind(b"\n") + 1])


# ------------------------------------------------------------- merge and score
def merge(paths: Iterable[str | Path], out: str | Path) -> Path:
    """Join the shard files of one run into ``out`` (dataset order), after checking
    that the shards are one run's, all present and complete, with no id twice."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("merge: no predictions files given")
    metas = [read_meta(p) for p in paths]
    first = metas[0]
    for path, meta in zip(paths, metas):
        for key in ("dataset", "total", "template", "run"):
            if meta.get(key) != first.get(key):
                raise ValueError(f"{path}: {key} {meta.get(key)!r} differs from {paths[0]}'s {first.get(key)!r}; "
                                 "these shards are not one run")
    count = first["shard"][1]
    shards = sorted(meta["shard"][0] for meta in metas)
    if shards != list(range(count)) or any(meta["shard"][1] != count for meta in metas):
        raise ValueError(f"merge: shards {shards} of {count} given; expected each of 0..{count - 1} once")
    records, seen = [], {}
    for path, meta in zip(paths, metas):
        rows = read_records(path)
        if len(rows) != meta["owned"]:
            raise ValueError(f"{path}: {len(rows)} of its {meta['owned']} samples answered; "
                             "finish it (rerun the same command resumes)")
        refuse_repeats(path, rows, seen)
        records += rows
    if len(records) != first["total"]:
        raise ValueError(f"merge: {len(records)} records for {first['total']} samples")
    records.sort(key=lambda r: r["position"])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    _sidecar(out).write_text(json.dumps({**first, "shard": [0, 1], "owned": first["total"]}, indent=1))
    return out


def refuse_repeats(path: Path, rows: list[dict], seen: dict) -> None:
    """Add ``rows``' ids to ``seen`` (id -> file); an id already there is an error naming
    it: a repeated id with one missing would pass a count of the records."""
    for row in rows:
        if row["id"] in seen:
            where = "appears twice" if seen[row["id"]] == path else f"is also in {seen[row['id']]}"
            raise ValueError(f"{path}: sample {row['id']!r} {where}")
        seen[row["id"]] = path


def score(path: str | Path) -> dict:
    """The dataset's official metrics for a complete predictions file (every id once)."""
    from .scorers import SCORERS

    meta = read_meta(path)
    records = read_records(path)
    if meta["shard"] != [0, 1]:
        raise ValueError(f"{path}: shard {meta['shard'][0]}/{meta['shard'][1]} only; merge the shards first")
    refuse_repeats(Path(path), records, {})
    if len(records) != meta["total"]:
        raise ValueError(f"{path}: {len(records)} of {meta['total']} samples answered; finish the run first")
    scorer = meta["scorer"]
    if scorer is None or scorer not in SCORERS:
        raise ValueError(f"{path}: {meta['dataset']} is scored by its benchmark's server or judge, not here; "
                         "use `visiondrop eval export`")
    return SCORERS[scorer](records)
