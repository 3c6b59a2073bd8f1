"""The benchmark readers on small fixtures in the benchmarks' real file formats
(tests/fixtures/eval/), LLaVA-1.5's prompts and the square padding."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visiondrop.eval.base import DataFormatError, Dataset, Sample
from visiondrop.eval.datasets import (
    DATASETS,
    GQADataset,
    LlavaQuestionsDataset,
    MMBenchCNDataset,
    MMBenchDataset,
    MMEDataset,
    MSVDQADataset,
    PopeDataset,
    ScienceQADataset,
    ShapesDataset,
    TextVQADataset,
    VideoQADataset,
    VizWizDataset,
    VQAv2Dataset,
    load_dataset,
    rotate,
)
from visiondrop.eval.prompts import (
    OPTION_LETTER,
    OPTION_LETTER_CN,
    SHORT_ANSWER,
    VIZWIZ_UNANSWERABLE,
    mean_background,
    pad_to_square,
)

F = Path(__file__).parent / "fixtures" / "eval"
SHORT = "\nAnswer the question using a single word or phrase."
LETTER = "\nAnswer with the option's letter from the given choices directly."


def rows(dataset):
    return list(dataset.samples())


def by_id(dataset):
    return {s.id: s for s in dataset.samples()}


def pixel(image, xy=(0, 0)):
    return image.getpixel(xy)


def close(a, b, tolerance=12):  # JPEG fixtures: colours within a few levels
    return all(abs(x - y) <= tolerance for x, y in zip(a, b))


# ------------------------------------------------------------------ prompts
def test_prompt_pieces_are_llava_15s():
    assert SHORT_ANSWER == "Answer the question using a single word or phrase."
    assert OPTION_LETTER == "Answer with the option's letter from the given choices directly."
    assert OPTION_LETTER_CN == "请直接回答选项字母。"
    assert VIZWIZ_UNANSWERABLE == "When the provided information is insufficient, respond with 'Unanswerable'."


def test_pad_to_square_wide_image_centres_vertically():
    image = Image.new("RGB", (8, 4), (255, 0, 0))
    out = pad_to_square(image, (122, 116, 104))
    assert out.size == (8, 8) and out.mode == "RGB"
    array = np.asarray(out)
    assert (array[:2] == (122, 116, 104)).all() and (array[6:] == (122, 116, 104)).all()
    assert (array[2:6] == (255, 0, 0)).all()


def test_pad_to_square_tall_image_odd_gap_offset_floor():
    image = Image.new("RGB", (2, 5), (0, 0, 255))
    array = np.asarray(pad_to_square(image, (1, 2, 3)))
    assert array.shape == (5, 5, 3)
    # (5 - 2) // 2 = 1 column of padding on the left, 2 on the right (LLaVA's expand2square)
    assert (array[:, 0] == (1, 2, 3)).all() and (array[:, 3:] == (1, 2, 3)).all()
    assert (array[:, 1:3] == (0, 0, 255)).all()


def test_pad_to_square_leaves_square_converts_to_rgb():
    image = Image.new("L", (3, 3), 7)
    out = pad_to_square(image, (0, 0, 0))
    assert out.size == (3, 3) and out.mode == "RGB" and pixel(out) == (7, 7, 7)


def test_mean_background_truncates_like_llava():
    assert mean_background((0.48145466, 0.4578275, 0.40821073)) == (122, 116, 104)
    with pytest.raises(ValueError, match="mean_background"):
        pad_to_square(Image.new("RGB", (2, 1)), (0.48, 0.45, 0.4))
    with pytest.raises(ValueError, match="background"):
        pad_to_square(Image.new("RGB", (2, 1)), (0, 0, 300))


# ------------------------------------------------------------------ POPE
def test_pope_folder_reads_three_splits_in_llavas_order():
    data = PopeDataset(F / "pope", F / "pope" / "val2014")
    samples = rows(data)
    assert (data.name, data.scorer, len(data)) == ("pope", "pope", 5)
    assert [s.id for s in samples] == ["adversarial/1", "adversarial/2", "popular/1", "random/1", "random/2"]
    assert samples[0].prompt == "Is there a snowboard in the image?" + SHORT
    assert [s.reference for s in samples] == ["yes", "no", "yes", "yes", "no"]
    assert samples[2].meta == {"split": "popular", "image": "COCO_val2014_000000210789.jpg", "question_id": 1}
    assert samples[0].max_new_tokens == 128 and samples[0].video is None
    image = samples[0].image()
    assert image.mode == "RGB" and image.size == (8, 6) and close(pixel(image), (200, 30, 30))


def test_pope_single_file_and_split_filter():
    one = PopeDataset(str(F / "pope" / "coco_pope_random.json"), str(F / "pope" / "val2014"))
    assert [s.id for s in one.samples()] == ["random/1", "random/2"]
    assert [s.meta["split"] for s in one.samples()] == ["random", "random"]
    two = PopeDataset(F / "pope", F / "pope" / "val2014", splits="popular,random")
    assert [s.id for s in two.samples()] == ["popular/1", "random/1", "random/2"]


def test_pope_folder_with_other_variants_reads_coco(tmp_path):
    for name in ("coco_pope_random.json", "aokvqa_pope_random.json"):
        line = {"question_id": 7, "image": f"{name[:4]}.jpg", "text": "Is there a cat in the image?", "label": "no"}
        (tmp_path / name).write_text(json.dumps(line) + "\n")
    (sample,) = rows(PopeDataset(tmp_path, tmp_path))
    assert sample.id == "random/7" and sample.meta["image"] == "coco.jpg"
    (tmp_path / "coco_pope_random.json").unlink()
    (tmp_path / "gqa_pope_random.json").write_text("")
    with pytest.raises(DataFormatError, match="several POPE random files"):
        PopeDataset(tmp_path, tmp_path)


def test_pope_missing_image_names_its_path():
    sample = by_id(PopeDataset(F / "pope", F / "pope" / "val2014"))["random/2"]
    with pytest.raises(DataFormatError, match="COCO_val2014_000000016631.jpg: image not found"):
        sample.image()


# ------------------------------------------------------------------ MME
def test_mme_both_folder_layouts():
    data = MMEDataset(F / "mme" / "MME_Benchmark_release_version")
    samples = rows(data)
    assert (data.name, data.scorer, len(data)) == ("mme", "mme", 8)
    assert [s.id for s in samples] == [
        "artwork/14777.jpg#0", "artwork/14777.jpg#1", "code_reasoning/0020.png#0", "code_reasoning/0020.png#1",
        "existence/000000006040.jpg#0", "existence/000000006040.jpg#1", "position/000000472046.jpg#0",
        "position/000000472046.jpg#1"]
    assert [s.reference for s in samples] == ["Yes", "No"] * 4
    got = by_id(data)
    # LLaVA's llava_mme.jsonl: MME's "Please answer yes or no." replaced by the short-answer line
    assert got["code_reasoning/0020.png#0"].prompt == "Is a python code shown in the picture?" + SHORT
    assert got["existence/000000006040.jpg#1"].prompt == "Is there a bed in this image?" + SHORT
    assert got["position/000000472046.jpg#0"].prompt == "Is the refrigerator on the right side of the picture" + SHORT
    assert got["artwork/14777.jpg#1"].meta == {"subtask": "artwork", "image_id": "14777.jpg", "question_index": 1}
    assert got["artwork/14777.jpg#0"].image().size == (6, 8)  # from artwork/images/
    assert close(pixel(got["existence/000000006040.jpg#0"].image()), (10, 10, 250))


# ------------------------------------------------------------------ GQA
def test_gqa_testdev_balanced():
    data = GQADataset(F / "gqa" / "testdev_balanced_questions.json", F / "gqa" / "images")
    samples = rows(data)
    assert (data.name, data.scorer, len(data)) == ("gqa", "gqa", 3)
    assert [s.id for s in samples] == ["201307251", "201640614", "202225914"]
    assert samples[1].prompt == "Who is wearing the dress?" + SHORT
    assert [s.reference for s in samples] == ["no", "woman", "no"]
    assert samples[0].meta == {"question_id": "201307251", "image_id": "n161313",
                               "types": {"detailed": "weather", "semantic": "global", "structural": "verify"}}
    assert close(pixel(samples[1].image()), (255, 255, 0))


# ------------------------------------------------------------------ ScienceQA
def test_scienceqa_img_split_prompts():
    data = ScienceQADataset(F / "scienceqa" / "problems.json", F / "scienceqa" / "pid_splits.json",
                            F / "scienceqa" / "images")
    samples = rows(data)
    assert (data.name, data.scorer, len(data)) == ("scienceqa", "scienceqa", 2)
    assert [s.id for s in samples] == ["5", "11"]
    assert samples[0].prompt == (
        "Context: People can use the engineering-design process to develop solutions to problems.\n"
        "Figure: a spacecraft's parachute in a wind tunnel.\n"
        "Which of the following could Gordon's test show?\n"
        "A. if the spacecraft was damaged\n"
        "B. how steady a parachute with a 1 m vent was at 200 km per hour\n"
        "C. whether a parachute would swing too much at 400 km per hour" + LETTER)
    assert samples[1].prompt == (  # empty hint: no Context line
        "What is the name of the colony shown?\nA. Maryland\nB. New Hampshire\nC. Rhode Island\nD. Vermont" + LETTER)
    assert [s.reference for s in samples] == ["B", "B"]
    assert samples[1].meta["options"] == ["Maryland", "New Hampshire", "Rhode Island", "Vermont"]
    assert samples[1].meta["pid"] == "11" and samples[1].meta["subject"] == "social science"
    assert samples[0].image().size == (8, 4)
    assert samples[0].max_new_tokens == 1024


def test_scienceqa_all_problems_and_split_folder():
    data = ScienceQADataset(F / "scienceqa" / "problems.json", F / "scienceqa" / "pid_splits.json",
                            F / "scienceqa" / "images" / "test", image_only="false")
    got = by_id(data)
    assert list(got) == ["4", "5", "11", "15"]
    assert got["4"].image is None and got["4"].reference == "B"
    assert got["4"].prompt == ("Which figure of speech is used in this text?\n"
                               "Sing, O goddess, the anger of Achilles son of Peleus.\n—Homer, The Iliad\n"
                               "A. chiasmus\nB. apostrophe" + LETTER)
    train = ScienceQADataset(F / "scienceqa" / "problems.json", F / "scienceqa" / "pid_splits.json",
                             F / "scienceqa" / "images", split="train")
    assert [s.id for s in train.samples()] == ["1"] and train.samples().__next__().reference == "A"


# ------------------------------------------------------------------ TextVQA
def test_textvqa_with_rosetta_ocr_file():
    data = TextVQADataset(F / "textvqa" / "TextVQA_0.5.1_val.json", F / "textvqa" / "train_images",
                          ocr=F / "textvqa" / "TextVQA_Rosetta_OCR_v0.2_val.json")
    samples = rows(data)
    assert (data.name, data.scorer, len(data)) == ("textvqa", "vqa", 3)
    assert [s.id for s in samples] == ["34602", "34603", "34604"]
    # as llava_textvqa_val_v051_ocr.jsonl: capitalised question, comma-joined tokens, empty line kept
    assert samples[0].prompt == ("What is the brand of this camera?\n"
                                 "Reference OCR token: DAKOTA, DIGITAL, Single-Use, Camera, Pire, digitat" + SHORT)
    assert samples[1].prompt == "Whats the lowest number yard line that you can see?\nReference OCR token: " + SHORT
    assert len(samples[0].reference) == 10 and samples[0].reference[1] == "dakota"
    assert samples[2].meta == {"question_id": 34604, "image_id": "b9dc400eb20bad64"}
    assert samples[2].image().size == (6, 8)


def test_textvqa_ocr_from_question_field_or_left_out(tmp_path):
    source = json.loads((F / "textvqa" / "TextVQA_0.5.1_val.json").read_text())
    source["data"][0]["ocr_tokens"] = ["dakota", "digital"]
    path = tmp_path / "TextVQA_0.5.1_val.json"
    path.write_text(json.dumps({"data": source["data"][:1]}))
    data = TextVQADataset(path, F / "textvqa" / "train_images")
    assert rows(data)[0].prompt == "What is the brand of this camera?\nReference OCR token: dakota, digital" + SHORT
    plain = TextVQADataset(F / "textvqa" / "TextVQA_0.5.1_val.json", F / "textvqa" / "train_images", use_ocr="false")
    assert rows(plain)[0].prompt == "What is the brand of this camera?" + SHORT
    with pytest.raises(DataFormatError, match=r"TextVQA_0\.5\.1_val\.json: data\[0\]: no 'ocr_tokens'"):
        TextVQADataset(F / "textvqa" / "TextVQA_0.5.1_val.json", F / "textvqa" / "train_images")


# ------------------------------------------------------------------ VQAv2
def test_vqav2_val_with_annotations():
    data = VQAv2Dataset(F / "vqav2" / "v2_OpenEnded_mscoco_val2014_questions.json", F / "vqav2" / "val2014",
                        annotations=F / "vqav2" / "v2_mscoco_val2014_annotations.json")
    samples = rows(data)
    assert (data.name, data.scorer, len(data)) == ("vqav2", "vqa", 2)
    assert [s.id for s in samples] == ["262148000", "262148001"]
    assert samples[0].prompt == "Where is he looking?" + SHORT
    assert samples[0].reference == ["down"] * 7 + ["at table", "skateboard", "table"]
    assert samples[1].meta == {"question_id": 262148001, "image_id": 262148, "answer_type": "other",
                               "question_type": "what are the"}
    assert close(pixel(samples[0].image()), (20, 20, 220))


def test_vqav2_test_dev_is_server_scored():
    data = VQAv2Dataset(F / "vqav2" / "v2_OpenEnded_mscoco_test-dev2015_questions.json", F / "vqav2" / "test2015")
    (sample,) = rows(data)
    assert data.scorer is None and sample.reference is None and sample.id == "262144000"
    assert sample.image.path.name == "COCO_test2015_000000262144.jpg"
    assert close(pixel(sample.image()), (220, 20, 20))


# ------------------------------------------------------------------ VizWiz
def test_vizwiz_val_and_test():
    data = VizWizDataset(F / "vizwiz" / "val.json", F / "vizwiz" / "val")
    samples = rows(data)
    assert (data.name, data.scorer, len(data)) == ("vizwiz", "vqa", 2)
    assert [s.id for s in samples] == ["VizWiz_val_00000000.jpg", "VizWiz_val_00000001.jpg"]
    # llava's vizwiz/llava_test.jsonl: the question verbatim (trailing space kept), then both instructions
    assert samples[1].prompt == ("What is this? \nWhen the provided information is insufficient, respond with "
                                 "'Unanswerable'.\nAnswer the question using a single word or phrase.")
    assert samples[0].reference == ["unanswerable"] * 9 + ["cooking"]
    assert samples[0].meta == {"image": "VizWiz_val_00000000.jpg", "answer_type": "unanswerable", "answerable": 0}
    test = VizWizDataset(F / "vizwiz" / "test.json", F / "vizwiz" / "test")
    (sample,) = rows(test)
    assert test.scorer is None and sample.reference is None
    assert sample.prompt.startswith("What is this? and what color is it?\nWhen the provided")


# ------------------------------------------------------------------ MMBench
def test_rotate_shifts_right_and_moves_the_answer():
    assert rotate(["a", "b", "c", "d"], 1, 1) == (["d", "a", "b", "c"], 2)
    assert rotate(["a", "b", "c", "d"], 3, 2) == (["c", "d", "a", "b"], 1)
    assert rotate(["a", "b", "c"], 2, 1) == (["c", "a", "b"], 0)
    assert rotate(["a", "b"], None, 1) == (["b", "a"], None)


def test_mmbench_makes_circular_copies():
    data = MMBenchDataset(F / "mmbench" / "mmbench_dev_originals.tsv")
    got = by_id(data)
    assert (data.name, data.scorer, len(data)) == ("mmbench", "mmbench", 2 + 4 + 3)
    assert list(got) == ["241", "1000241", "8", "1000008", "2000008", "3000008", "9", "1000009", "2000009"]
    # hint line first; options A, B only (C, D empty)
    assert got["241"].prompt == (
        "The passage below describes an experiment.\nFigure: snowboarding down a hill.\n"
        "Identify the question that Madelyn and Tucker's experiment can best answer.\n"
        "A. Does Madelyn's snowboard slide down a hill in less time when it has a thin layer of wax or a thick "
        "layer of wax?\nB. Does Madelyn's snowboard slide down a hill in less time when it has a layer of wax or "
        "when it does not have a layer of wax?" + LETTER)
    # "nan" hint is no hint; a quoted multi-line option and a tab in the question survive the TSV
    assert got["8"].prompt == ("Which code snippet prints\t'banana' letters?\nA. class Person:\n  pass\n"
                               "B. mystr = \"banana\"\nC. def my_function():\n  print(\"Hello\")\n"
                               "D. x = min(5, 10, 25)" + LETTER)
    assert got["9"].prompt == "What is the main colour of the image?\nA. red\nB. green\nC. blue" + LETTER
    assert got["1000009"].prompt == "What is the main colour of the image?\nA. blue\nB. red\nC. green" + LETTER
    assert [got[i].reference for i in ("9", "1000009", "2000009")] == ["C", "A", "B"]
    assert [got[i].reference for i in ("8", "1000008", "2000008", "3000008")] == ["B", "C", "D", "A"]
    assert [got[i].reference for i in ("241", "1000241")] == ["B", "A"]
    for sample in got.values():  # the answer letter always names the same option text
        assert sample.meta["options"][sample.reference] == got[str(sample.meta["group"])].meta["options"][
            got[str(sample.meta["group"])].reference]
    assert got["2000009"].meta == {"index": 2000009, "group": 9, "copy": 2,
                                   "options": {"A": "green", "B": "blue", "C": "red"},
                                   "category": "attribute_recognition", "l2-category": "finegrained_perception"}
    image = got["2000009"].image()
    assert image.size == (6, 4) and pixel(image) == (0, 0, 255)
    single = MMBenchDataset(F / "mmbench" / "mmbench_dev_originals.tsv", circular="false")
    assert [s.id for s in single.samples()] == ["241", "8", "9"]


def test_mmbench_file_with_its_own_copies_is_read_as_is():
    data = MMBenchDataset(F / "mmbench" / "mmbench_dev_20230712.tsv")
    got = by_id(data)
    assert list(got) == ["241", "9", "1000241", "1000009", "2000009"]
    assert [got[i].reference for i in ("9", "1000009", "2000009")] == ["C", "A", "B"]
    assert got["1000009"].prompt == "What is the main colour of the image?\nA. blue\nB. red\nC. green" + LETTER
    assert (got["2000009"].meta["group"], got["2000009"].meta["copy"]) == (9, 2)
    assert pixel(got["2000009"].image()) == (0, 0, 255)  # image cell "9": row 9's image
    originals = MMBenchDataset(F / "mmbench" / "mmbench_dev_20230712.tsv", circular=False)
    assert [s.id for s in originals.samples()] == ["241", "9"]


def test_mmbench_cn_suffix_and_detection():
    data = MMBenchDataset(F / "mmbench" / "mmbench_dev_cn_20231003.tsv")
    assert data.name == "mmbench_cn" and len(data) == 3
    first = rows(data)[0]
    assert first.prompt == "请看图片。\n图中的主要颜色是什么？\nA. 红色\nB. 绿色\nC. 蓝色\n请直接回答选项字母。"
    assert MMBenchCNDataset(F / "mmbench" / "mmbench_dev_originals.tsv").name == "mmbench_cn"
    forced = rows(MMBenchCNDataset(F / "mmbench" / "mmbench_dev_originals.tsv"))[0]
    assert forced.prompt.endswith("\n请直接回答选项字母。")
    english = MMBenchDataset(F / "mmbench" / "mmbench_dev_cn_20231003.tsv", chinese="false")
    assert english.name == "mmbench" and rows(english)[0].prompt.endswith(LETTER)


def test_mmbench_test_split_is_server_scored():
    data = MMBenchDataset(F / "mmbench" / "mmbench_test_en_20231003.tsv")
    assert data.scorer is None and len(data) == 3 + 4
    assert all(s.reference is None for s in data.samples())
    assert by_id(data)["1000102"].meta["options"]["A"] == "x = min(5, 10, 25)"


# ------------------------------------------------------------------ video QA
def test_video_qa_frames_from_folder_and_npy():
    data = MSVDQADataset(F / "msvd" / "test_q.json", F / "msvd" / "test_a.json", F / "msvd" / "videos", frames="3")
    samples = rows(data)
    assert (data.name, data.scorer, len(data)) == ("msvd", "videoqa", 3)
    assert [s.id for s in samples] == ["v_0", "v_1", "v_2"]
    assert [s.prompt for s in samples] == ["what is a woman doing?", "who is slicing a tomato?",
                                           "what is a cat doing?"]
    assert [s.reference for s in samples] == ["slice", "woman", "play"]
    assert samples[0].meta == {"question_id": "v_0", "video": "-4wsuPCjDBc_5_15"}
    assert samples[0].image is None and samples[0].max_new_tokens == 1024
    folder = samples[0].video()  # 4 frames, 3 sampled evenly: 0, 2 (1.5 rounds to even), 3
    assert folder.shape == (3, 4, 6, 3) and folder.dtype == np.uint8
    assert list(folder[:, 0, 0, 0]) == [0, 120, 180]
    array = samples[1].video()  # 5 frames of value 50 t: 0, 2, 4
    assert array.shape == (3, 4, 6, 3) and list(array[:, 0, 0, 0]) == [0, 100, 200]
    with pytest.raises(DataFormatError, match="missing_video"):
        samples[2].video()


def test_video_qa_answers_paired_by_position_without_ids(tmp_path):
    answers = tmp_path / "test_a.json"
    answers.write_text(json.dumps([{"answer": "a"}, {"answer": "b"}, {"answer": "c"}]))
    data = VideoQADataset(F / "msvd" / "test_q.json", answers, F / "msvd" / "videos")
    assert [s.reference for s in data.samples()] == ["a", "b", "c"]
    answers.write_text(json.dumps([{"answer": "a"}]))
    with pytest.raises(DataFormatError, match="test_a.json: 1 answers without question ids"):
        VideoQADataset(F / "msvd" / "test_q.json", answers, F / "msvd" / "videos")


# ------------------------------------------------------------------ LLaVA question files
def test_llava_question_file_read_verbatim():
    data = LlavaQuestionsDataset(F / "llava" / "llava_pope_test.jsonl", F / "pope" / "val2014",
                                 answers=F / "llava" / "answers.jsonl")
    samples = rows(data)
    assert (data.name, data.scorer, len(data)) == ("llava_questions", "exact", 2)
    assert samples[0].prompt == "Is there a snowboard in the image?" + SHORT
    assert [s.reference for s in samples] == ["yes", "no"]
    assert samples[1].meta == {"question_id": 2, "image": "COCO_val2014_000000310196.jpg", "category": "adversarial",
                               "line": 2}
    assert close(pixel(samples[0].image()), (200, 30, 30))


def test_llava_question_file_repeated_ids_without_answers():
    data = LlavaQuestionsDataset(F / "llava" / "llava_mme.jsonl", F / "mme" / "MME_Benchmark_release_version",
                                 scorer="mme")
    samples = rows(data)
    assert data.scorer == "mme"
    assert [s.id for s in samples] == ["code_reasoning/0020.png", "code_reasoning/0020.png#1"]
    assert [s.reference for s in samples] == [None, None]
    assert samples[1].prompt == "Is a c++ code shown in the picture?" + SHORT
    assert samples[1].image().size == (6, 6)
    assert LlavaQuestionsDataset(F / "llava" / "llava_mme.jsonl", F / "mme").scorer is None


# ------------------------------------------------------------------ ShapesVQA
def test_shapes_matches_vqa_items():
    from visiondrop.data.shapes import HELDOUT_SEED, scenes
    from visiondrop.eval.vqa import items_of

    data = ShapesDataset(scenes="2", seed=str(HELDOUT_SEED))
    samples = rows(data)
    items = items_of(list(scenes(HELDOUT_SEED, 2)))
    assert (data.name, data.scorer, len(data)) == ("shapes", "exact", 12)
    assert [s.prompt for s in samples] == [it.question.text for it in items]
    assert [s.reference for s in samples] == [it.question.answer for it in items]
    assert samples[6].id == "1/exists" and samples[6].meta == {"scene": 1, "kind": "exists",
                                                                "subset": items[6].question.subset}
    assert np.array_equal(np.asarray(samples[7].image()), items[7].scene.image)
    assert samples[0].max_new_tokens == 1
    shifted = ShapesDataset(scenes=1, seed=5, start=3)
    assert [s.id for s in shifted.samples()][0] == "3/exists"


# ------------------------------------------------------------------ registry
def test_registry_names_and_types():
    assert set(DATASETS) == {"pope", "mme", "gqa", "scienceqa", "textvqa", "vqav2", "vizwiz", "mmbench",
                             "mmbench_cn", "msvd", "msrvtt", "tgif", "llava_questions", "shapes"}
    for name, cls in DATASETS.items():
        assert issubclass(cls, Dataset) and cls.name == name
    assert {DATASETS[n].scorer for n in ("msvd", "msrvtt", "tgif")} == {"videoqa"}


def test_load_dataset_builds_from_string_options():
    data = load_dataset("pope", questions=str(F / "pope"), images=str(F / "pope" / "val2014"), splits="random")
    assert isinstance(data, PopeDataset) and len(data) == 2
    assert isinstance(next(data.samples()), Sample)
    assert len(load_dataset("shapes", scenes="1")) == 6


def test_load_dataset_errors_name_the_parameter():
    with pytest.raises(ValueError, match="dataset: unknown name 'popee'"):
        load_dataset("popee", questions="x")
    with pytest.raises(ValueError, match="^images: dataset 'pope' needs images"):
        load_dataset("pope", questions=str(F / "pope"))
    with pytest.raises(ValueError, match="^ocr_file: dataset 'textvqa' takes no"):
        load_dataset("textvqa", questions="q", images="i", ocr_file="o")
    with pytest.raises(DataFormatError, match="nowhere.json: no such file \\(given as questions\\)"):
        load_dataset("gqa", questions=str(F / "nowhere.json"), images=str(F / "gqa" / "images"))
    with pytest.raises(DataFormatError, match="no_images: no such folder \\(given as images\\)"):
        load_dataset("gqa", questions=str(F / "gqa" / "testdev_balanced_questions.json"),
                     images=str(F / "gqa" / "no_images"))
    with pytest.raises(ValueError, match="frames: expected an integer"):
        load_dataset("msvd", questions=str(F / "msvd" / "test_q.json"), answers=str(F / "msvd" / "test_a.json"),
                     videos=str(F / "msvd" / "videos"), frames="eight")


# ------------------------------------------------------------------ malformed files
X = F / "malformed"
MALFORMED = {
    "pope bad JSON line": (lambda: PopeDataset(X / "coco_pope_random.json", F / "pope" / "val2014"),
                           r"coco_pope_random\.json:2: not a JSON line"),
    "pope missing label": (lambda: PopeDataset(X / "coco_pope_popular.json", F / "pope" / "val2014"),
                           r"coco_pope_popular\.json:1: missing key 'label'"),
    "gqa missing imageId": (lambda: GQADataset(X / "gqa_questions.json", F / "gqa" / "images"),
                            r"gqa_questions\.json: question '201307251': missing key 'imageId'"),
    "mmbench missing hint column": (lambda: MMBenchDataset(X / "mmbench_no_hint.tsv"),
                                    r"mmbench_no_hint\.tsv: missing column hint"),
    "mme line without tab": (lambda: MMEDataset(X / "mme"), r"000000006040\.txt:1: expected 'question<TAB>Yes\|No'"),
    "textvqa without data": (lambda: TextVQADataset(X / "textvqa_no_data.json", F / "textvqa" / "train_images"),
                             r"textvqa_no_data\.json: expected a JSON object with a 'data' list"),
    "scienceqa missing choices": (lambda: ScienceQADataset(X / "problems.json", X / "pid_splits.json",
                                                           F / "scienceqa" / "images"),
                                  r"problems\.json: problem '5': missing key 'choices'"),
    "vizwiz not a list": (lambda: VizWizDataset(X / "vizwiz_val.json", F / "vizwiz" / "val"),
                          r"vizwiz_val\.json: expected a JSON list"),
    "video answer missing": (lambda: MSVDQADataset(F / "msvd" / "test_q.json", X / "test_a.json",
                                                   F / "msvd" / "videos"),
                             r"test_a\.json: \[0\]: missing key 'answer'"),
    "vqav2 truncated JSON": (lambda: VQAv2Dataset(X / "vqav2_questions.json", F / "vqav2" / "val2014"),
                             r"vqav2_questions\.json: not valid JSON"),
    "pope image folder missing": (lambda: PopeDataset(F / "pope", F / "pope" / "val2017"),
                                  r"val2017: no such folder"),
    "mme not a release folder": (lambda: MMEDataset(F / "gqa"), r"gqa: no MME subtask folders"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_files_raise_naming_the_file(case):
    build, message = MALFORMED[case]
    with pytest.raises(DataFormatError, match=message):
        build()


def test_malformed_rows_found_when_constructed(tmp_path):
    bad = tmp_path / "mmbench_bad_answer.tsv"
    text = (F / "mmbench" / "mmbench_dev_originals.tsv").read_text(encoding="utf-8")
    bad.write_text(text.replace("\tC\tattribute_recognition", "\tD\tattribute_recognition"), encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"mmbench_bad_answer\.tsv: index 9: answer 'D' is not one of"):
        MMBenchDataset(bad)
    pope = tmp_path / "coco_pope_random.json"
    pope.write_text(json.dumps({"question_id": 1, "image": "x.jpg", "text": "Is there?", "label": "maybe"}) + "\n")
    with pytest.raises(DataFormatError, match=r"coco_pope_random\.json:1: label must be 'yes' or 'no'"):
        PopeDataset(pope, tmp_path)
    dup = tmp_path / "coco_pope_adversarial.json"
    line = json.dumps({"question_id": 1, "image": "x.jpg", "text": "Is there?", "label": "no"}) + "\n"
    dup.write_text(line + line)
    with pytest.raises(DataFormatError, match=r"coco_pope_adversarial\.json:2: id 'adversarial/1' appears twice"):
        PopeDataset(dup, tmp_path)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    (tmp_path / "q.json").write_text(json.dumps({"1": {"imageId": "broken", "question": "Why?", "answer": "x"}}))
    sample = rows(GQADataset(tmp_path / "q.json", tmp_path))[0]
    with pytest.raises(DataFormatError, match=r"broken\.jpg: not a readable image"):
        sample.image()
