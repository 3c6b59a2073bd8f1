"""The lmms-eval plugin (visiondrop.integrations.lmms_eval). Everything but the first test
needs lmms-eval installed (``pip install visiondrop[lmms]``) and is skipped without it;
the model tests run lmms-eval's own LlavaHf classes on a tiny random checkpoint, on CPU,
without downloads."""

import functools
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import visiondrop

PLUGIN = "visiondrop.integrations.lmms_eval"
# the entry point visiondrop's pyproject.toml declares (see docs/lmms-eval.md)
ENTRY_POINTS_TXT = "[lmms_eval.models]\nvisiondrop = visiondrop.integrations.lmms_eval:manifests\n"
# renders what the word-level tiny tokenizer knows: USER: <image> text ASSISTANT:
# (content as a list of parts: the chat class; as a string: the simple class)
CHAT_TEMPLATE = ("{% for message in messages %}USER: {% if message['content'] is string %}{{ message['content'] }} "
                 "{% else %}{% for c in message['content'] %}{% if c['type'] == 'image' %}<image> {% endif %}"
                 "{% endfor %}{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }} "
                 "{% endif %}{% endfor %}{% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}")


def test_import_without_lmms_eval_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "lmms_eval", None)  # as if not installed: `import lmms_eval` fails
    monkeypatch.delitem(sys.modules, PLUGIN, raising=False)
    with pytest.raises(ImportError, match=r"pip install visiondrop\[lmms\]"):
        importlib.import_module(PLUGIN)
    import visiondrop.integrations  # noqa: F401  (the package itself needs nothing)


# ------------------------------------------------------------------ with lmms-eval

@pytest.fixture(scope="module")
def plugin():
    pytest.importorskip("lmms_eval")
    return importlib.import_module(PLUGIN)


@pytest.fixture(scope="module")
def models(plugin):
    models = pytest.importorskip("lmms_eval.models")
    plugin.register()
    return models


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, plugin):
    from transformers import AutoProcessor

    from visiondrop.testing import save_tiny_checkpoint

    path = tmp_path_factory.mktemp("tiny-llava")
    save_tiny_checkpoint(path)
    processor = AutoProcessor.from_pretrained(path)
    processor.chat_template = CHAT_TEMPLATE  # lmms-eval's chat class formats with the processor's template
    processor.save_pretrained(path)
    return path


def test_registered_name_resolves(plugin, models):
    from lmms_eval.api.model import lmms
    from lmms_eval.models.chat.llava_hf import LlavaHf
    from lmms_eval.models.simple.llava_hf import LlavaHf as LlavaHfSimple

    assert plugin.MODEL_ID == "visiondrop_llava_hf"
    assert plugin.MODEL_ID in models.list_available_models()
    assert models.AVAILABLE_MODELS[plugin.MODEL_ID] == "VisionDropLlavaHf"
    chat = models.get_model(plugin.MODEL_ID)
    simple = models.get_model(plugin.MODEL_ID, force_simple=True)
    assert issubclass(chat, LlavaHf) and issubclass(chat, lmms) and not chat.is_simple
    assert issubclass(simple, LlavaHfSimple) and simple.is_simple and not issubclass(simple, LlavaHf)
    assert chat is plugin.VisionDropLlavaHf  # built once
    with pytest.raises(AttributeError):
        plugin.NoSuchClass  # noqa: B018


def test_entry_point_payload_is_accepted(plugin):
    from lmms_eval.models.registry_v2 import ModelRegistryV2

    registry = ModelRegistryV2()
    for manifest in registry._coerce_payload_to_manifests(plugin.manifests):
        registry.register_manifest(manifest)
    assert registry.get_model_class(plugin.MODEL_ID) is plugin.VisionDropLlavaHf
    assert registry.get_model_class(plugin.MODEL_ID, force_simple=True) is plugin.VisionDropLlavaHfSimple


