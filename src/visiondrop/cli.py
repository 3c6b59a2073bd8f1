"""Command line: ``visiondrop generate`` and ``visiondrop methods``."""

from __future__ import annotations

import argparse
import sys

LLAVA_PROMPT = "USER: <image>\n{prompt} ASSISTANT:"


def _budget(value: str) -> int | None:
    if value == "full":
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--budget must be an integer or 'full', got {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="visiondrop", description="Training-free visual-token pruning for LVLMs.")
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser("generate", help="answer a prompt about an image, pruned")
    gen.add_argument("--model", required=True, help="local checkpoint folder or hub id")
    gen.add_argument("--image", required=True, help="image file")
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

    commands.add_parser("methods", help="list the pruning methods")
    demo = commands.add_parser("demo", help="VisionDrop end to end on a tiny LLaVA built in code")
    demo.add_argument("--max-new-tokens", type=int, default=8)
    return parser


def _format_prompt(processor, prompt: str) -> str:
    if getattr(processor, "chat_template", None):
        conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        return processor.apply_chat_template(conversation, add_generation_prompt=True)
    return LLAVA_PROMPT.format(prompt=prompt)


def generate(args: argparse.Namespace) -> int:
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import visiondrop

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    try:
        image = Image.open(args.image).convert("RGB")
    except (FileNotFoundError, OSError) as error:
        print(f"visiondrop: --image: cannot read {args.image!r}: {error}", file=sys.stderr)
        return 2
    processor = AutoProcessor.from_pretrained(args.model)
    model = AutoModelForImageTextToText.from_pretrained(args.model, dtype=dtype, attn_implementation=args.attn)
    model.to(device).eval()

    handle = None
    if args.budget is not None:
        options = {} if args.positions is None else {"positions": args.positions}
        try:
            handle = visiondrop.apply(model, args.method, budget=args.budget, **options)
        except ValueError as error:
            print(f"visiondrop: {error}", file=sys.stderr)
            return 2
    inputs = processor(images=image, text=_format_prompt(processor, args.prompt), return_tensors="pt").to(device)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False)
    answer = processor.batch_decode(output[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0]
    print(answer.strip())
    if handle is None:
        print("\n[full model: no pruning]")
    else:
        print(f"\n[{handle.method.name}, budget {args.budget}: {handle.schedule}]")
        print(handle.report.summary())
        handle.remove()
    return 0


def methods(args: argparse.Namespace) -> int:
    import visiondrop

    for name, summary in visiondrop.available_methods().items():
        print(f"{name:12s} {summary}")
    return 0


def demo(args: argparse.Namespace) -> int:
    from .demo import run

    return run(max_new_tokens=args.max_new_tokens)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return {"generate": generate, "methods": methods, "demo": demo}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
