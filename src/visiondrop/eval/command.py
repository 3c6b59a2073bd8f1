"""``visiondrop eval run | merge | score | export | judge`` (wired into :mod:`visiondrop.cli`)."""

from __future__ import annotations

import argparse
import json
import sys


def _pairs(values: list[str] | None, option: str) -> dict[str, str]:
    out = {}
    for value in values or []:
        key, sep, text = value.partition("=")
        if not sep or not key:
            raise ValueError(f"{option}: expected key=value, got {value!r}")
        out[key.replace("-", "_")] = text
    return out


def add_parser(commands) -> None:
    ev = commands.add_parser("eval", help="benchmarks: answer (sharded, resumable), merge, score, export, judge",
                             description="The evaluation harness (docs/eval.md).")
    sub = ev.add_subparsers(dest="eval_command", required=True)

    run = sub.add_parser("run", help="answer one shard of a benchmark into a JSONL file (resumes)")
    run.add_argument("--dataset", required=True, help="a dataset name (visiondrop eval run --dataset list)")
    run.add_argument("--data", action="append", metavar="KEY=PATH",
                     help="the benchmark's files, e.g. --data questions=coco_pope_random.json --data images=val2014")
    run.add_argument("--model", default=None, help="checkpoint folder or hub id (default: the shipped shapes-llava)")
    run.add_argument("--method", default="visiondrop")
    run.add_argument("--budget", default="64", help="visual tokens averaged over LLM layers, or 'full'")
    run.add_argument("--option", action="append", metavar="KEY=VALUE", help="method option, e.g. positions=keep")
    run.add_argument("--out", default=None,
                     help="predictions JSONL, one per shard (required, except with --dataset list); '{shard}' in "
                          "the name becomes e.g. 0of2")
    run.add_argument("--shard", default="0/1",
                     help="i/N: this process answers samples i, i+N, ... (default 0/1); 'auto': from the RANK and "
                          "WORLD_SIZE that torchrun and accelerate launch set, on GPU LOCAL_RANK")
    run.add_argument("--batch-size", type=int, default=1)
    run.add_argument("--limit", type=int, default=None, help="the first N samples only")
    run.add_argument("--template", choices=("llava_v1", "plain", "chat"), default=None,
                     help="conversation format (default: llava_v1 for LLaVA-1.5, plain for shapes-llava, "
                          "else the processor's chat template)")
    run.add_argument("--device", default=None)
    run.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto")
    run.add_argument("--attn", default="sdpa")

    merge = sub.add_parser("merge", help="join shard files into one (checks no sample is lost or twice)")
    merge.add_argument("shards", nargs="+")
    merge.add_argument("--out", required=True)

    score = sub.add_parser("score", help="official metrics of predictions files; the paper's Avg. %% with --baseline")
    score.add_argument("predictions", nargs="+", help="merged predictions files, one per benchmark")
    score.add_argument("--baseline", nargs="*", default=None,
                       help="the unpruned model's predictions files, same benchmarks (the 100%% row)")
    score.add_argument("--json", default=None, help="also write the scores as JSON here")

    export = sub.add_parser("export", help="server upload files (VQAv2 test-dev, VizWiz test, MMBench test) "
                                            "or the video QA judge's input")
    export.add_argument("predictions")
    export.add_argument("--out", required=True)

    judge = sub.add_parser("judge", help="video QA: judge predictions with an OpenAI-compatible endpoint you supply")
    judge.add_argument("predictions")
    judge.add_argument("--judge-url", required=True, help="e.g. https://api.openai.com/v1 (key: OPENAI_API_KEY)")
    judge.add_argument("--judge-model", default="gpt-3.5-turbo", help="Video-LLaVA's judge was gpt-3.5-turbo")
    judge.add_argument("--out", required=True, help="verdicts JSONL (resumes)")


def main(args: argparse.Namespace) -> int:
    try:
        return {"run": _run, "merge": _merge, "score": _score, "export": _export, "judge": _judge}[
            args.eval_command](args)
    except ValueError as error:  # bad input: named, before any compute
        print(f"visiondrop: {error}", file=sys.stderr)
        return 2


