"""Analysis tools built on the handle's report: kept-token pictures (visualize), positional
bias (bias), and the text-guided vs visual-only study (study)."""
