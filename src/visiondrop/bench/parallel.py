"""``visiondrop bench --mode data-parallel``: prefill throughput with data parallelism, one
model per process, the processes started by torchrun or ``accelerate launch``:

    torchrun --nproc-per-node 2 -m visiondrop.cli bench --mode data-parallel --out DIR

Each process builds the model on its device (``cuda:LOCAL_RANK``, as accelerate binds it;
modulo the GPUs present, so several processes may share one) and prefills batches of its
own random inputs (seeded by rank). Every timed sample starts at a barrier; the group's
throughput is every process's images over the slowest process's time (the batch is done
when the last process is), :func:`group_throughput`. The variants are those of
:mod:`.latency` (full, each method, ideal), interleaved round by round.

The barrier and the gathering of times go through a gloo process group on the host, so
the timed GPU work is the prefills alone and several processes can share one GPU (NCCL
refuses two ranks on one device).

Rank 0 writes ``dp-<model>-b<budget>-w<N>.json`` and rebuilds ``dp-<model>-b<budget>.md``
from every world size present in the folder: run it with 1 and then N processes into one
folder for the scaling table.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .latency import BenchConfig, Figure, build_model, checked_variants, environment, make_inputs


@dataclass(frozen=True)
class Place:
    """This process's place in the launch (torchrun's and accelerate's environment)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls, env=os.environ) -> Place:
        try:
            place = cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))
        except ValueError as error:
            raise ValueError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers: {error}") from None
        if not 0 <= place.rank < place.world_size:
            raise ValueError(f"RANK={place.rank} is outside WORLD_SIZE={place.world_size}")
        return place


def process_device(device: str, local_rank: int) -> torch.device:
    """``cuda`` means this process's GPU: ``cuda:(LOCAL_RANK mod GPUs)``; anything else as given."""
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device: cuda requested but no GPU is visible")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device(device)


def group_throughput(elapsed_s: list[float], images_per_process: int) -> float:
    """Images per second of the whole group for one timed step: all processes' images over
    the slowest process's time."""
    if not elapsed_s or min(elapsed_s) <= 0:
        raise ValueError(f"elapsed times must be positive, got {elapsed_s}")
    return len(elapsed_s) * images_per_process / max(elapsed_s)


