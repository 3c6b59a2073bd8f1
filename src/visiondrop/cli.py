"""Command line: ``visiondrop generate``, ``methods``, ``demo``, ``fidelity``, ``flops``, ``bench``, ``eval``,
``visualize``, ``bias`` and ``study``."""

from __future__ import annotations

import argparse
import shlex
import sys

FIDELITY_BUDGETS = (192, 128, 64, 32, 16)  # as visiondrop.eval.fidelity.DEFAULT_BUDGETS (not imported: lazy)
# as visiondrop.zoo.proxies.available_proxies(), the default first (not imported: it imports torch)
PROXIES = ("shapes-llava", "shapes-llava-2")
PROXY_HELP = ("proxy model: shapes-llava (default; ShapesVQA, the regression guard) or shapes-llava-2 "
              "(ShapesVQA-2, the proxy meant to rank methods)")


def _budget(value: str) -> int | None:
    if value == "full":
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--budget must be an integer or 'full', got {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="visiondrop", description="Training-free visual-token pruning for LVLMs.")
    parser.add_argument("--version", action="version", version=f"visiondrop {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser("generate", help="answer a prompt about an image or a video, pruned")
    gen.add_argument("--model", default=None,
                     help="local checkpoint folder or hub id (default: the shipped shapes-llava)")
    gen.add_argument("--image", default=None, help="image file")
    gen.add_argument("--video", default=None,
                     help="video as a folder of frame images (sorted by name) or a .npy uint8 array "
                          "(frames, height, width, 3); frames are sampled evenly")
    gen.add_argument("--frames", type=int, default=None,
                     help="frames to sample from --video (default: the model's, e.g. 8 for Video-LLaVA)")
    gen.add_argument("--prompt", required=True, help="the question; wrapped in the model's chat format")
    gen.add_argument("--budget", type=_budget, default=64,
                     help="visual tokens averaged over LLM layers, or 'full' for the unpruned model (default 64)")
    gen.add_argument("--method", default="visiondrop", help="pruning method (see 'visiondrop methods')")
    gen.add_argument("--positions", choices=("reindex", "keep"), default=None,
                     help="position ids after pruning (default: the method's own)")
    gen.add_argument("--max-new-tokens", type=int, default=64)
    gen.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    gen.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto")
    gen.add_argument("--attn", default="sdpa", help="attention backend: sdpa, eager, flash_attention_2")

    flops = commands.add_parser(
        "flops", help="analytic prefill FLOPs of the full model and of methods at a budget (the paper's Table 4)",
        description="Count the FLOPs of one prefill (vision tower, projector, LM, LM head) from a model config "
                    "and each method's per-layer visual-token counts. Conventions: docs/benchmarks/flops.md.")
    flops.add_argument("--config", default="llava-1.5-7b",
                       help="llava-1.5-7b, llava-next-7b, internvl3-8b, or a checkpoint folder / hub id (its "
                            "config only)")
    flops.add_argument("--methods", default="visiondrop",
                       help="comma list of methods, each with options if any: fastv[layer=3] (default visiondrop)")
    flops.add_argument("--budget", type=int, default=64, help="visual-token budget (default 64)")
    flops.add_argument("--text-tokens", type=int, default=64, help="text tokens of the prompt (default 64)")
    flops.add_argument("--image-size", default=None,
                       help="HxW of the image (anyres: default the largest grid; Qwen3-VL: 512x512)")
    flops.add_argument("--table4", action="store_true", help="print the paper's Table 4 cells beside ours")

    bench = commands.add_parser(
        "bench", help="latency, throughput and memory of every method at one budget, interleaved (GPU)",
        description="Time the full model, each method at --budget and the ideal (only B visual tokens from the "
                    "start) on one model, interleaved; write Markdown, JSON and a plot (docs/benchmarks).")
    bench.add_argument("--config", default="llava-1.5-7b",
                       help="llava-1.5-7b, llava-next-7b or internvl3-8b (random weights, no download), or a "
                            "checkpoint")
    bench.add_argument("--methods", default="visiondrop,fastv,pdrop,sparsevlm,visionzip,vispruner",
                       help="comma list of methods, each with options if any: fastv[layer=3]")
    bench.add_argument("--budget", type=int, default=64)
    bench.add_argument("--throughput-batches", default="8,32")
    bench.add_argument("--decode-batches", default="1,32")
    bench.add_argument("--repeats", type=int, default=20)
    bench.add_argument("--warmup", type=int, default=3)
    bench.add_argument("--new-tokens", type=int, default=32)
    bench.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default="bfloat16")
    bench.add_argument("--attn", default="sdpa")
    bench.add_argument("--device", default=None, help="default: cuda if available")
    bench.add_argument("--generate-batches", default="1,16", help="generate mode: batch sizes")
    bench.add_argument("--generate-tokens", default="1,64", help="generate mode: max_new_tokens of each call")
    bench.add_argument("--cuda-graphs", action="store_true",
                       help="generate mode: also time full and each method with apply(..., cuda_graphs=True)")
    bench.add_argument("--mode", choices=("eager", "graph", "both", "generate", "data-parallel"), default="eager",
                       help="eager: every figure, eager prefills; graph: batch-1 TTFT and prefill + N tokens "
                            "with the prefill captured as a CUDA graph (LLaVA-1.5; visiondrop.capture); "
                            "generate: the user's own model.generate() by wall clock at each batch and token "
                            "count, with each prefill's operation and launch counts; "
                            "data-parallel: prefill throughput of the processes torchrun or accelerate launch "
                            "started, one model each (docs/multi-gpu.md)")
    bench.add_argument("--steps", type=int, default=2,
                       help="data-parallel: prefills per timed sample (each sample starts at a barrier)")
    bench.add_argument("--out", default="bench-results", help="output folder")

    from .analysis import bias as bias_command
    from .analysis import study as study_command
    from .analysis import visualize as visualize_command
    from .eval import command as eval_command

    eval_command.add_parser(commands)
    visualize_command.add_parser(commands)
    bias_command.add_parser(commands)
    study_command.add_parser(commands)
    commands.add_parser("methods", help="list the pruning methods")
    demo = commands.add_parser("demo", help="VisionDrop end to end on a shipped proxy model (shapes-llava), on CPU")
    demo.add_argument("--scenes", type=int, default=4,
                      help="held-out scenes to ask about, each with its questions (1-16)")
    demo.add_argument("--figure-budget", type=int, default=64, help="budget whose stages the PNG shows")
    demo.add_argument("--out", default="visiondrop-demo.png", help="PNG to write")
    demo.add_argument("--proxy", default=PROXIES[0], help=PROXY_HELP)
    demo.add_argument("--model", default=None, help="checkpoint folder of the proxy (default: the shipped one)")

    fid = commands.add_parser(
        "fidelity", help="ShapesVQA accuracy of every method at several budgets (tables and plot)",
        description="Answer a proxy model's held-out questions (ShapesVQA or ShapesVQA-2) with the full model and "
                    "with every pruning method at every budget; write fidelity.json, fidelity.md and fidelity.png.")
    fid.add_argument("--proxy", default=PROXIES[0], help=PROXY_HELP)
    fid.add_argument("--model", default=None,
                     help="checkpoint folder of the proxy (default: the shipped one, in visiondrop/zoo/<proxy>)")
    fid.add_argument("--methods", default=None,
                     help="comma list of methods, each with options if any: visiondrop[positions=keep] (default: "
                          "every registered method, and visiondrop[positions=keep] unless --positions is given)")
    fid.add_argument("--positions", choices=("reindex", "keep", "both"), default=None,
                     help="position ids after pruning for every method: reindex, keep, or both (each method run "
                          "twice, labelled name[positions=reindex] and name[positions=keep]); a method spec that "
                          "sets positions keeps its own (default: each method's own)")
    fid.add_argument("--budgets", default=",".join(map(str, FIDELITY_BUDGETS)),
                     help="comma list of visual-token budgets; the full model always runs "
                          f"(default {','.join(map(str, FIDELITY_BUDGETS))})")
    fid.add_argument("--limit", default=None,
                     help="only the first N held-out questions (default: all: 2,040 for shapes-llava, 2,099 for "
                          "shapes-llava-2)")
    fid.add_argument("--batch-size", default="32", help="questions per forward pass (default 32)")
    fid.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available, else cpu)")
    fid.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                     help="model dtype (default float32)")
    fid.add_argument("--out", default="fidelity-results",
                     help="output folder (default ./fidelity-results; the committed results: --out docs/fidelity)")
    return parser


