"""The GPT judge of the video QA benchmarks (MSVD-QA, MSRVTT-QA, TGIF-QA) as Video-LLaVA
and Video-ChatGPT score them: a chat model reads question, reference and prediction and
answers a Python dict ``{'pred': 'yes'|'no', 'score': 0-5}``; accuracy is the share of
"yes", the score their mean. The endpoint is any OpenAI-compatible ``/chat/completions``
the user supplies (``--judge-url``, key from ``OPENAI_API_KEY``); nothing here calls
one by default. Judgements stream to a JSONL file and resume; a reply that cannot be
parsed is counted as unjudged and reported, never guessed.
"""

from __future__ import annotations

import ast
import json
import os
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

# The judge prompt of Video-ChatGPT's quantitative QA evaluation, which Video-LLaVA reuses:
# scores are only comparable with the published ones under the same wording.
SYSTEM = (
    "You are an intelligent chatbot designed for evaluating the correctness of generative outputs for "
    "question-answer pairs. Your task is to compare the predicted answer with the correct answer and determine "
    "if they match meaningfully. Here's how you can accomplish the task:------##INSTRUCTIONS: - Focus on the "
    "meaningful match between the predicted answer and the correct answer.\n- Consider synonyms or paraphrases "
    "as valid matches.\n- Evaluate the correctness of the prediction compared to the answer."
)
USER = (
    "Please evaluate the following video-based question-answer pair:\n\nQuestion: {question}\nCorrect Answer: "
    "{answer}\nPredicted Answer: {pred}\n\nProvide your evaluation only as a yes/no and score where the score is "
    "an integer value between 0 and 5, with 5 indicating the highest meaningful match. Please generate the "
    "response in the form of a Python dictionary string with keys 'pred' and 'score', where value of 'pred' is  "
    "a string of 'yes' or 'no' and value of 'score' is in INTEGER, not STRING.DO NOT PROVIDE ANY OTHER OUTPUT "
    "TEXT OR EXPLANATION. Only provide the Python dictionary string. For example, your response should look "
    "like this: {{'pred': 'yes', 'score': 4.8}}."
)


#: what a resumed judge reads from its verdicts file (a prediction record's fields do not apply)
VERDICT_FIELDS = {"id": str, "verdict": (dict, type(None))}


def judge_messages(question: str, answer: str, prediction: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": USER.format(question=question, answer=answer, pred=prediction)}]


def parse_verdict(reply: str) -> dict | None:
    """``{'pred': 'yes'|'no', 'score': float}`` from the judge's reply, or None."""
    start, end = reply.find("{"), reply.rfind("}")
    if start < 0 or end < start:
        return None
    try:
        verdict = ast.literal_eval(reply[start:end + 1])
    except (ValueError, SyntaxError):
        return None
    if not isinstance(verdict, dict) or str(verdict.get("pred", "")).lower() not in ("yes", "no"):
        return None
    try:
        score = float(verdict.get("score"))
    except (TypeError, ValueError):
        return None
    return {"pred": str(verdict["pred"]).lower(), "score": score}


def openai_chat(url: str, model: str, api_key: str | None = None, timeout: float = 60.0) -> Callable[[list], str]:
    """A ``messages -> reply text`` function for an OpenAI-compatible endpoint
    (``url`` up to ``/v1``; ``/chat/completions`` is appended)."""
    key = api_key or os.environ.get("OPENAI_API_KEY", "")
    endpoint = url.rstrip("/") + "/chat/completions"

    def chat(messages: list) -> str:
        body = json.dumps({"model": model, "messages": messages}).encode()
        request = urllib.request.Request(endpoint, data=body, headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())["choices"][0]["message"]["content"]

    return chat


def judge(records: Sequence[dict], chat: Callable[[list], str], out: str | Path, progress: bool = True) -> dict:
    """Judge every record (``prompt`` = the question, ``reference``, ``prediction``),
    appending verdicts to ``out`` (resumes); returns accuracy (percent of "yes"), the mean
    score over judged records, and how many replies could not be parsed."""
    from tqdm.auto import tqdm

    from .harness import read_records, truncate_partial_line

    out = Path(out)
    done = {row["id"]: row for row in read_records(out, VERDICT_FIELDS)}
    truncate_partial_line(out)  # a verdict cut by an interrupted run is asked again
    with out.open("a", encoding="utf-8") as stream:
        for row in tqdm(records, desc="judging", disable=not progress):
            if row["id"] in done:
                continue
            reply = chat(judge_messages(row["meta"].get("question", row["prompt"]), str(row["reference"]),
                                        row["prediction"]))
            verdict = {"id": row["id"], "reply": reply, "verdict": parse_verdict(reply)}
            stream.write(json.dumps(verdict, ensure_ascii=False) + "\n")
            stream.flush()
            done[row["id"]] = verdict
    verdicts = [done[row["id"]]["verdict"] for row in records]
    judged = [v for v in verdicts if v is not None]
    return {"accuracy": 100.0 * sum(v["pred"] == "yes" for v in judged) / max(len(judged), 1),
            "score": sum(v["score"] for v in judged) / max(len(judged), 1),
            "judged": len(judged), "unjudged": len(verdicts) - len(judged)}
