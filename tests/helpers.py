import torch


def real_logits(logits: torch.Tensor, mask: torch.Tensor, row: int) -> torch.Tensor:
    """Logits of one row's real (unpadded) positions, in order."""
    return logits[row][mask[row].bool()]


def selections(report):
    """Every stage's kept indices, per image, as nested lists (comparable across runs)."""
    return [
        (stage.name, stage.layer, [(s.row, s.dominant.tolist(), s.targets.tolist(), s.merged_into.tolist())
                                   for s in stage.segments])
        for stage in report.stages
    ]


def row_of(batch: dict, row: int) -> dict:
    """One row of a batch, its padding removed, as a batch of one."""
    keep = batch["attention_mask"][row].bool()
    out = {"input_ids": batch["input_ids"][row][keep][None], "attention_mask": batch["attention_mask"][row][keep][None]}
    if "pixel_values" in batch:
        # images follow placeholder order, row by row; count each row's images
        per_image = 576
        counts = [int((batch["input_ids"][r] == 250).sum()) // per_image for r in range(batch["input_ids"].shape[0])]
        first = sum(counts[:row])
        if counts[row]:
            out["pixel_values"] = batch["pixel_values"][first : first + counts[row]]
    return out