class _Group:
    """Barrier and all-gather across the launched processes (gloo, host side); one process
    needs neither."""

    def __init__(self, place: Place) -> None:
        import torch.distributed as dist

        self.place, self.dist = place, dist
        self.owned = False
        if place.world_size > 1 and not dist.is_initialized():
            dist.init_process_group("gloo")
            self.owned = True

    def barrier(self) -> None:
        if self.place.world_size > 1:
            self.dist.barrier()

    def gather(self, value):
        if self.place.world_size == 1:
            return [value]
        values = [None] * self.place.world_size
        self.dist.all_gather_object(values, value)
        return values

    def close(self) -> None:
        if self.owned:
            self.dist.destroy_process_group()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_data_parallel(config: BenchConfig, place: Place | None = None, model=None, steps: int = 2,
                      progress: bool = True) -> dict | None:
    """Time ``steps`` prefills per sample (no cache) at each of ``config.throughput_batches``
    in every process; returns the result on rank 0 and ``None`` elsewhere."""
    from tqdm.auto import tqdm

    if steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    place = place or Place.from_env()
    device = process_device(config.device, place.local_rank)
    if model is None:
        model = build_model(config.model, config.dtype, str(device), config.attn)
    variants = checked_variants(config, model)  # errors before any process waits at a barrier
    inputs = {b: make_inputs(model, b, config.text_tokens, config.image_size, seed=place.rank)
              for b in config.throughput_batches}
    group = _Group(place)
    # (variant, batch) -> per sample: every process's elapsed seconds
    elapsed: dict[tuple[str, int], list[list[float]]] = {}
    try:
        with torch.inference_mode():
            rounds = range(config.warmup + config.repeats)
            for round_index in tqdm(rounds, desc="data-parallel rounds", disable=not progress or place.rank != 0):
                for variant in variants:
                    variant.activate(model)
                    try:
                        for b in config.throughput_batches:
                            _synchronize(device)
                            group.barrier()
                            begin = time.perf_counter()
                            for _ in range(steps):
                                variant.prefill(model, inputs[b], use_cache=False)
                            _synchronize(device)
                            seconds = group.gather(time.perf_counter() - begin)
                            if round_index >= config.warmup:
                                elapsed.setdefault((variant.name, b), []).append(seconds)
                    finally:
                        variant.deactivate()
        processes = group.gather({"rank": place.rank, "host": socket.gethostname(), "device": str(device),
                                  "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None})
    finally:
        group.close()
    if place.rank != 0:
        return None
    figures: dict[str, dict[str, dict]] = {}
    per_process: dict[str, dict[str, list[float]]] = {}
    for (name, b), samples in elapsed.items():
        images = b * steps
        figures.setdefault(name, {})[f"images_per_s@{b}"] = asdict(
            Figure.of([group_throughput(s, images) for s in samples]))
        per_process.setdefault(name, {})[f"images_per_s@{b}"] = [
            Figure.of([images / s[rank] for s in samples]).median for rank in range(place.world_size)]
    devices = {(p["host"], p["device"]) for p in processes}
    return {"config": asdict(config), "world_size": place.world_size, "steps": steps,
            "devices": len(devices), "processes": processes, "figures": figures, "per_process": per_process,
            "environment": environment(device)}


# ------------------------------------------------------------------------ output
def _stem(config: dict) -> str:
    return f"dp-{config['model'].replace('/', '_')}-b{config['budget']}"


def save(result: dict, out) -> dict:
    """Write this world size's JSON, then the table over every world size in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = _stem(result["config"])
    path = out / f"{stem}-w{result['world_size']}.json"
    path.write_text(json.dumps(result, indent=1))
    runs = load_runs(out, stem)
    table, picture = out / f"{stem}.md", out / f"{stem}.png"
    table.write_text(to_markdown(runs) + "\n")
    plot(runs, picture)
    return {"json": path, "md": table, "png": picture}


def load_runs(out, stem: str) -> list[dict]:
    """The runs of one model and budget in ``out``, by world size; a file that is not such
    a run is named in the error."""
    runs = []
    for path in sorted(Path(out).glob(f"{stem}-w*.json")):
        try:
            run = json.loads(path.read_text())
            run["world_size"], run["figures"]  # noqa: B018  (the keys the table needs)
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{path}: not a data-parallel bench result ({error})") from None
        runs.append(run)
    return sorted(runs, key=lambda run: run["world_size"])


def to_markdown(runs: list[dict]) -> str:
    """Group throughput per variant and world size; scaling is the group's throughput over
    the world size times the one-process throughput (1.00 = linear)."""
    if not runs:
        raise ValueError("no data-parallel runs to tabulate")
    single = next((run for run in runs if run["world_size"] == 1), None)
    keys = list(runs[0]["figures"]["full"])
    header = ["variant"]
    for run in runs:
        for key in keys:
            batch = key.partition("@")[2]
            header.append(f"{run['world_size']} proc. img/s b{batch}")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in runs[0]["figures"]:
        cells = [name]
        for run in runs:
            for key in keys:
                value = run["figures"][name][key]["median"]
                if single is not None and run is not single:
                    base = single["figures"][name][key]["median"]
                    cells.append(f"{value:.1f} ({value / (run['world_size'] * base):.2f})")
                else:
                    cells.append(f"{value:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for run in runs:
        env, config = run["environment"], run["config"]
        gpus = sorted({p["gpu"] or p["device"] for p in run["processes"]})
        shared = (f" **{run['world_size']} processes shared {run['devices']} device(s): not data parallelism, "
                  "a check of the tool.**" if run["devices"] < run["world_size"] else "")
        lines.append(f"- {run['world_size']} process(es) on {run['devices']} device(s) ({', '.join(gpus)}): "
                     f"{config['model']}, budget {config['budget']}, {config['dtype']}, {config['attn']}; median of "
                     f"{config['repeats']} samples of {run['steps']} prefills after {config['warmup']} warm-up; "
                     f"torch {env['torch']}, transformers {env['transformers']}, {env['date']}.{shared}")
    if single is not None and len(runs) > 1:
        lines.append("")
        lines.append("(x.xx): scaling, the group's images/s over (processes x one process's images/s); "
                     "1.00 is linear.")
    return "\n".join(lines)


def plot(runs: list[dict], path) -> None:
    """One panel per batch size: each variant's group images/s, a bar per world size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(runs[0]["figures"]["full"])
    names = list(runs[0]["figures"])
    width = 0.8 / len(runs)
    fig, axes = plt.subplots(1, len(keys), figsize=(5.0 * len(keys), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for index, run in enumerate(runs):
            values = [run["figures"][name][key]["median"] for name in names]
            shared = " (shared device)" if run["devices"] < run["world_size"] else ""
            ax.bar([i + index * width for i in range(len(names))], values, width,
                   label=f"{run['world_size']} process(es){shared}")
        ax.set_xticks([i + width * (len(runs) - 1) / 2 for i in range(len(names))], names, rotation=60, fontsize=7)
        ax.set_title(f"batch {key.partition('@')[2]} per process", fontsize=9)
        ax.set_ylabel("images/s, all processes")
    axes[0][0].legend(fontsize=7)
    config = runs[0]["config"]
    fig.suptitle(f"{config['model']}, budget {config['budget']}: data-parallel prefill throughput", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
