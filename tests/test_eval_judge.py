"""The video QA judge without a network: the prompt, the verdict parser, resuming, and the
aggregation (accuracy = share of "yes" among parsed verdicts, unparsed counted apart)."""

import json

import pytest

from visiondrop.eval.judge import judge, judge_messages, parse_verdict


def _records():
    return [{"id": str(i), "prompt": f"what is happening {i}?", "reference": f"answer {i}",
             "prediction": f"pred {i}", "meta": {}} for i in range(4)]


@pytest.mark.parametrize("reply, expected", [
    ("{'pred': 'yes', 'score': 4}", {"pred": "yes", "score": 4.0}),
    ("Sure! {'pred': 'No', 'score': 1.5}", {"pred": "no", "score": 1.5}),
    ("{'pred': 'maybe', 'score': 3}", None),
    ("{'pred': 'yes'}", None),
    ("yes, 5", None),
])
def test_parse_verdict(reply, expected):
    assert parse_verdict(reply) == expected


def test_prompt_carries_question_reference_and_prediction():
    system, user = judge_messages("Q?", "a cat", "a dog")
    assert system["role"] == "system" and "evaluating the correctness" in system["content"]
    assert "Question: Q?\nCorrect Answer: a cat\nPredicted Answer: a dog" in user["content"]
    assert "{'pred': 'yes', 'score': 4.8}" in user["content"]


def test_judge_aggregates_and_resumes(tmp_path):
    replies = {"0": "{'pred': 'yes', 'score': 5}", "1": "{'pred': 'no', 'score': 1}",
               "2": "{'pred': 'yes', 'score': 3}", "3": "I cannot tell"}
    asked = []

    def chat(messages):
        qid = messages[1]["content"].split("happening ")[1].split("?")[0]
        asked.append(qid)
        return replies[qid]

    out = tmp_path / "verdicts.jsonl"
    result = judge(_records()[:2], chat, out, progress=False)
    assert result == {"accuracy": 50.0, "score": 3.0, "judged": 2, "unjudged": 0}
    result = judge(_records(), chat, out, progress=False)
    assert asked == ["0", "1", "2", "3"]  # the first two were not asked again
    assert result["accuracy"] == pytest.approx(200 / 3) and result["score"] == 3.0
    assert result["judged"] == 3 and result["unjudged"] == 1
    assert len([json.loads(line) for line in out.read_text().splitlines()]) == 4


def test_judge_resumes_after_a_verdict_cut_mid_write(tmp_path):
    out = tmp_path / "verdicts.jsonl"
    replies = {"0": "{'pred': 'yes', 'score': 5}", "1": "{'pred': 'no', 'score': 1}"}

    def chat(messages):
        return replies[messages[1]["content"].split("happening ")[1].split("?")[0]]

    judge(_records()[:2], chat, out, progress=False)
    data = out.read_bytes()
    out.write_bytes(data[:-9])  # the second verdict was cut mid-write
    result = judge(_records()[:2], chat, out, progress=False)
    assert result == {"accuracy": 50.0, "score": 3.0, "judged": 2, "unjudged": 0}
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["0", "1"]
