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
        # image order follows placeholder order; rows here hold at most one image
        image_rows = [r for r in range(batch["input_ids"].shape[0])
                      if (batch["input_ids"][r] == 250).any()]
        if row in image_rows:
            out["pixel_values"] = batch["pixel_values"][image_rows.index(row)][None]
    return out
