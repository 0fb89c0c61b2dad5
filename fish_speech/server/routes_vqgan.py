"""/v1/vqgan/encode|decode: the codec exposed directly (503 until one is loaded)."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, HTTPException, Request, Response
from starlette.concurrency import run_in_threadpool

from fish_speech.audio.io import decode_each
from fish_speech.server.http import body_schema, negotiated, parse_body
from fish_speech.server.state import get_state
from fish_speech.utils.schema import (
    ServeVQGANDecodeRequest,
    ServeVQGANDecodeResponse,
    ServeVQGANEncodeRequest,
    ServeVQGANEncodeResponse,
)

router = APIRouter(prefix="/v1/vqgan", tags=["vqgan"])


def check_token_grid(index: int, grid: list[list[int]], codebook_sizes: list[int]) -> np.ndarray:
    """A rectangular (num_codebooks, frames) grid with every code in its codebook's range."""
    where = f"tokens[{index}]"
    if len(grid) != len(codebook_sizes):
        raise HTTPException(
            400, f"{where}: expected {len(codebook_sizes)} codebook rows, got {len(grid)}"
        )
    lengths = {len(row) for row in grid}
    if len(lengths) != 1:
        raise HTTPException(400, f"{where}: rows have different lengths {sorted(lengths)}")
    if lengths == {0}:
        raise HTTPException(400, f"{where}: no frames")
    codes = np.asarray(grid, dtype=np.int64)
    for row, size in enumerate(codebook_sizes):
        low, high = codes[row].min(), codes[row].max()
        if low < 0 or high >= size:
            raise HTTPException(
                400, f"{where}: row {row} holds codes outside [0, {size}) (min {low}, max {high})"
            )
    return codes


@router.post(
    "/encode",
    response_model=ServeVQGANEncodeResponse,
    openapi_extra=body_schema(ServeVQGANEncodeRequest),
)
async def encode(request: Request) -> Response:
    state = get_state(request)
    codec = state.require_codec()
    req = await parse_body(request, ServeVQGANEncodeRequest)
    if not req.audios:
        raise HTTPException(400, "audios is empty")
    # Encoding is how reference prompts are made: the same limits as for references.
    limit = state.config.max_references
    if len(req.audios) > limit:
        raise HTTPException(400, f"audios: {len(req.audios)} given, the limit is {limit}")
    seconds = state.config.max_reference_seconds
    decoded = await run_in_threadpool(decode_each, req.audios, "audios", seconds)
    clips = [(clip.samples, clip.sample_rate) for clip in decoded]
    codes = await state.service.run(lambda: codec.encode_batch(clips))
    return negotiated(request, ServeVQGANEncodeResponse(tokens=[c.tolist() for c in codes]))


@router.post(
    "/decode",
    response_model=ServeVQGANDecodeResponse,
    openapi_extra=body_schema(ServeVQGANDecodeRequest),
)
async def decode(request: Request) -> Response:
    state = get_state(request)
    codec = state.require_codec()
    req = await parse_body(request, ServeVQGANDecodeRequest)
    if not req.tokens:
        raise HTTPException(400, "tokens is empty")
    grids = [check_token_grid(i, g, list(codec.codebook_sizes)) for i, g in enumerate(req.tokens)]
    audios = await state.service.run(lambda: codec.decode_batch(grids))
    # float16 little-endian PCM at the codec's rate, as the original returns it
    pcm = [np.asarray(a, dtype="<f2").tobytes() for a in audios]
    return negotiated(request, ServeVQGANDecodeResponse(audios=pcm))
