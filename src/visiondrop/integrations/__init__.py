"""Optional integrations with evaluation frameworks. Each submodule imports its framework
itself, so ``import visiondrop`` never needs one:

- :mod:`visiondrop.integrations.lmms_eval`: an lmms-eval model (``--model visiondrop_llava_hf``);
  ``pip install visiondrop[lmms]``.
"""
