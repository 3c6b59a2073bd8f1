"""``visiondrop bench``: latency, throughput and memory of every method at one budget,
side by side on one model, interleaved (A B C A B C ...) so drift hits all alike.

Variants: ``full`` (the unpruned model), each method at the budget, and ``ideal``: the
same model fed only B visual tokens per image from the start (vision tower and
projector in full, then the LM on B visual tokens), the limit any pruning could reach.

Figures (each the median of ``repeats`` timed runs after ``warmup``, with the
interquartile range), following the device tool's METHOD.md:

- ``ttft_ms``: time to first token at batch 1 (vision + prefill, one forward);
- ``prefill_images_per_s`` at each batch size of ``throughput_batches``;
- ``decode_ms_per_step`` at each of ``decode_batches``: one greedy step on the pruned
  cache (prompt prefilled once per repeat, then ``decode_steps`` steps timed);
- ``generate_ms``: prefill + ``new_tokens`` generated tokens at batch 1 (``generate``);
- ``peak_mib`` of the batch-1 prefill and ``kv_cache_mib`` of its cache;
- ``machinery``: the share of the prefill (batch 1 and the largest throughput batch) spent
  in the library's hook bodies (:mod:`visiondrop.timing`), after the timed rounds.

Timing uses CUDA events on a GPU and ``perf_counter`` on the CPU (where the bench runs
only to check its bookkeeping: tests assert no timing).
"""

from __future__ import annotations

import contextlib
import inspect
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch

from ..api import apply
from ..models import adapter_for
from ..models.decoder import cache_keyword, returned_cache