def _run(args) -> int:
    import torch

    import visiondrop

    from ..inputs import check_attention, check_device, load_model
    from .datasets import DATASETS, load_dataset
    from .harness import default_template, run

    if args.dataset == "list":
        from .datasets import describe

        print("\n".join(describe(name) for name in sorted(DATASETS)))
        return 0
    if not args.out:
        raise ValueError("--out: required (the predictions file to write, JSON lines)")
    options = _method_options(args.method, _pairs(args.option, "--option"))
    shard, out, local = _shard_and_out(args.shard, args.out)
    dataset = load_dataset(args.dataset, **_pairs(args.data, "--data"))
    budget = None if args.budget == "full" else int(args.budget) if args.budget.isdigit() else None
    if budget is None and args.budget != "full":
        raise ValueError(f"--budget: an integer or 'full', got {args.budget!r}")
    device = check_device(args.device or (f"cuda:{local}" if torch.cuda.is_available() else "cpu"))
    check_attention(args.attn)
    dtype = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    model, processor = load_model(args.model, device, dtype, args.attn)
    template = args.template or default_template(model)
    handle = visiondrop.apply(model, args.method, budget=budget, **options) if budget is not None else None
    info = {"model": args.model or "shapes-llava", "method": args.method if handle else "full", "budget": budget,
            "options": options}
    path = run(model, processor, dataset, out, shard, args.batch_size, args.limit, template, run_info=info)
    print(f"wrote {path}")
    return 0


def _method_options(method: str, pairs: dict[str, str]) -> dict:
    """``--option`` values typed by ``--method``'s config, checked before any model loads."""
    from ..methods import get_method
    from ..methods.options import parse_method_options
    from ..models import model_options

    try:
        get_method(method)
    except ValueError as error:
        raise ValueError(f"--method: {error}") from None
    for name in ("budget", "schedule"):
        if name in pairs:
            raise ValueError(f"--option: {name} is not an option here; give the budget with --budget")
    try:
        return parse_method_options(method, pairs, model_options())
    except ValueError as error:
        raise ValueError(f"--option: {error}") from None


def _shard_and_out(text: str, out: str) -> tuple[tuple[int, int], str, int]:
    """``(shard, output path, local device index)`` of ``--shard`` / ``--out``."""
    import os

    from .harness import parse_shard

    local = 0
    if text == "auto":
        env = {key: os.environ.get(key) for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
        if env["RANK"] is None or env["WORLD_SIZE"] is None:
            raise ValueError("--shard auto: RANK and WORLD_SIZE are not set; launch with torchrun or accelerate, "
                             "or give i/N")
        shard = parse_shard(f"{env['RANK']}/{env['WORLD_SIZE']}")
        local = int(env["LOCAL_RANK"] or 0)
    else:
        shard = parse_shard(text)
    if shard[1] > 1 and "{shard}" not in out and text == "auto":
        raise ValueError("--out: with --shard auto every process needs its own file; put {shard} in the name, "
                         "e.g. --out pope.{shard}.jsonl")
    return shard, out.replace("{shard}", f"{shard[0]}of{shard[1]}"), local


def _merge(args) -> int:
    from .harness import merge

    print(f"wrote {merge(args.shards, args.out)}")
    return 0


def _score(args) -> int:
    from .report import score_files, to_markdown

    result = score_files(args.predictions, args.baseline)
    print(to_markdown(result))
    if args.json:
        with open(args.json, "w") as stream:
            json.dump(result, stream, indent=1)
    return 0


def _export(args) -> int:
    from .export import export

    print(f"wrote {export(args.predictions, args.out)}")
    return 0


def _judge(args) -> int:
    from .harness import read_meta, read_records
    from .judge import judge, openai_chat

    meta = read_meta(args.predictions)
    if meta["scorer"] != "videoqa":
        raise ValueError(f"{args.predictions}: {meta['dataset']} is not a video QA benchmark; "
                         "use `visiondrop eval score`")
    result = judge(read_records(args.predictions), openai_chat(args.judge_url, args.judge_model), args.out)
    print(json.dumps(result, indent=1))
    return 0
