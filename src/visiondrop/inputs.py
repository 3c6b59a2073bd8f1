"""Model inputs from files, for ``visiondrop generate`` and the tools: an image, a
video as frames (a folder of images or a ``.npy`` array), the model's chat format,
and a processor fallback for Video-LLaVA where torchvision is missing.

transformers' video processors need torchvision (there is no CPU wheel on some
machines). Video-LLaVA's frames are plain CLIP images, so without torchvision
:func:`load_processor` returns :class:`FrameProcessor`: the checkpoint's tokenizer and
image processor, which resizes and normalises a video frame by frame (the same CLIP
settings as the video processor on the released checkpoint) and expands ``<video>`` to
the model's ``video_seq_length`` placeholders, as the real processor does. Other video
models still need torchvision, and say so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
LLAVA_PROMPT = "USER: {media}\n{prompt} ASSISTANT:"


class InputError(ValueError):
    """A bad input file or option; ``parameter`` names the CLI option."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter


#: attention backends ``--attn`` takes (transformers' names)
ATTENTION_BACKENDS = ("sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention")


def check_device(device: str | None) -> str:
    """``--device`` as a device string (default: cuda if available), or InputError: an
    unknown device, or CUDA asked for where this torch has none."""
    import torch

    try:
        chosen = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as error:
        raise InputError("--device", f"{device!r} is not a device ({str(error).splitlines()[0]})") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device", f"{device!r} asked for, but CUDA is not available")
    return str(chosen)


def check_attention(attn: str) -> str:
    if attn not in ATTENTION_BACKENDS:
        raise InputError("--attn", f"expected one of {', '.join(ATTENTION_BACKENDS)}, got {attn!r}")
    return attn


def looks_local(path: str) -> bool:
    """A path the user means on this machine (not a hub id ``org/name``)."""
    return path.startswith((".", "/", "~")) or "\\" in path or path.count("/") > 1 or Path(path).exists()


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub answers at all (one TCP connection), so that a hub id is not retried
    for half a minute on a machine without network; HF_HUB_OFFLINE says no at once."""
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def load_config(path: str):
    """``(AutoConfig of --model, local_files_only)``; a missing folder, a folder without
    ``config.json`` or a hub id that cannot be fetched (nor found in the cache) is an
    InputError naming ``--model``, in one line."""
    from transformers import AutoConfig

    offline = False
    if looks_local(path):
        folder = Path(path).expanduser()
        if not folder.exists():
            raise InputError("--model", f"no such folder {path!r}")
        if folder.is_dir() and not (folder / "config.json").is_file():
            raise InputError("--model", f"{path!r} has no config.json (a checkpoint folder holds config.json and "
                                        "its weights)")
    else:
        offline = not hub_reachable()
    try:
        return AutoConfig.from_pretrained(path, local_files_only=offline), offline
    except (OSError, ValueError) as error:
        where = ("" if looks_local(path) else " (not a local folder; the hub is not reachable and it is not in the "
                 "cache)" if offline else " (not a local folder, and not found on the hub)")
        raise InputError("--model", f"cannot load {path!r}{where}: {str(error).strip().splitlines()[0]}") from None


def load_image(path: str):
    from PIL import Image

    try:
        return Image.open(path).convert("RGB")
    except (FileNotFoundError, OSError) as error:
        raise InputError("--image", f"cannot read {path!r}: {error}") from None


def load_frames(path: str, frames: int) -> np.ndarray:
    """``frames`` frames sampled evenly from a folder of images (sorted by name) or a
    ``.npy`` array ``(T, H, W, 3)`` of uint8; returns ``(frames, H, W, 3)`` uint8."""
    from PIL import Image

    source = Path(path)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
        if not files:
            raise InputError("--video", f"folder {path!r} holds no frame images ({', '.join(FRAME_SUFFIXES)})")
        if len(files) < frames:
            raise InputError("--video", f"folder {path!r} holds {len(files)} frames; the model takes {frames}")
        picked = np.linspace(0, len(files) - 1, frames).round().astype(int)
        try:
            images = [np.asarray(Image.open(files[i]).convert("RGB")) for i in picked]
        except OSError as error:
            raise InputError("--video", f"cannot read a frame in {path!r}: {error}") from None
        if len({image.shape for image in images}) > 1:
            raise InputError("--video", f"frames in {path!r} differ in size")
        return np.stack(images)
    if source.suffix == ".npy" and source.is_file():
        array = _load_npy(path)
        if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
            raise InputError("--video", f"{path!r} must hold a uint8 array (frames, height, width, 3), "
                             f"got {array.dtype} {tuple(array.shape)}")
        if array.shape[0] < frames:
            raise InputError("--video", f"{path!r} holds {array.shape[0]} frames; the model takes {frames}")
        return array[np.linspace(0, array.shape[0] - 1, frames).round().astype(int)]
    raise InputError("--video", f"{path!r} is neither a folder of frame images nor a .npy file")


def _load_npy(path: str) -> np.ndarray:
    """The array of a ``.npy`` file; one numpy cannot read (cut off, corrupt, an object
    array, an ``.npz`` archive) is an :class:`InputError` naming ``--video`` and the file."""
    try:
        array = np.load(path, allow_pickle=False)  # unpickling a file can run code: never
    except (ValueError, OSError, EOFError) as error:
        reason = (str(error).strip() or type(error).__name__).splitlines()[0]
        raise InputError("--video", f"{path!r}: cannot read it as a .npy array ({reason})") from None
    if not isinstance(array, np.ndarray):  # np.load opens an .npz archive whatever the file's name
        array.close()
        raise InputError("--video", f"{path!r}: an .npz archive, not a .npy array")
    return array


def video_frames(config) -> int:
    """Frames per video the model expects: Video-LLaVA's ``video_seq_length`` over its
    tokens per frame; 8 (the common default) for models without a fixed count."""
    length = getattr(config, "video_seq_length", None)
    vision = getattr(config, "vision_config", None)
    if length and vision is not None and getattr(vision, "image_size", None):
        return length // ((vision.image_size // vision.patch_size) ** 2 + 1)
    return 8


def check_frames(config, frames: int | None) -> int:
    """``frames`` (or the model's default), refused where the model takes a fixed count."""
    expected = video_frames(config)
    if frames is None:
        return expected
    if getattr(config, "video_seq_length", None) and frames != expected:
        raise InputError("--frames", f"this model takes {expected} frames per video, got {frames}")
    return frames


def format_prompt(processor, prompt: str, image: bool, video: bool) -> str:
    """The model's chat format around one user turn with its media, then the answer cue."""
    media = [{"type": "image"}] * image + [{"type": "video"}] * video
    if getattr(processor, "chat_template", None):
        conversation = [{"role": "user", "content": [*media, {"type": "text", "text": prompt}]}]
        return processor.apply_chat_template(conversation, add_generation_prompt=True)
    return LLAVA_PROMPT.format(media="\n".join(["<image>"] * image + ["<video>"] * video), prompt=prompt)


class FrameProcessor:
    """Video-LLaVA's processor without torchvision: the tokenizer and the image
    processor; a video is encoded as its frames (see the module docstring)."""

    chat_template = None

    def __init__(self, tokenizer, image_processor, config) -> None:
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.image_tokens = config.image_seq_length
        self.video_tokens = config.video_seq_length

    def _pixels(self, images) -> "torch.Tensor":  # noqa: F821
        out = self.image_processor(images=images, return_tensors="pt")
        return out["pixel_values"] if "pixel_values" in out else out["pixel_values_images"]

    def __call__(self, text: str, images=None, videos=None, return_tensors: str = "pt"):
        from transformers import BatchFeature

        text = text.replace("<image>", "<image>" * self.image_tokens).replace("<video>", "<video>" * self.video_tokens)
        data = dict(self.tokenizer(text, return_tensors=return_tensors))
        if images is not None:
            from .models.video_llava import image_input_key

            data[image_input_key()] = self._pixels(images)
        if videos is not None:
            data["pixel_values_videos"] = self._pixels(list(videos[0]))[None]
        return BatchFeature(data)

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)