@dataclass
class BenchConfig:
    model: str = "llava-1.5-7b"
    methods: tuple[str, ...] = ("visiondrop", "fastv", "pdrop", "sparsevlm", "visionzip", "vispruner")
    budget: int = 64
    text_tokens: int = 64
    throughput_batches: tuple[int, ...] = (8, 32)
    decode_batches: tuple[int, ...] = (1, 32)
    decode_steps: int = 8
    new_tokens: int = 32
    repeats: int = 20
    warmup: int = 3
    dtype: str = "bfloat16"
    attn: str = "sdpa"
    device: str = "cuda"
    ideal: bool = True
    image_size: tuple[int, int] | None = None  # anyres models: the image (H, W); default the largest grid
    generate_batches: tuple[int, ...] = (1, 16)  # --mode generate: batches of model.generate()
    generate_tokens: tuple[int, ...] = (1, 64)  # --mode generate: max_new_tokens of each call
    cuda_graphs: bool = False  # --mode generate: also full and each method with apply(..., cuda_graphs=True)

    def __post_init__(self) -> None:
        for name in ("budget", "repeats", "decode_steps", "new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0 or self.text_tokens < 1:
            raise ValueError("warmup must be >= 0 and text_tokens >= 1")
        for name in ("throughput_batches", "decode_batches", "generate_batches", "generate_tokens"):
            if any(b < 1 for b in getattr(self, name)):
                raise ValueError(f"{name}: every entry must be >= 1, got {getattr(self, name)}")
        if self.dtype not in ("bfloat16", "float16", "float32"):
            raise ValueError(f"dtype must be bfloat16, float16 or float32, got {self.dtype!r}")


@dataclass
class Figure:
    median: float
    q1: float
    q3: float
    samples: list[float] = field(repr=False)

    @classmethod
    def of(cls, samples: Sequence[float]) -> Figure:
        ordered = sorted(samples)
        if len(ordered) >= 4:
            q1, _, q3 = statistics.quantiles(ordered, n=4)
        else:
            q1, q3 = ordered[0], ordered[-1]
        return cls(statistics.median(ordered), q1, q3, list(samples))


# ------------------------------------------------------------------ model and inputs
def build_model(name: str, dtype: str, device: str, attn: str, seed: int = 0):
    """A full-size config with random weights (``visiondrop.model_configs``; initialised
    on ``device``, no download), or a checkpoint folder / hub id."""
    from transformers import AutoModelForImageTextToText

    from ..model_configs import CONFIGS

    torch_dtype = getattr(torch, dtype)
    if name in CONFIGS and torch.device(device).type == "cpu":
        from .flops import meta_model

        parameters = sum(p.numel() for p in meta_model(name).parameters())
        need = parameters * torch.empty((), dtype=torch_dtype).element_size() / 2**30
        raise ValueError(f"--config: {name} with random weights needs about {need:.1f} GiB ({parameters / 1e9:.2f} B "
                         f"parameters in {dtype}) and runs for minutes a step on a CPU; the full-size "
                         "configurations are for a GPU (--device cuda)")
    if name not in CONFIGS:
        model = AutoModelForImageTextToText.from_pretrained(name, dtype=torch_dtype, attn_implementation=attn)
        return model.to(device).eval()
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(CONFIGS[name](), dtype=torch_dtype,
                                                        attn_implementation=attn)
    return model.eval()


#: Qwen-VL models' default bench image (H, W): 32 x 32 patches of 16 px, 256 merged tokens
QWEN_IMAGE_SIZE = (512, 512)


def make_inputs(model, batch: int, text_tokens: int, image_size=None, seed: int = 0) -> dict:
    """``batch`` rows of [text, one image's placeholders, text]; random pixels."""
    config = model.config
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    before = text_tokens // 2
    vocab = min(config.text_config.vocab_size, 30000)
    text = torch.randint(10, vocab, (batch, text_tokens), generator=generator)
    # small vocabularies hold the placeholder ids: a drawn one would be one more image token
    placeholders = [getattr(config, name, None) for name in ("image_token_id", "video_token_id")]
    for token in filter(None, placeholders):
        text[text == token] = 10 if token != 10 else 11
    dtype = next(model.parameters()).dtype
    if getattr(config, "vision_start_token_id", None) is not None:
        out = _qwen_inputs(config, text, before, image_size or QWEN_IMAGE_SIZE, generator)
        return {k: (v.to(device, dtype) if k == "pixel_values" else v.to(device)) for k, v in out.items()}
    adapter = adapter_for(model)
    counts = adapter.image_counts(None, image_size)
    image = torch.full((batch, counts.per_layer[0]), config.image_token_id)
    input_ids = torch.cat([text[:, :before], image, text[:, before:]], dim=1)
    side = config.vision_config.image_size
    side = side[0] if isinstance(side, (list, tuple)) else side  # InternVL: [H, W]
    out = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    if config.model_type == "gemma3":  # the image block its tokens attend both ways in
        out["token_type_ids"] = (input_ids == config.image_token_id).long()
    if getattr(config, "image_grid_pinpoints", None):
        size = image_size or max(adapter.pinpoints, key=lambda p: p[0] * p[1])
        out["pixel_values"] = torch.randn(batch, counts.encoder_passes, 3, side, side, generator=generator)
        out["image_sizes"] = torch.tensor([list(size)] * batch)
    else:
        out["pixel_values"] = torch.randn(batch, 3, side, side, generator=generator)
    return {k: (v.to(device, dtype) if k == "pixel_values" else v.to(device)) for k, v in out.items()}


def _qwen_inputs(config, text: torch.Tensor, before: int, image_size, generator) -> dict:
    """Qwen-VL rows: [text, vision_start, one image's merged-token placeholders, vision_end,
    text], with the image's patch rows, grid and ``mm_token_type_ids``."""
    vision = config.vision_config
    patch, merge = vision.patch_size, vision.spatial_merge_size
    height, width = (side // patch for side in image_size)
    if height % merge or width % merge:
        raise ValueError(f"image_size: {tuple(image_size)} is not a multiple of {patch * merge} px")
    batch = text.shape[0]
    image = torch.full((batch, height * width // merge ** 2), config.image_token_id)
    start = torch.full((batch, 1), config.vision_start_token_id)
    end = torch.full((batch, 1), config.vision_end_token_id)
    input_ids = torch.cat([text[:, :before], start, image, end, text[:, before:]], dim=1)
    pixels = torch.randn(batch * height * width, 3 * vision.temporal_patch_size * patch * patch, generator=generator)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "pixel_values": pixels,
            "image_grid_thw": torch.tensor([[1, height, width]] * batch),
            "mm_token_type_ids": (input_ids == config.image_token_id).long()}


# ---------------------------------------------------------------------- variants
def media_tokens(model) -> list[int]:
    """The placeholder ids a random-weight model could generate: every variant suppresses
    them alike (a pruned prompt refuses an image token after its prefill)."""
    config = model.config
    return [t for t in (getattr(config, "image_token_id", None), getattr(config, "video_token_id", None))
            if t is not None]


def method_spec(spec: str) -> tuple[str, dict]:
    """``(method, options)`` of ``spec``: a method name, with options in brackets if any."""
    from ..methods.options import parse_method_spec
    from ..models import model_options

    return parse_method_spec(spec, model_options())


class Variant:
    """One column of the benchmark: how to prepare the model and run a prefill."""

    def __init__(self, name: str, method: str | None, budget: int | None, options: dict | None = None) -> None:
        self.name, self.method, self.budget, self.options = name, method, budget, dict(options or {})
        self.handle = None

    @classmethod
    def of_spec(cls, spec: str, budget: int | None) -> Variant:
        """The variant of a command-line method spec: ``fastv`` or ``fastv[layer=3]``."""
        method, options = method_spec(spec)
        return cls(spec, method, budget, options)

    def activate(self, model) -> None:
        if self.method is not None:
            self.handle = apply(model, self.method, budget=self.budget, **self.options)

    def deactivate(self) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None

    def prefill(self, model, inputs, use_cache: bool = True):
        return model(**inputs, use_cache=use_cache, logits_to_keep=1)

    def generate(self, model, inputs, new_tokens: int):
        return model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                              suppress_tokens=media_tokens(model))


class IdealVariant(Variant):
    """The vision tower and projector in full, then the LM on only ``budget`` visual
    tokens per image (the first ones: latency does not depend on which)."""

    def __init__(self, budget: int) -> None:
        super().__init__("ideal", None, budget)
        self._text_columns: dict = {}

    def _embeds(self, model, inputs):
        base = model.model
        image_token = model.config.image_token_id
        pixel_keys = {k: inputs[k] for k in ("pixel_values", "image_sizes", "image_grid_thw") if k in inputs}
        features = base.get_image_features(**pixel_keys)
        features = getattr(features, "pooler_output", features)
        if isinstance(features, (list, tuple)):
            features = torch.stack([f.reshape(-1, f.shape[-1])[: self.budget] for f in features])
        else:
            features = features.reshape(inputs["input_ids"].shape[0], -1, features.shape[-1])[:, : self.budget]
        ids = inputs["input_ids"]
        # every row has the same layout (make_inputs): its text columns, found once on the
        # host, keep the prefill free of syncs (and capturable as a CUDA graph)
        key = (tuple(ids.shape), str(ids.device))
        if key not in self._text_columns:
            self._text_columns[key] = (ids[0] != image_token).nonzero().squeeze(1)
        text = ids[:, self._text_columns[key]]
        half = (text.shape[1] + 1) // 2
        embed = base.get_input_embeddings()
        return torch.cat([embed(text[:, :half]), features.to(embed.weight.dtype), embed(text[:, half:])], dim=1)

    def prefill(self, model, inputs, use_cache: bool = True):
        embeds = self._embeds(model, inputs)
        out = model.model.language_model(inputs_embeds=embeds, use_cache=use_cache)
        logits = model.lm_head(out.last_hidden_state[:, -1:])
        out.logits = logits
        return out

    def generate(self, model, inputs, new_tokens: int):
        embeds = self._embeds(model, inputs)
        with _embeds_accepted(model):
            return model.generate(inputs_embeds=embeds, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                  do_sample=False, suppress_tokens=media_tokens(model))


@contextlib.contextmanager
def _embeds_accepted(model):
    """``generate(inputs_embeds=...)`` on models whose ``prepare_inputs_for_generation``
    does not name ``inputs_embeds`` (Gemma 3 on transformers 5.17: generate refuses them,
    though the base class it calls handles them): name it, on this instance, for the call."""
    prepare = model.prepare_inputs_for_generation
    if "inputs_embeds" in inspect.signature(prepare).parameters:
        yield
        return

    def named(input_ids, inputs_embeds=None, **kwargs):
        return prepare(input_ids, inputs_embeds=inputs_embeds, **kwargs)

    model.prepare_inputs_for_generation = named
    try:
        yield
    finally:
        del model.prepare_inputs_for_generation


def checked_variants(config: BenchConfig, model) -> list[Variant]:
    """``full``, each method at the budget, and ``ideal``; each applied to the model once,
    so that a budget a method cannot plan or an unsupported model fails before any timing."""
    variants = [Variant("full", None, None)] + [Variant.of_spec(m, config.budget) for m in config.methods]
    if config.ideal:
        variants.append(IdealVariant(config.budget))
    for variant in variants:
        variant.activate(model)
        variant.deactivate()
    return variants


# ------------------------------------------------------------------------ timing
def _timer(device: torch.device) -> Callable[[Callable[[], object]], float]:
    """``time(fn) -> milliseconds`` with CUDA events on a GPU, perf_counter elsewhere."""
    if device.type == "cuda":
        def timed(fn):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            return start.elapsed_time(end)
        return timed

    def timed(fn):
        begin = time.perf_counter()
        fn()
        return (time.perf_counter() - begin) * 1e3
    return timed


def cache_bytes(cache) -> int:
    """Bytes of the keys and values a cache holds."""
    total = 0
    for layer in getattr(cache, "layers", []):
        for name in ("keys", "values"):
            tensor = getattr(layer, name, None)
            if isinstance(tensor, torch.Tensor):
                total += tensor.numel() * tensor.element_size()
    return total


def run_bench(config: BenchConfig, model=None, progress: bool = True) -> dict:
    """Run every figure for every variant, interleaved; returns a JSON-able dict."""
    from tqdm.auto import tqdm

    device = torch.device(config.device)
    if model is None:
        model = build_model(config.model, config.dtype, config.device, config.attn)
    variants = checked_variants(config, model)
    timed = _timer(device)
    batches = sorted({1, *config.throughput_batches, *config.decode_batches})
    inputs = {b: make_inputs(model, b, config.text_tokens, config.image_size) for b in batches}
    samples: dict[str, dict[str, list[float]]] = {v.name: {} for v in variants}
    memory: dict[str, dict[str, float]] = {}
    visual_tokens: dict[str, list[int]] = {}

    def record(variant, key, value):
        samples[variant.name].setdefault(key, []).append(value)

    rounds = config.warmup + config.repeats
    with torch.inference_mode():
        for round_index in tqdm(range(rounds), desc="bench rounds", disable=not progress):
            keep = round_index >= config.warmup
            for variant in variants:
                variant.activate(model)
                try:
                    ms = timed(lambda v=variant: v.prefill(model, inputs[1]))
                    if keep:
                        record(variant, "ttft_ms", ms)
                    for b in config.throughput_batches:
                        ms = timed(lambda v=variant, b=b: v.prefill(model, inputs[b], use_cache=False))
                        if keep:
                            record(variant, f"prefill_images_per_s@{b}", b / ms * 1e3)
                    for b in config.decode_batches:
                        ms = _decode_ms(variant, model, inputs[b], config.decode_steps, timed)
                        if keep:
                            record(variant, f"decode_ms_per_step@{b}", ms)
                    ms = timed(lambda v=variant: v.generate(model, inputs[1], config.new_tokens))
                    if keep:
                        record(variant, f"generate_{config.new_tokens}_ms", ms)
                    if round_index == 0:
                        memory[variant.name] = _memory(variant, model, inputs[1], device)
                        if variant.handle is not None:
                            variant.prefill(model, inputs[1])
                            visual_tokens[variant.name] = variant.handle.report.layer_visual_tokens[0].tolist()
                finally:
                    variant.deactivate()
        machinery = {v.name: _machinery_share(v, model, inputs, config, timed) for v in variants if v.method}
    figures = {name: {key: asdict(Figure.of(values)) for key, values in by_key.items()}
               for name, by_key in samples.items()}
    return {"config": asdict(config), "figures": figures, "memory": memory, "visual_tokens": visual_tokens,
            "machinery": machinery, "environment": environment(device)}


def _machinery_share(variant, model, inputs, config, timed, repeats: int = 5) -> dict[str, float]:
    """Median share of the prefill spent in the hook bodies marked ``@machinery``
    (``visiondrop.timing``), at batch 1 (with a cache, as TTFT) and at the largest
    throughput batch."""
    from ..timing import measure_machinery

    shares = {}
    variant.activate(model)
    try:
        for batch in sorted({1, *config.throughput_batches[-1:]}):
            ratios = []
            for _ in range(repeats):
                with measure_machinery() as spent:
                    total = timed(lambda b=batch: variant.prefill(model, inputs[b], use_cache=b == 1))
                ratios.append(spent() / total)
            shares[f"share@{batch}"] = statistics.median(ratios)
    finally:
        variant.deactivate()
    return shares


def _decode_ms(variant, model, inputs, steps: int, timed) -> float:
    """Mean milliseconds of one greedy decode step on the (pruned) cache of ``inputs``."""
    out = variant.prefill(model, inputs)
    cache = returned_cache(out)
    token = out.logits[:, -1:].argmax(-1)
    mask = inputs.get("attention_mask")
    is_ideal = isinstance(variant, IdealVariant)
    length = cache.get_seq_length() if is_ideal else inputs["input_ids"].shape[1]

    def steps_fn():
        nonlocal token, mask, length
        for _ in range(steps):
            if is_ideal:
                position = torch.full_like(token, length)
                lm = model.model.language_model
                step = lm(inputs_embeds=model.model.get_input_embeddings()(token), **{cache_keyword(lm): cache},
                          position_ids=position, use_cache=True)
                token = model.lm_head(step.last_hidden_state).argmax(-1)
            else:
                mask = torch.cat([mask, torch.ones_like(token)], dim=1)
                step = model(input_ids=token, attention_mask=mask, **{cache_keyword(model): cache}, use_cache=True,
                             position_ids=torch.full_like(token, length))
                token = step.logits[:, -1:].argmax(-1)
            length += 1

    return timed(steps_fn) / steps


def _memory(variant, model, inputs, device) -> dict[str, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    out = variant.prefill(model, inputs)
    result = {"kv_cache_mib": cache_bytes(returned_cache(out)) / 2**20}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        result["peak_prefill_mib"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    return result


def environment(device: torch.device) -> dict:
    import datetime
    import platform

    import transformers

    info = {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
            "date": datetime.date.today().isoformat(), "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


# ------------------------------------------------------------------------ output
FIGURE_LABELS = {
    "ttft_ms": ("TTFT b1 (ms)", False),
    "prefill_images_per_s": ("prefill img/s", True),
    "decode_ms_per_step": ("decode ms/step", False),
    "generate": ("prefill + {n} tok (ms)", False),
}


def _label(key: str, result: dict) -> tuple[str, bool]:
    base, _, batch = key.partition("@")
    if base.startswith("generate_"):
        label, higher = FIGURE_LABELS["generate"]
        return label.format(n=result["config"]["new_tokens"]), higher
    label, higher = FIGURE_LABELS[base]
    return (f"{label} b{batch}" if batch else label), higher


def to_markdown(result: dict) -> str:
    """One table: each figure's median (and its speed-up over ``full``), memory last."""
    figures = result["figures"]
    keys = list(figures["full"])
    names = list(figures)
    batches = sorted({key for shares in result.get("machinery", {}).values() for key in shares})
    header = ["variant", *(_label(k, result)[0] for k in keys), "KV cache MiB", "peak prefill MiB",
              *(f"machinery {key.replace('share@', 'b')}" for key in batches)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in names:
        cells = [name]
        for key in keys:
            value, full = figures[name][key]["median"], figures["full"][key]["median"]
            higher = _label(key, result)[1]
            speedup = value / full if higher else full / value
            cells.append(f"{value:.2f} ({speedup:.2f}x)" if name != "full" else f"{value:.2f}")
        memory = result["memory"].get(name, {})
        kv, peak = memory.get("kv_cache_mib"), memory.get("peak_prefill_mib")  # peak: CUDA only
        cells.append("n/a" if kv is None else f"{kv:.1f}")
        cells.append("n/a" if peak is None else f"{peak:.0f}")
        shares = result.get("machinery", {}).get(name, {})
        cells.extend(f"{shares[key]:.1%}" if key in shares else "-" for key in batches)
        lines.append("| " + " | ".join(cells) + " |")
    env = result["environment"]
    config = result["config"]
    lines.append("")
    lines.append(f"{config['model']}, budget {config['budget']}, {config['dtype']}, {config['attn']}; "
                 f"median of {config['repeats']} interleaved repeats after {config['warmup']} warm-up; "
                 f"{env.get('gpu', env['device'])}, torch {env['torch']}, transformers {env['transformers']}, "
                 f"{env['date']}. (x): speed-up over full (throughput: ratio).")
    return "\n".join(lines)


def plot(result: dict, path, label=None, what: str = "") -> None:
    """Bars of each figure's speed-up over ``full``, with the interquartile range.
    ``label(key, result) -> (title, higher is better)`` names a figure (default: this
    module's figures); ``what`` says what was timed, in the labels."""
    label = label or _label
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = result["figures"]
    keys = list(figures["full"])
    names = [n for n in figures if n != "full"]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        title, higher = label(key, result)
        full = figures["full"][key]["median"]
        ratios, low, high = [], [], []
        for name in names:
            f = figures[name][key]
            ratio = (lambda v: v / full) if higher else (lambda v: full / v)
            ratios.append(ratio(f["median"]))
            spread = sorted((ratio(f["q1"]), ratio(f["q3"])))
            low.append(max(ratios[-1] - spread[0], 0))
            high.append(max(spread[1] - ratios[-1], 0))
        colors = ["#888888" if n == "ideal" else "#1f77b4" if n == "visiondrop" else "#9ecae1" for n in names]
        ax.bar(names, ratios, yerr=[low, high], color=colors, capsize=2)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", labelrotation=60, labelsize=7)
    axes[0][0].set_ylabel(f"{what} speed-up over full".strip())
    config = result["config"]
    fig.suptitle(f"{config['model']}, budget {config['budget']}{': ' + what if what else ''} "
                 f"({result['environment'].get('gpu', 'cpu')})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def model_label(name: str) -> str:
    """A file-name part for ``--config``: a built-in name or hub id (``org/name`` ->
    ``org_name``) as it is, a checkpoint folder by its last part."""
    from pathlib import Path

    from ..inputs import looks_local

    return Path(name.rstrip("/\\")).name if looks_local(name) else name.replace("/", "_")


def save(result: dict, out, prefix: str = "bench", markdown=None, picture=None) -> dict:
    """``<prefix>-<model>-b<budget>.{json,md,png}`` in ``out``; ``markdown`` and ``picture``
    default to this module's table and plot (``bench/captured.py`` passes its own)."""
    import json
    from pathlib import Path

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{prefix}-{model_label(result['config']['model'])}-b{result['config']['budget']}"
    paths = {"json": out / f"{stem}.json", "md": out / f"{stem}.md", "png": out / f"{stem}.png"}
    paths["json"].write_text(json.dumps(result, indent=1))
    paths["md"].write_text((markdown or to_markdown)(result) + "\n")
    (picture or plot)(result, paths["png"])
    return paths
