"""Evaluation tools built on the library: the benchmark harness (``visiondrop eval``:
readers of the benchmarks' original files, LLaVA-1.5's prompts, official scorers, sharded
resumable runs, merge, server export, the video QA judge), ShapesVQA answering and the
fidelity benchmark."""
