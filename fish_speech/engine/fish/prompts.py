"""The prompt of each text chunk: the voice references, then the previous chunk's text and
codes as context when they fit, then the chunk's text.

The context is what keeps one voice across a long text: the model continues the speaker it
just heard, and without a reference the first chunk's (seeded) voice becomes the reference
of the next. Only the previous chunk is carried, so a prompt never grows with the text.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import Tensor

from fish_speech.models.text2semantic import PromptTooLongError, Text2Semantic

# Room kept for generating a chunk after a prompt with context: about as many frames as the
# previous chunk made (chunks are of similar length), twice over, and a margin.
CONTEXT_ROOM_FACTOR = 2
CONTEXT_ROOM_MARGIN = 64


class ContextPrompts:
    def __init__(
        self,
        t2s: Text2Semantic,
        chunks: Sequence[str],
        reference_texts: Sequence[str],
        reference_codes: Sequence[np.ndarray],
        max_new_tokens: int,
    ) -> None:
        self.t2s = t2s
        self.chunks = list(chunks)
        self.reference_texts = list(reference_texts)
        self.reference_codes = list(reference_codes)
        self.max_new_tokens = max_new_tokens
        # Refuse now, not mid-request, a chunk whose prompt cannot fit even without context.
        for chunk in self.chunks:
            self._fit(self._build(chunk, None))

    def __len__(self) -> int:
        return len(self.chunks)

    def prompt(self, index: int, previous: Tensor | None) -> Tensor:
        chunk = self.chunks[index]
        if index > 0 and previous is not None and previous.shape[1] > 0:
            try:
                prompt = self._build(chunk, (self.chunks[index - 1], previous))
            except PromptTooLongError:
                prompt = None
            room = CONTEXT_ROOM_FACTOR * previous.shape[1] + CONTEXT_ROOM_MARGIN
            if self.max_new_tokens > 0:
                room = min(room, self.max_new_tokens)
            if prompt is not None and prompt.shape[1] + room <= self.t2s.max_seq_len:
                return prompt
        return self._fit(self._build(chunk, None))

    def _build(self, chunk: str, context: tuple[str, Tensor] | None) -> Tensor:
        texts, codes = self.reference_texts, self.reference_codes
        if context is not None:
            texts = [*texts, context[0]]
            codes = [*codes, context[1].cpu().numpy()]
        return self.t2s.build_prompt(chunk, texts, codes)

    def _fit(self, prompt: Tensor) -> Tensor:
        if prompt.shape[1] >= self.t2s.max_seq_len:
            raise ValueError(
                f"prompt length {prompt.shape[1]} does not fit the context of "
                f"{self.t2s.max_seq_len} positions (--max-seq-len)"
            )
        return prompt