@pytest.mark.parametrize("plugin_first", [False, True], ids=["lmms-eval-first", "plugin-first"])
def test_entry_point_discovered_by_lmms_eval(plugin, tmp_path, plugin_first):
    """A distribution whose entry_points.txt has pyproject's lines: lmms-eval finds the
    model when it starts, whichever of lmms-eval and the plugin is imported first."""
    dist = tmp_path / "visiondrop_entry_point_test-0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: visiondrop-entry-point-test\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text(ENTRY_POINTS_TXT)
    src = Path(visiondrop.__file__).resolve().parents[1]
    first = f"import {PLUGIN}; " if plugin_first else ""
    code = (f"{first}import lmms_eval.models as m; "
            "print('RESOLVED', m.get_model('visiondrop_llava_hf').__name__, "
            "m.get_model('visiondrop_llava_hf', force_simple=True).__name__)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(src), os.environ.get("PYTHONPATH", "")])}
    env.pop("LMMS_EVAL_PLUGINS", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert "RESOLVED VisionDropLlavaHf VisionDropLlavaHfSimple" in out.stdout, out.stdout + out.stderr
    assert "Failed to load model entry-point manifests" not in out.stdout + out.stderr


# ------------------------------------------------------------------ model_args

def test_parse_types_lmms_eval_strings(plugin):
    parse = plugin.PruningArgs.parse
    args = parse("visiondrop", budget="64", positions="keep", contextual_ratio="1/8", keep_cls="false",
                 entry_factor=2, newline="end")
    assert (args.method, args.budget, args.schedule) == ("visiondrop", 64, None)
    assert args.options == {"positions": "keep", "contextual_ratio": 0.125, "keep_cls": False, "entry_factor": 2.0,
                            "newline": "end"}
    assert parse("pdrop", budget=64, layers="[2,8,16,24]").options == {"layers": (2, 8, 16, 24)}
    assert parse("pdrop", budget=64, layers="2;8;16;24").options == {"layers": (2, 8, 16, 24)}
    assert parse("fastv", budget=64, layer="none").options == {"layer": None}
    schedule = parse(schedule='{"encoder":[42,6],"llm":[[30,5],[22,4],[16,3]],"layers":[8,16,24]}').schedule
    assert schedule == visiondrop.Schedule(encoder=(42, 6), llm=[(30, 5), (22, 4), (16, 3)], layers=(8, 16, 24))
    assert parse("none") == plugin.PruningArgs(method="none")


@pytest.mark.parametrize("model_args, message", [
    (dict(method="nope", budget=64), r"^method: unknown pruning method 'nope'; available: none, .*visiondrop"),
    (dict(method=3, budget=64), r"^method: "),
    (dict(), r"^budget: method=visiondrop needs budget="),
    (dict(budget="many"), r"^budget: expected an integer, got 'many'"),
    (dict(budget=1.5), r"^budget: expected an integer"),
    (dict(budget=True), r"^budget: expected an integer"),
    (dict(budget=0), r"^budget: must be a positive number"),
    (dict(budget=64, schedule='{"llm": [[30, 5]]}'), r"^budget, schedule: give one of them"),
    (dict(schedule="{llm: 1"), r"^schedule: not valid JSON"),
    (dict(schedule='{"stages": []}'), r"^schedule: unknown key\(s\) \['stages'\]"),
    (dict(schedule='{"llm": [[1, 2, 3]]}'), r"^schedule: .*must be \(dominant, contextual\)"),
    (dict(budget=64, keep_cls="maybe"), r"^keep_cls: expected true or false"),
    (dict(budget=64, contextual_ratio="lots"), r"^contextual_ratio: expected a number"),
    (dict(budget=64, dtpye="float16"), r"^dtpye: unknown model_args argument .* options of visiondrop: \[.*"),
    (dict(budget=64, layers="8;16;24"), r"^layers: unknown model_args argument .*schedule="),
    (dict(method="pdrop", budget=64, layers="8;x"), r"^layers: expected integers, as layers=\[8,16,24\]"),
    (dict(method="none", budget=64), r"^budget: method=none prunes nothing"),
    (dict(method="none", positions="keep"), r"^positions: method=none prunes nothing"),
])
def test_parse_errors_name_the_argument(plugin, model_args, message):
    with pytest.raises(ValueError, match=message):
        plugin.PruningArgs.parse(**model_args)


def test_bad_args_fail_before_the_weights_load(plugin, models, checkpoint, monkeypatch):
    from lmms_eval.models.simple.llava_hf import LlavaHf

    @functools.wraps(LlavaHf.__init__)  # keeps the signature, whose names the plugin reads
    def no_loading(self, **kwargs):
        raise AssertionError("the base class must not be reached with bad arguments")

    monkeypatch.setattr(LlavaHf, "__init__", no_loading)
    cls = models.get_model(plugin.MODEL_ID)
    with pytest.raises(ValueError, match=r"^dtpye: .*arguments of lmms-eval's model class: \[.*'dtype'"):
        cls.create_from_arg_string(f"pretrained={checkpoint},budget=16,dtpye=float32", {"device": "cpu"})
    # the budget is checked against the architecture (576 tokens per image), from the config alone
    with pytest.raises(ValueError, match=r"budget must be in \[1, 576\]"):
        cls.create_from_arg_string(f"pretrained={checkpoint},budget=1000", {"device": "cpu"})
    with pytest.raises(ValueError, match=r"^method: unknown pruning method"):
        cls.create_from_arg_string(f"pretrained={checkpoint},method=fastest,budget=16", {"device": "cpu"})


# ------------------------------------------------------------------ the models, run

def _image(seed):
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _requests(lm, n=2, max_new_tokens=3):
    """lmms-eval requests as its tasks build them for ``lm`` (chat or simple), one image each."""
    from lmms_eval.api.instance import Instance

    docs = {i: {"question": "what is this ?", "image": _image(i)} for i in range(n)}
    lm.task_dict = {"tiny": {"test": docs}}
    requests = []
    for i in docs:
        if lm.is_simple:
            args = (docs[i]["question"], {"max_new_tokens": max_new_tokens}, lambda doc: [doc["image"]], i, "tiny",
                    "test")
        else:
            def to_messages(doc):
                return [{"role": "user", "content": [{"type": "image", "url": doc["image"]},
                                                     {"type": "text", "text": doc["question"]}]}]

            args = (docs[i]["question"], to_messages, {"max_new_tokens": max_new_tokens}, i, "tiny", "test")
        requests.append(Instance(request_type="generate_until", arguments=args, idx=0,
                                 metadata={"task": "tiny", "doc_id": i, "repeats": 1}))
    return requests


def _text(result):
    return getattr(result, "text", result)  # chat classes return GenerationResult


@pytest.mark.parametrize("force_simple", [False, True], ids=["chat", "simple"])
def test_model_prunes_through_lmms_eval(plugin, models, checkpoint, force_simple):
    cls = models.get_model(plugin.MODEL_ID, force_simple=force_simple)
    # as `lmms_eval --model visiondrop_llava_hf --model_args ...` builds it; no device_map given
    lm = cls.create_from_arg_string(f"pretrained={checkpoint},method=visiondrop,budget=16,dtype=float32",
                                    {"batch_size": 1, "device": "cpu"})
    handle = lm.visiondrop_handle
    assert handle.active and handle.model is lm.model and handle.method.name == "visiondrop"
    assert lm.visiondrop_args == plugin.PruningArgs(method="visiondrop", budget=16)

    guard = vars(lm.model).get("generate")  # visiondrop's, on the instance
    results = lm.generate_until(_requests(lm))
    assert len(results) == 2 and all(isinstance(_text(r), str) for r in results)
    report = handle.report  # of the last request's prefill
    assert report is not None and [stage.name for stage in report.stages][0] == "encoder"
    assert abs(report.layer_visual_tokens.float().mean().item() - 16) <= 1
    assert vars(lm.model).get("generate") is guard  # the plugin's failure check is gone again

    handle.remove()
    assert lm.model.__class__.__name__ == "LlavaForConditionalGeneration"


def test_method_none_leaves_the_model_alone(plugin, models, checkpoint):
    lm = models.get_model(plugin.MODEL_ID).create_from_arg_string(f"pretrained={checkpoint},method=none,dtype=float32",
                                                                  {"device": "cpu"})
    assert lm.visiondrop_handle is None
    assert not any(module._forward_pre_hooks or module._forward_hooks for module in lm.model.modules())
    assert len(lm.generate_until(_requests(lm, n=1))) == 1


def test_generate_errors_stop_the_run(plugin, models, checkpoint, monkeypatch):
    lm = models.get_model(plugin.MODEL_ID).create_from_arg_string(f"pretrained={checkpoint},budget=16,dtype=float32",
                                                                  {"device": "cpu"})

    @functools.wraps(type(lm.model).forward)  # generate() checks its inputs against forward's signature
    def broken(self, *args, **kwargs):
        raise RuntimeError("pruned forward broke")

    guard = vars(lm.model).get("generate")
    monkeypatch.setattr(type(lm.model), "forward", broken)
    # lmms-eval's LlavaHf would log this and score an empty answer
    with pytest.raises(plugin.GenerateFailed, match="pruned forward broke") as info:
        lm.generate_until(_requests(lm, n=1))
    assert isinstance(info.value.__cause__, RuntimeError)
    assert vars(lm.model).get("generate") is guard


def test_loglikelihood_is_refused_while_pruning(plugin, models, checkpoint):
    lm = models.get_model(plugin.MODEL_ID).create_from_arg_string(f"pretrained={checkpoint},budget=16,dtype=float32",
                                                                  {"device": "cpu"})
    with pytest.raises(NotImplementedError, match="loglikelihood tasks .* not supported with pruning"):
        lm.loglikelihood([])


# ------------------------------------------------------------------ lmms-eval's CLI, one and two processes

TASK_YAML = """dataset_path: json
dataset_kwargs:
  data_files:
    test: {docs}
task: visiondrop_tiny
test_split: test
output_type: generate_until
doc_to_visual: !function visiondrop_tiny_utils.doc_to_visual
doc_to_text: !function visiondrop_tiny_utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 4
  do_sample: false
process_results: !function visiondrop_tiny_utils.process_results
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""
TASK_UTILS = '''from PIL import Image


def doc_to_visual(doc):
    return [Image.open(doc["image"]).convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def process_results(doc, results):
    return {"exact_match": float(results[0].strip() == doc["answer"])}
'''


def _local_task(folder: Path, n: int) -> Path:
    """An lmms-eval task read from local files (no hub): ``n`` images, one question each."""
    import json

    folder.mkdir()
    with open(folder / "docs.jsonl", "w") as docs:
        for i in range(n):
            _image(i).save(folder / f"{i}.png")
            docs.write(json.dumps({"image": str(folder / f"{i}.png"), "question": "what is this ?",
                                   "answer": "yes"}) + "\n")
    (folder / "visiondrop_tiny.yaml").write_text(TASK_YAML.format(docs=folder / "docs.jsonl"))
    (folder / "visiondrop_tiny_utils.py").write_text(TASK_UTILS)
    return folder


def _lmms_eval(launcher, checkpoint, task, out):
    """``launcher -m lmms_eval`` with the plugin's model on the CPU; its log and its samples by doc_id."""
    import json

    # device_map=cpu: with several processes and no device_map, lmms-eval's LlavaHf binds
    # process i to cuda:i
    command = [*launcher, "-m", "lmms_eval", "--model", "visiondrop_llava_hf", "--model_args",
               f"pretrained={checkpoint},method=visiondrop,budget=16,dtype=float32,device_map=cpu",
               "--device", "cpu", "--tasks", "visiondrop_tiny", "--include_path", str(task), "--batch_size", "1",
               "--log_samples", "--output_path", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(out / "datasets-cache")}
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
    log = done.stdout + done.stderr
    # lmms-eval logs errors and exits 0 (docs/lmms-eval.md)
    assert done.returncode == 0 and "Error during evaluation" not in log, log[-4000:]
    (samples,) = out.glob("*/*_samples_visiondrop_tiny.jsonl")
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    return log, {row["doc_id"]: row["filtered_resps"] for row in rows}, len(rows)


def test_two_processes_under_accelerate_launch_equal_one_process(plugin, checkpoint, tmp_path):
    """lmms-eval's data parallelism (`accelerate launch --num_processes 2`): each process loads
    and prunes its own model, lmms-eval splits the documents by rank and gathers the answers;
    they equal one process's, none lost or repeated."""
    pytest.importorskip("accelerate")
    from helpers import free_port

    task = _local_task(tmp_path / "task", n=5)
    log_one, one, rows_one = _lmms_eval([sys.executable], checkpoint, task, tmp_path / "one")
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                "--main_process_port", str(free_port())]
    log_two, two, rows_two = _lmms_eval(launcher, checkpoint, task, tmp_path / "two")

    assert log_one.count("visiondrop: PruningHandle(") == 1
    assert log_two.count("visiondrop: PruningHandle(") == 2  # each process pruned its model
    assert "Running on rank 1" in log_two and "Building contexts for visiondrop_tiny on rank 1" in log_two
    assert rows_one == rows_two == 5 and sorted(two) == list(range(5))
    assert two == one
