"""Fish's tiktoken tokenizer: byte-level BPE ranks, Fish's pre-tokenization regex, and the
special tokens (including one per semantic code) numbered after the BPE vocabulary."""

from __future__ import annotations

import base64
import json
import logging
import re
from pathlib import Path

import tiktoken

from .config import CheckpointError

logger = logging.getLogger(__name__)

# Fish's pattern, not cl100k/Qwen's. Note alternative 7: `\?!` is a literal "?!", not a
# look-ahead, so whitespace runs are taken whole by the last alternative.
FISH_PATTERN = "|".join(
    [
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)",
        r"\p{P}",
        r"[^\r\n\p{L}\p{N}]?\p{L}+",
        r"\p{N}",
        r" ?[^\s\p{L}\p{N}]+[\r\n]*",
        r"\s*[\r\n]+",
        r"\s+(\?!\S)",
        r"\s+",
    ]
)
# The original encodes long inputs in slices of this many characters.
MAX_ENCODE_CHARS = 400_000

IM_END_TOKEN = "<|im_end|>"
INTERLEAVE_TOKEN = "<|interleave|>"
_SEMANTIC_RE = re.compile(r"<\|semantic:(\d+)\|>")

# Used when a checkpoint folder has no special_tokens.json (order defines the ids).
DEFAULT_SPECIAL_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|pad|>",
    "<|im_start|>",
    IM_END_TOKEN,
    "<|phoneme_start|>",
    "<|phoneme_end|>",
    "<|tool_call_start|>",
    "<|tool_call_end|>",
    "<|text|>",
    "<|voice|>",
    INTERLEAVE_TOKEN,
    "<|audio_start|>",
    "<|audio_end|>",
    "<|audio|>",
    *(f"<|semantic:{i}|>" for i in range(4096)),
]


def read_ranks(path: Path) -> dict[bytes, int]:
    """Parse ``base64(token) rank`` lines; ``=`` (empty bytes) lines are skipped."""
    ranks: dict[bytes, int] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        token, rank = line.split()
        if token == "=":
            continue
        ranks[base64.b64decode(token)] = int(rank)
    return ranks


class FishTokenizer:
    def __init__(self, ranks: dict[bytes, int], special_tokens: list[str]) -> None:
        # The ids stored in special_tokens.json are ignored, as in the original: the id of a
        # special token is len(ranks) + its position.
        first = len(ranks)
        self.special_ids = {token: first + i for i, token in enumerate(special_tokens)}
        semantic = {
            int(m.group(1)): token_id
            for token, token_id in self.special_ids.items()
            if (m := _SEMANTIC_RE.fullmatch(token))
        }
        if 0 not in semantic:
            raise CheckpointError("special tokens: no <|semantic:0|> token")
        self.semantic_begin_id = semantic[0]
        self.semantic_end_id = semantic[max(semantic)]
        if self.semantic_end_id - self.semantic_begin_id != len(semantic) - 1:
            raise CheckpointError("special tokens: <|semantic:k|> ids are not contiguous")
        self.num_semantic = len(semantic)
        self.im_end_id = self.special_ids[IM_END_TOKEN]
        self.vocab_size = first + len(special_tokens)
        self._encoding = tiktoken.Encoding(
            name="fish",
            pat_str=FISH_PATTERN,
            mergeable_ranks=ranks,
            special_tokens=self.special_ids,
        )

    @classmethod
    def from_dir(cls, checkpoint_dir: str | Path) -> FishTokenizer:
        folder = Path(checkpoint_dir)
        ranks_path = folder / "tokenizer.tiktoken"
        if not ranks_path.is_file():
            raise CheckpointError(f"tokenizer file missing: {ranks_path}")
        try:
            ranks = read_ranks(ranks_path)
        except (ValueError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{ranks_path}: unreadable tokenizer ({e})") from e
        specials_path = folder / "special_tokens.json"
        if specials_path.is_file():
            specials = list(json.loads(specials_path.read_text(encoding="utf-8")))
        else:
            logger.warning("%s missing; using the built-in special token list", specials_path)
            specials = DEFAULT_SPECIAL_TOKENS
        return cls(ranks, specials)

    def encode(self, text: str, allowed_special: bool = True) -> list[int]:
        """BPE ids of ``text``; with ``allowed_special`` every special string becomes its id,
        otherwise it is encoded as plain text. Nothing is added (no BOS/EOS)."""
        allowed = "all" if allowed_special else set()
        ids: list[int] = []
        for start in range(0, len(text), MAX_ENCODE_CHARS):
            chunk = text[start : start + MAX_ENCODE_CHARS]
            ids.extend(self._encoding.encode(chunk, allowed_special=allowed, disallowed_special=()))
        return ids

    def decode(self, ids: list[int]) -> str:
        return self._encoding.decode(ids)

    def token_id(self, token: str) -> int:
        return self.special_ids[token]