def generate(args: argparse.Namespace) -> int:
    import torch

    import visiondrop

    from . import inputs

    dtype = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    try:  # every check that needs no model first, then the model
        if args.image is None and args.video is None:
            raise inputs.InputError("--image/--video", "give an image, a video, or both")
        if args.frames is not None and args.frames < 1:
            raise inputs.InputError("--frames", f"must be >= 1, got {args.frames}")
        if args.max_new_tokens < 1:
            raise inputs.InputError("--max-new-tokens", f"must be >= 1, got {args.max_new_tokens}")
        device = inputs.check_device(args.device)
        inputs.check_attention(args.attn)
        if args.method not in visiondrop.available_methods():
            raise inputs.InputError("--method", f"unknown {args.method!r}; available: "
                                                f"{', '.join(sorted(visiondrop.available_methods()))}")
        image = None if args.image is None else inputs.load_image(args.image)
        if args.video is not None:
            inputs.load_frames(args.video, args.frames or 1)  # the file is readable (sampled again below)
        model, processor = inputs.load_model(args.model, device, dtype, args.attn)
        video = None
        if args.video is not None:
            video = inputs.load_frames(args.video, inputs.check_frames(model.config, args.frames))
    except inputs.InputError as error:
        print(f"visiondrop: {error}", file=sys.stderr)
        return 2

    handle = None
    if args.budget is not None:
        options = {} if args.positions is None else {"positions": args.positions}
        try:
            handle = visiondrop.apply(model, args.method, budget=args.budget, **options)
        except ValueError as error:
            print(f"visiondrop: {error}", file=sys.stderr)
            return 2
    media = {} if image is None else {"images": image}
    if video is not None:
        media["videos"] = [video]
    text = inputs.format_prompt(processor, args.prompt, image is not None, video is not None)
    batch = processor(text=text, return_tensors="pt", **media).to(device)
    for key in ("pixel_values", "pixel_values_videos"):
        if key in batch:
            batch[key] = batch[key].to(model.dtype)
    try:
        with torch.inference_mode():
            output = model.generate(**batch, max_new_tokens=args.max_new_tokens, do_sample=False)
    except ValueError as error:  # e.g. a video of another frame count than the model's
        print(f"visiondrop: {error}", file=sys.stderr)
        return 2
    answer = processor.batch_decode(output[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)[0]
    print(answer.strip())
    if handle is None:
        print("\n[full model: no pruning]")
    else:
        print(f"\n[{handle.method.name}, budget {args.budget}: {handle.schedule}]")
        video_schedule = getattr(handle.adapter, "video_schedule", None)
        if video is not None and video_schedule is not None:
            print(f"[video, per frame: {video_schedule}]")
        print(handle.report.summary())
        handle.remove()
    return 0


def flops(args: argparse.Namespace) -> int:
    from .bench import flops as fl

    if args.table4:
        print("| model | method | budget | paper TFLOPs | ours | gap |\n|---|---|---|---|---|---|")
        for row in fl.table4_rows():
            print(f"| {row['config']} | {row['method']} | {row['budget'] or '-'} | {row['paper_tflops']:.2f} | "
                  f"{row['tflops']:.2f} | {row['gap']:+.1%} |")
        print(f"\nllava-next-7b visiondrop 320 counts the image's {fl.TABLE4_NEXT_NEWLINES} newline tokens in every "
              "layer, as the paper's figure does; our layout drops them (the release's), which "
              "`visiondrop flops --config llava-next-7b --budget 320` counts. Conventions: docs/benchmarks/flops.md.")
        return 0
    try:
        if args.text_tokens < 0:
            raise _BadArgument("--text-tokens", f"must be >= 0, got {args.text_tokens}")
        size = None
        if args.image_size is not None:
            try:
                size = tuple(int(v) for v in args.image_size.lower().split("x"))
            except ValueError:
                size = ()
            if len(size) != 2 or min(size) < 1:
                raise _BadArgument("--image-size", f"expected HxW such as 672x672, got {args.image_size!r}")
        names = [name.strip() for name in args.methods.split(",") if name.strip()]
        try:
            model = fl.meta_model(args.config)
        except (OSError, ValueError) as error:
            raise _BadArgument("--config", str(error)) from None
        import visiondrop
        from visiondrop.eval.fidelity import parse_method

        rows = [("full", fl.model_prefill_flops(model, None, image_size=size, text_tokens=args.text_tokens))]
        for name in names:
            try:
                method, options = parse_method(name)
            except ValueError as error:
                raise _BadArgument("--methods", str(error).removeprefix("methods: ")) from None
            try:
                visiondrop.plan(model, method, budget=args.budget, **options)  # the checks and errors of apply()
                rows.append((name, fl.model_prefill_flops(model, method=method, budget=args.budget, options=options,
                                                          image_size=size, text_tokens=args.text_tokens)))
            except ValueError as error:
                raise _BadArgument("--methods" if method not in visiondrop.available_methods() else "--budget",
                                   f"{name}: {error}") from None
    except (_BadArgument, NotImplementedError) as error:
        print(f"visiondrop: {error}", file=sys.stderr)
        return 2
    full = rows[0][1].total
    print(f"{args.config}, budget {args.budget}, {args.text_tokens} text tokens (TFLOPs)")
    print("| method | vision | projector | LLM | LM head | total | of full |\n|---|---|---|---|---|---|---|")
    for name, count in rows:
        print(f"| {name} | {count.vision / 1e12:.3f} | {count.projector / 1e12:.3f} | {count.llm / 1e12:.3f} | "
              f"{count.lm_head / 1e12:.3f} | {count.total / 1e12:.2f} | {count.total / full:.1%} |")
    return 0


def bench(args: argparse.Namespace) -> int:
    import torch

    import visiondrop

    from .bench import latency

    try:
        methods = tuple(name.strip() for name in args.methods.split(",") if name.strip())
        try:
            unknown = [m for m in methods if latency.method_spec(m)[0] not in visiondrop.available_methods()]
        except ValueError as error:
            raise _BadArgument("--methods", str(error)) from None
        if unknown:
            raise _BadArgument("--methods", f"unknown {unknown}; available: {sorted(visiondrop.available_methods())}")
        batches = {}
        for option in ("throughput_batches", "decode_batches", "generate_batches", "generate_tokens"):
            text = getattr(args, option)
            batches[option] = tuple(_positive_int("--" + option.replace("_", "-"), v) for v in text.split(",") if v)
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        config = latency.BenchConfig(model=args.config, methods=methods, budget=args.budget,
                                     repeats=args.repeats, warmup=args.warmup, new_tokens=args.new_tokens,
                                     dtype=args.dtype, attn=args.attn, device=device,
                                     cuda_graphs=args.cuda_graphs, **batches)
    except (_BadArgument, ValueError) as error:
        print(f"visiondrop: {error}", file=sys.stderr)
        return 2
    if args.mode == "data-parallel":
        return _bench_data_parallel(config, args)
    from .bench import captured, generate

    runs = {"eager": [latency], "graph": [captured], "both": [latency, captured], "generate": [generate]}[args.mode]
    model = None
    for tool in runs:
        try:
            if model is None:
                model = latency.build_model(config.model, config.dtype, config.device, config.attn)
            result = {captured: captured.run_captured, generate: generate.run_generate}.get(
                tool, latency.run_bench)(config, model)
        except ValueError as error:  # a budget a method cannot plan, a model graphs do not support
            print(f"visiondrop: {error}", file=sys.stderr)
            return 2
        paths = tool.save(result, args.out)
        print(tool.to_markdown(result))
        for path in paths.values():
            print(f"wrote {path}")
    return 0


def _bench_data_parallel(config, args: argparse.Namespace) -> int:
    from .bench import parallel

    try:
        result = parallel.run_data_parallel(config, parallel.Place.from_env(), steps=args.steps)
    except ValueError as error:
        print(f"visiondrop: {error}", file=sys.stderr)
        return 2
    if result is not None:  # rank 0
        paths = parallel.save(result, args.out)
        print(paths["md"].read_text())
        for path in paths.values():
            print(f"wrote {path}")
    return 0


def methods(args: argparse.Namespace) -> int:
    import visiondrop

    for name, summary in visiondrop.available_methods().items():
        print(f"{name:12s} {summary}")
    return 0


def demo(args: argparse.Namespace) -> int:
    from .demo import run

    try:
        proxy = _proxy(args.proxy)
        return run(num_scenes=args.scenes, figure_budget=args.figure_budget, out=args.out, model_path=args.model,
                   proxy=proxy)
    except (_BadArgument, ValueError, FileNotFoundError) as error:
        print(f"visiondrop: {error}", file=sys.stderr)
        return 2


class _BadArgument(Exception):
    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")


def _positive_int(option: str, value: str, most: int | None = None) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1 or (most is not None and number > most):
        span = f"in [1, {most:,}]" if most is not None else ">= 1"
        raise _BadArgument(option, f"must be an integer {span}, got {value!r}")
    return number


def _proxy(name: str):
    """The proxy ``--proxy`` names (a one-line error listing the names otherwise)."""
    if name not in PROXIES:  # checked here: the registry's import costs torch
        raise _BadArgument("--proxy", f"unknown {name!r}; available: {', '.join(PROXIES)}")
    from .zoo.proxies import get_proxy

    return get_proxy(name)


def _fidelity_options(args: argparse.Namespace):
    """Everything but the model checked: (proxy, methods, budgets, limit, batch_size, device, dtype)."""
    import torch

    from .eval import fidelity as fid

    proxy = _proxy(args.proxy)
    try:
        if args.methods is None:
            methods = fid.normalize_methods(None, args.positions)
        else:
            names = [name.strip() for name in args.methods.split(",")]
            if not all(names):
                raise _BadArgument("--methods", f"expected a comma list of method names, got {args.methods!r}")
            methods = fid.normalize_methods(names, args.positions)
        budgets = []
        for word in (w.strip() for w in args.budgets.split(",")):
            if word == "full":
                continue
            try:
                budgets.append(int(word))
            except ValueError:
                raise _BadArgument("--budgets", f"expected a comma list of integers (or 'full'), got {word!r} "
                                   f"in {args.budgets!r}") from None
        budgets = fid.normalize_budgets(budgets)
    except fid.FidelityConfigError as error:
        raise _BadArgument("--" + error.parameter.replace("_", "-"), error.message) from None
    limit = None if args.limit is None else _positive_int("--limit", args.limit, proxy.heldout_questions)
    batch_size = _positive_int("--batch-size", args.batch_size)
    try:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as error:
        raise _BadArgument("--device", str(error)) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise _BadArgument("--device", f"{args.device!r} asked for, but CUDA is not available")
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    return proxy, methods, budgets, limit, batch_size, device, dtype


def fidelity(args: argparse.Namespace, argv: list[str]) -> int:
    from pathlib import Path

    try:
        proxy, methods, budgets, limit, batch_size, device, dtype = _fidelity_options(args)
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise _BadArgument("--out", f"{args.out!r} exists and is not a folder")
    except _BadArgument as error:
        print(f"visiondrop: {error}", file=sys.stderr)
        return 2

    from .eval import fidelity as fid

    try:
        model, processor = proxy.load(args.model, device=device, dtype=dtype)
    except (FileNotFoundError, OSError) as error:
        print(f"visiondrop: --model: {error}", file=sys.stderr)
        return 2
    try:
        fid.check_arguments(model, methods, budgets, batch_size)  # budgets the model cannot take, before any compute
    except fid.FidelityConfigError as error:
        print(f"visiondrop: --{error.parameter.replace('_', '-')}: {error.message}", file=sys.stderr)
        return 2
    # methods are already run under --positions (normalize_methods), so none is passed on
    result = fid.run_fidelity(model, processor, proxy.items(limit), methods, budgets, batch_size=batch_size,
                              model_name=proxy.name if args.model is None else args.model,
                              command="visiondrop " + shlex.join(argv), proxy=proxy)
    paths = fid.save(result, out)
    print(fid.to_markdown(result))
    for path in paths.values():
        print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if args.command == "fidelity":
        return fidelity(args, argv)
    if args.command == "eval":
        from .eval import command as eval_command

        return eval_command.main(args)
    if args.command in ("visualize", "bias", "study"):
        from .analysis import bias, study, visualize

        tool = {"visualize": visualize, "bias": bias, "study": study}[args.command]
        return tool.main(args, argv) if tool is bias else tool.main(args)
    return {"generate": generate, "methods": methods, "demo": demo, "flops": flops, "bench": bench}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
