"""Datasets: ShapesVQA, the synthetic benchmark the shipped model is trained and judged on."""