def load_processor(path: str, config, local_files_only: bool = False):
    """``AutoProcessor``; for Video-LLaVA without torchvision, :class:`FrameProcessor`."""
    from transformers import AutoProcessor
    from transformers.utils import is_torchvision_available

    try:
        if getattr(config, "video_seq_length", None) and not is_torchvision_available():
            from transformers import AutoImageProcessor, AutoTokenizer

            return FrameProcessor(AutoTokenizer.from_pretrained(path, local_files_only=local_files_only),
                                  AutoImageProcessor.from_pretrained(path, local_files_only=local_files_only), config)
        return AutoProcessor.from_pretrained(path, local_files_only=local_files_only)
    except (ImportError, AttributeError) as error:
        if is_torchvision_available():
            raise
        reason = str(error).strip().splitlines()[0]
        raise InputError("--model", f"this model's processor needs torchvision ({reason}); pip install torchvision"
                         ) from None


def load_model(path: str | None, device: str, dtype="auto", attn: str = "sdpa"):
    """``(model, processor)`` of ``--model``: a checkpoint folder or hub id, or the shipped
    shapes-llava when ``path`` is None (float32 when ``dtype`` is "auto"). A model that
    cannot be loaded is an :class:`InputError` naming ``--model``."""
    import torch

    if path is None:
        from .zoo.shapes_llava import load_shapes_llava

        try:
            return load_shapes_llava(device=device, dtype=torch.float32 if dtype == "auto" else dtype,
                                     attn_implementation=attn)
        except FileNotFoundError as error:
            raise InputError("--model", str(error)) from None
    from transformers import AutoModelForImageTextToText

    config, offline = load_config(path)
    processor = load_processor(path, config, local_files_only=offline)
    try:
        model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype, attn_implementation=attn,
                                                            local_files_only=offline)
    except ValueError as error:  # not an image-text model, or an attention backend it lacks
        raise InputError("--model", f"cannot load {path!r}: {str(error).strip().splitlines()[0]}") from None
    return model.to(device).eval(), processor
