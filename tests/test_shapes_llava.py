"""The shipped shapes-llava checkpoint (src/visiondrop/zoo/shapes-llava): it loads with
plain transformers, is LLaVA-1.5 in miniature, agrees with the committed benchmark,
and takes pruning and generation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoProcessor, CLIPVisionModel, LlamaModel, LlavaForConditionalGeneration, LlavaProcessor

import visiondrop
from visiondrop.data import shapes
from visiondrop.eval import fidelity
from visiondrop.eval.vqa import answer, items_of
from visiondrop.zoo.shapes_llava import EOS_ID, PROMPT, SHAPES_LLAVA_DIR, image_token_id, load_shapes_llava, word_list

ROOT = Path(__file__).resolve().parents[1]
FIDELITY_DIR = ROOT / "docs" / "fidelity"
NUM_PATCHES = 576


@pytest.fixture(scope="module")
def loaded():
    return load_shapes_llava()


@pytest.fixture(scope="module")
def scenes():
    return shapes.heldout(2)


def test_shipped_folder_holds_a_checkpoint():
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                 "processor_config.json", "training_log.json"):
        assert (SHAPES_LLAVA_DIR / name).is_file(), f"{name} missing from {SHAPES_LLAVA_DIR}"
    weights = sorted(SHAPES_LLAVA_DIR.glob("*.safetensors"))
    assert weights, f"no safetensors weights in {SHAPES_LLAVA_DIR}"
    total = sum(p.stat().st_size for p in weights)
    assert total < 40 * 1024 * 1024, f"weights are {total / 2**20:.1f} MiB; the shipped model must stay under 40 MB"
    assert not list(SHAPES_LLAVA_DIR.glob("*.bin")), "ship safetensors only"


def test_model_card_exists():
    card = SHAPES_LLAVA_DIR / "README.md"
    assert card.is_file(), (
        f"the model card {card.relative_to(ROOT)} is missing: the shipped model needs a card (architecture, "
        "training data and recipe, held-out accuracy, limitations)")
    assert len(card.read_text().strip()) > 200, f"the model card {card.relative_to(ROOT)} is (almost) empty"


def test_loads_with_plain_transformers(loaded):
    ours, _ = loaded
    model = LlavaForConditionalGeneration.from_pretrained(SHAPES_LLAVA_DIR)
    processor = AutoProcessor.from_pretrained(SHAPES_LLAVA_DIR)
    assert isinstance(model, LlavaForConditionalGeneration) and isinstance(processor, LlavaProcessor)
    theirs = model.state_dict()
    mine = ours.state_dict()
    assert theirs.keys() == mine.keys()
    for name, tensor in mine.items():
        assert torch.equal(theirs[name].to(tensor.dtype), tensor), name
    assert processor.tokenizer.convert_ids_to_tokens(list(range(len(word_list())))) == word_list()
    assert processor.tokenizer.convert_tokens_to_ids("<image>") == image_token_id() == model.config.image_token_id


def test_load_shapes_llava(loaded):
    model, processor = loaded
    assert isinstance(model, LlavaForConditionalGeneration) and isinstance(processor, LlavaProcessor)
    assert not model.training
    params = list(model.parameters())
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in params)
    assert sum(p.numel() for p in params) == json.loads((SHAPES_LLAVA_DIR / "training_log.json").read_text())[
        "parameters"]


def test_load_shapes_llava_rejects_a_folder_without_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no shapes-llava checkpoint"):
        load_shapes_llava(tmp_path)


def test_architecture_is_llava_15_in_miniature(loaded):
    model, _ = loaded
    config = model.config
    assert config.model_type == "llava"
    vision, text = config.vision_config, config.text_config
    assert vision.model_type == "clip_vision_model"
    assert isinstance(model.model.vision_tower, CLIPVisionModel)
    assert (vision.image_size, vision.patch_size) == (336, 14)
    assert (vision.image_size // vision.patch_size) ** 2 == NUM_PATCHES == config.image_seq_length
    tower = model.model.vision_tower
    embeddings = getattr(tower, "vision_model", tower).embeddings
    assert embeddings.class_embedding.shape == (vision.hidden_size,)  # a [CLS] token
    assert embeddings.num_positions == NUM_PATCHES + 1
    assert config.vision_feature_layer == -2
    assert config.vision_feature_select_strategy == "default"
    assert text.model_type == "llama" and isinstance(model.model.language_model, LlamaModel)
    assert text.num_hidden_layers >= 8
    assert text.vocab_size >= len(word_list())
    assert visiondrop.supported_models()  # the adapter registry is populated
    from visiondrop.models import adapter_for

    adapter_for(model)  # raises if visiondrop does not support the model


def test_vision_tower_has_cls_and_576_patches(loaded, scenes):
    model, processor = loaded
    batch = processor(images=[scenes[0].pil()], text=[PROMPT.format(question=scenes[0].questions[0].text)],
                      return_tensors="pt")
    with torch.no_grad():
        out = model.model.vision_tower(batch["pixel_values"], output_hidden_states=True)
        features = model.model.get_image_features(pixel_values=batch["pixel_values"])
    assert out.hidden_states[-2].shape[1] == NUM_PATCHES + 1
    features = features.pooler_output if hasattr(features, "pooler_output") else features
    features = torch.cat(list(features)) if isinstance(features, list | tuple) else features
    assert features.reshape(-1, features.shape[-1]).shape[0] == NUM_PATCHES  # CLS dropped ("default")
    assert int((batch["input_ids"] == image_token_id()).sum()) == NUM_PATCHES


def test_training_log_matches_the_committed_benchmark():
    """Both were measured on a GPU on the same held-out set; they must tell the same story."""
    log = json.loads((SHAPES_LLAVA_DIR / "training_log.json").read_text())
    committed = fidelity.load(FIDELITY_DIR)
    assert committed.metadata.limit is None, "the committed benchmark must cover the whole held-out set"
    assert log["data"]["heldout_questions"] == committed.metadata.questions
    assert log["data"]["heldout_seed"] == shapes.HELDOUT_SEED
    trained, measured = log["heldout_accuracy"], committed.full.accuracy
    assert set(trained) == set(measured) == {*shapes.KINDS, "overall"}
    for kind in trained:
        assert abs(trained[kind] - measured[kind]) <= 0.01, (
            f"{kind}: training log {trained[kind]:.4f} vs docs/fidelity full model {measured[kind]:.4f}")


def test_visiondrop_applies_and_reports_its_schedule(loaded, scenes):
    model, processor = loaded
    items = items_of(scenes, 3)
    batch = processor(images=[it.scene.pil() for it in items],
                      text=[PROMPT.format(question=it.question.text) for it in items],
                      padding=True, return_tensors="pt")
    num_layers = model.config.text_config.num_hidden_layers
    with torch.no_grad():
        full = model(**batch, logits_to_keep=1).logits
        with visiondrop.apply(model, budget=64) as handle:
            pruned = model(**batch, logits_to_keep=1).logits
            report = handle.report
            assert str(handle.schedule) in repr(handle)
        after = model(**batch, logits_to_keep=1).logits
    assert torch.equal(full, after), "removing the handle must restore the model"
    assert torch.isfinite(pruned).all() and pruned.shape == full.shape
    schedule = handle.schedule
    assert report is not None and report.batch_size == len(items)
    expected = schedule.tokens_per_layer(num_layers, schedule.encoder.total)
    for row in range(len(items)):
        assert report.layer_visual_tokens[row].tolist() == expected
        assert abs(report.average_visual_tokens(row) - 64) <= 1
    encoder = report.stage("encoder")
    assert (encoder.tokens_in, encoder.dominant, encoder.contextual) == (
        NUM_PATCHES + 1, schedule.encoder.dominant, schedule.encoder.contextual)
    llm = [s for s in report.stages if s.name == "llm"]
    assert [s.layer for s in llm] == list(schedule.resolved_layers(num_layers))
    assert [(s.dominant, s.contextual) for s in llm] == [(spec.dominant, spec.contextual) for spec in schedule.llm]
    summary = report.summary()
    for stage in llm:
        assert f"before LLM layer {stage.layer}" in summary
    assert f"{report.average_visual_tokens(0):.2f}" in summary


def test_greedy_generate_answers_one_word_then_eos(loaded, scenes):
    model, processor = loaded
    committed = fidelity.load(FIDELITY_DIR).full.correct
    # two questions of different kinds that the committed full model answers correctly
    picks = [i for i in range(12) if committed[i] == "1"]
    items = items_of(scenes, 12)
    chosen = [items[picks[0]], next(items[i] for i in picks if items[i].question.kind != items[picks[0]].question.kind)]
    batch = processor(images=[it.scene.pil() for it in chosen],
                      text=[PROMPT.format(question=it.question.text) for it in chosen],
                      padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=2, do_sample=False)
    new = out[:, batch["input_ids"].shape[1]:]
    assert new.shape == (2, 2)
    words = processor.tokenizer.convert_ids_to_tokens(new[:, 0].tolist())
    assert all(word in shapes.vocabulary() for word in words), words
    assert words == [it.question.answer for it in chosen]
    assert words == answer(model, processor, chosen)  # the benchmark's arg-max is generate's first token
    assert new[:, 1].tolist() == [EOS_ID, EOS_ID]
    assert processor.tokenizer.convert_ids_to_tokens([EOS_ID]) == ["</s>"]
