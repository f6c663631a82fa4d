"""The student model: a T5-family sequence-to-sequence model by name or local folder, or the offline `tiny` one.

`tiny` needs no file and no network: `ByT5Tokenizer()` is a byte-level tokenizer defined by code (256 bytes plus
special tokens), and the model is a small T5 built from a `T5Config` with seeded random weights. A local folder
(a downloaded t5-base, or a checkpoint this trainer wrote) is loaded with `local_files_only=True`, so no code
path reaches the hub; only a bare hub name may (and then only if it is not in the local cache).

torch and transformers are imported inside these functions: the CLI and the rest of the pipeline never need them.
"""

from __future__ import annotations

from pathlib import Path

from stepwise.pipeline.errors import MissingExtraError, TrainerError
from stepwise.pipeline.trainer.config import TINY

MISSING = ("the student trainer needs the train extra (torch, transformers, matplotlib): "
           "pip install 'stepwise-distill[train]'")

# big enough to learn the corpus's surface form in a few hundred CPU steps, small enough for a test suite
TINY_SHAPE = {"d_model": 64, "d_kv": 16, "d_ff": 256, "num_layers": 2, "num_decoder_layers": 2, "num_heads": 4,
              "relative_attention_num_buckets": 32, "dropout_rate": 0.0}


def import_train_deps():
    """(torch, transformers), or MissingExtraError naming the extra."""
    try:
        import torch
        import transformers
    except ImportError:
        raise MissingExtraError(MISSING) from None
    transformers.logging.set_verbosity_error()  # our own log says what happens; no hub or weight-loading chatter
    transformers.utils.logging.disable_progress_bar()
    return torch, transformers


def tiny_model(seed: int):
    """(model, tokenizer) of the offline tiny configuration, initialised from `seed`."""
    torch, transformers = import_train_deps()
    tokenizer = transformers.ByT5Tokenizer()
    config = transformers.T5Config(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id, **TINY_SHAPE)
    torch.manual_seed(seed)
    return transformers.T5ForConditionalGeneration(config), tokenizer


def is_local(name: str) -> bool:
    return Path(name).expanduser().is_dir()


def load_model(name: str, seed: int = 0):
    """(model, tokenizer) for `tiny`, a local folder (never the network) or a hub name."""
    if name == TINY:
        return tiny_model(seed)
    torch, transformers = import_train_deps()
    local = is_local(name)
    where = str(Path(name).expanduser()) if local else name
    torch.manual_seed(seed)  # any freshly initialised head is seeded too
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(where, local_files_only=local)
        model = transformers.AutoModelForSeq2SeqLM.from_pretrained(where, local_files_only=local)
    except (OSError, ValueError) as exc:
        how = "from the local folder" if local else "by name (a local folder is never downloaded)"
        raise TrainerError(f"cannot load the model {name!r} {how}: {exc}") from None
    if not getattr(model.config, "is_encoder_decoder", False):
        raise TrainerError(f"{name!r} is not a sequence-to-sequence (T5-family) model")
    return model, tokenizer


def pick_device(wanted: str) -> tuple[str, str]:
    """(device, precision): auto is cuda with bf16 autocast when a GPU is there (fp32 if it lacks bf16),
    else cpu with fp32."""
    torch, _ = import_train_deps()
    has_cuda = torch.cuda.is_available()
    if wanted == "cuda" and not has_cuda:
        raise TrainerError("--device cuda: torch sees no CUDA GPU (is this the CPU build of torch?)")
    if wanted == "cpu" or not has_cuda:
        return "cpu", "fp32"
    return "cuda", "bf16" if torch.cuda.is_bf16_supported() else "fp32"
