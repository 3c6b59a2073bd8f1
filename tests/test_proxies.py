"""The proxy registry (visiondrop.zoo.proxies): names, errors, held-out questions, and each
proxy answering the way its own module does."""

from __future__ import annotations

import pytest

from visiondrop.cli import PROXIES
from visiondrop.data import shapes, shapes2
from visiondrop.eval import vqa, vqa2
from visiondrop.zoo.proxies import DEFAULT_PROXY, Proxy, available_proxies, get_proxy
from visiondrop.zoo.shapes_llava2 import PROMPT as PROMPT2
from visiondrop.zoo.shapes_llava2 import SHAPES_LLAVA2_DIR


@pytest.fixture(scope="module")
def heldout2():
    return shapes2.heldout()


def test_names_purposes_and_the_default():
    proxies = available_proxies()
    assert list(proxies) == ["shapes-llava", "shapes-llava-2"] and DEFAULT_PROXY == "shapes-llava"
    assert all(purpose and "\n" not in purpose for purpose in proxies.values())
    assert PROXIES == tuple(proxies)  # the command line's copy (kept torch-free) agrees


def test_each_proxy_is_its_own_data():
    one, two = get_proxy("shapes-llava"), get_proxy("shapes-llava-2")
    assert isinstance(one, Proxy) and one.name == "shapes-llava"
    assert (one.kinds, one.heldout_scenes, one.heldout_questions) == (shapes.KINDS, 340, 2040)
    assert (two.kinds, two.heldout_scenes, two.dataset) == (shapes2.KINDS, 300, "ShapesVQA-2")
    assert two.prompt == PROMPT2 and "{question}" in one.prompt and one.prompt != two.prompt
    assert one.figure_heading("what was kept") == "shapes-llava, what was kept (a regression guard, not real LLaVA)"
    assert "shapes-llava-2" in two.figure_heading("x") and "not real LLaVA" in two.figure_heading("x")


@pytest.mark.parametrize("name", ["shapes-llava-3", "", None, ["shapes-llava"]])
def test_unknown_name_is_a_value_error_naming_the_parameter_and_the_names(name):
    with pytest.raises(ValueError) as caught:
        get_proxy(name)
    message = str(caught.value)
    assert message.startswith("proxy: unknown ") and "shapes-llava, shapes-llava-2" in message


def test_heldout_question_count_is_the_sets(heldout2):
    assert get_proxy("shapes-llava-2").heldout_questions == sum(len(s.questions) for s in heldout2)


# scene 138 asks 6 questions, so 7 x 139 questions need 140 scenes; None: all of them
@pytest.mark.parametrize("limit", [1, 7, 8, 7 * 139, None])
def test_items_are_the_first_questions_of_the_heldout_set(heldout2, limit):
    items = get_proxy("shapes-llava-2").items(limit)
    expected = vqa2.items_of(heldout2, limit)
    assert len(items) == (limit or 2099)
    assert [(i.scene.index, i.question) for i in items] == [(i.scene.index, i.question) for i in expected]


def test_shapes_llava_items_are_its_first_scenes_questions():
    proxy = get_proxy("shapes-llava")
    first = proxy.items(12)
    assert [i.question for i in first] == [i.question for i in vqa.items_of(shapes.heldout(2))]


def test_shapes_llava_answers_as_vqa_does():
    proxy = get_proxy("shapes-llava")
    model, processor = proxy.load()
    items = proxy.items(4)
    direct = vqa.answer(model, processor, items, batch_size=2)
    assert proxy.answer(model, processor, items, batch_size=2) == direct
    assert proxy.answer(model, processor, items, batch_size=4, generate=True) == direct
    assert proxy.accuracy_by_kind(items, direct) == vqa.accuracy_by_kind(items, direct)


def test_shapes_llava_2_answers_as_vqa2_does(tiny_shapes_llava2):
    proxy = get_proxy("shapes-llava-2")
    model, processor = proxy.load(tiny_shapes_llava2)
    items = proxy.items(2)
    direct = vqa2.answer(model, processor.tokenizer, PROMPT2, items, batch_size=2)
    assert all(len(answer.split()) > 1 for answer in direct)  # generated, not one forward pass's token
    assert proxy.answer(model, processor, items, batch_size=1) == direct
    right = [item.question.answer for item in proxy.items(7)]
    assert proxy.accuracy_by_kind(proxy.items(7), right) == {**dict.fromkeys(shapes2.KINDS, 1.0), "overall": 1.0}


@pytest.mark.skipif((SHAPES_LLAVA2_DIR / "config.json").is_file(), reason="shapes-llava-2 is shipped")
def test_unshipped_shapes_llava_2_names_its_recipe():
    with pytest.raises(FileNotFoundError, match="train one with scripts/train_shapes_llava2.py"):
        get_proxy("shapes-llava-2").load()


def test_ids_beyond_the_word_list_read_as_unknown(yes_shapes_llava2):
    """The LM head is wider than the word list (padded); an undertrained model may pick
    a padding id, which has no token: the answer reads "<unk>" rather than failing."""
    import torch

    from visiondrop.zoo.shapes_llava2 import VOCAB_SIZE, word_list

    proxy = get_proxy("shapes-llava-2")
    model, processor = proxy.load(yes_shapes_llava2)
    with torch.no_grad():  # the yes-sayer's "yes" moved to the last padding id (never followed by "</s>")
        model.lm_head.weight[VOCAB_SIZE - 1] = model.lm_head.weight[word_list().index("yes")]
        model.lm_head.weight[word_list().index("yes")] = 0
    answers = proxy.answer(model, processor, proxy.items(1))
    assert answers == [" ".join(["<unk>"] * vqa2.MAX_ANSWER_TOKENS)]


def test_gates_script_takes_numbers_or_names():
    import argparse
    import runpy
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "proxy_gates.py"
    proxy_name = runpy.run_path(str(script), run_name="gates")["proxy_name"]
    assert [proxy_name(v) for v in ("1", "2", "shapes-llava", "shapes-llava-2")] == [
        "shapes-llava", "shapes-llava-2", "shapes-llava", "shapes-llava-2"]
    with pytest.raises(argparse.ArgumentTypeError, match="expected 1, 2 or one of shapes-llava, shapes-llava-2"):
        proxy_name("3")
