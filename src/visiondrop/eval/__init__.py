"""Evaluation tools built on the library: ShapesVQA answering and the fidelity benchmark."""
