"""The pieces every family's builders share: a locally written CLIP tokenizer (no download), CLIP ViT-L/14's text
tower, and seeded weights for modules built on the meta device."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch


def write_clip_tokenizer(directory: str | Path, words: list[str] = ()) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` of a byte-level CLIP BPE tokenizer into ``directory``.

    The vocabulary holds every byte symbol (alone and word-final), the two CLIP special tokens, and each word of
    ``words`` as one token (merges build it up from the left), so any text tokenizes and listed words stay short.
    """
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    symbols = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for token in symbols + [s + "</w>" for s in symbols]:
        vocab.setdefault(token, len(vocab))
    merges: list[str] = []
    for word in sorted({w.lower() for w in words if w}):
        chars = list(word[:-1]) + [word[-1] + "</w>"]
        prefix = chars[0]
        for nxt in chars[1:]:
            rule = f"{prefix} {nxt}"
            if rule not in merges:
                merges.append(rule)
            prefix += nxt
            vocab.setdefault(prefix, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab.setdefault(special, len(vocab))
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + ("\n" if merges else ""))
    return directory


def load_tokenizer(words: list[str] = (), max_length: int = 77):
    """A ``CLIPTokenizer`` (max length 77 as Stable Diffusion) from files written to a temporary directory."""
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        write_clip_tokenizer(tmp, words)
        return CLIPTokenizer(str(Path(tmp) / "vocab.json"), str(Path(tmp) / "merges.txt"),
                             model_max_length=max_length)


def fill_seeded(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Materialise a meta-device module on the CPU with seeded values: matrices and kernels ~ N(0, 1/fan-in),
    1-d parameters (biases, norm shifts) 0 except norm scales 1; buffers (e.g. position ids) are rebuilt by
    their modules' own code where it exists, else zero."""
    module.to_empty(device="cpu")
    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.dim() > 1:
                param.normal_(0.0, param[0].numel() ** -0.5, generator=generator)
            else:
                param.fill_(1.0 if name.endswith("weight") else 0.0)
        for sub in module.modules():
            if hasattr(sub, "position_ids") and isinstance(sub.position_ids, torch.Tensor):
                sub.position_ids.copy_(torch.arange(sub.position_ids.shape[-1]).expand_as(sub.position_ids))


def fill_all_seeded(modules, seed: int) -> None:
    """``fill_seeded`` over ``modules`` in order, from one generator seeded with ``seed`` (a builder's ``fast_init``)."""
    generator = torch.Generator().manual_seed(seed)
    for module in modules:
        fill_seeded(module, generator)


def clip_vit_l_text(tokenizer):
    """CLIP ViT-L/14's text tower at full size (SD 1.5's and FLUX.1's ``text_encoder``), initialised by its own code
    under the caller's seed, or empty under ``init_empty_weights``."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
        num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))  # fmt: skip
