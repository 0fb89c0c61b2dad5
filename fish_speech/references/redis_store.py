"""The shared voice library: one Redis for every server instance (``--redis-url``).

A voice is one hash (``fish_speech:voice:<id>``: the uploaded audio, its extension, the
transcript and the engine's prepared prompt) plus its id in the set of voices. Add, rename
and delete are each one Lua script, so every instance sees the change at once and whole;
nothing is cached per instance, so a deleted or renamed id is gone everywhere at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fish_speech.references.base import (
    ReferenceExists,
    ReferenceNotFound,
    StoredSample,
    check_id,
    check_new_voice,
    check_rename,
)
from fish_speech.storage.redis_client import PREFIX, unavailable_on_error

VOICES = PREFIX + "voices"

# KEYS: voice. ARGV: id, audio, extension, text. Returns 0 if the id is taken.
_ADD = f"""
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'audio', ARGV[2], 'extension', ARGV[3], 'text', ARGV[4])
redis.call('SADD', '{VOICES}', ARGV[1])
return 1
"""

# KEYS: voice. ARGV: id.
_DELETE = f"""
if redis.call('DEL', KEYS[1]) == 0 then return 0 end
redis.call('SREM', '{VOICES}', ARGV[1])
return 1
"""

# KEYS: old voice, new voice. ARGV: old id, new id. Returns 1, or -1 (no old), -2 (new taken).
_RENAME = f"""
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('EXISTS', KEYS[2]) == 1 then return -2 end
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('SREM', '{VOICES}', ARGV[1])
redis.call('SADD', '{VOICES}', ARGV[2])
return 1
"""

# KEYS: voice. ARGV: prompt record. Kept only while the voice still exists.
_SAVE_PROMPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'prompt', ARGV[1]) end
"""


def _voice_key(reference_id: str) -> str:
    return PREFIX + "voice:" + check_id(reference_id)


class RedisPrompt:
    """The prepared prompt of a voice, in its hash with the key it was made for (a prompt
    made for other audio or text is never returned; see ``StoredPrompt``)."""

    def __init__(self, store: RedisReferenceStore, voice_key: str) -> None:
        self.store = store
        self.voice_key = voice_key

    def load(self, key: str) -> bytes | None:
        with self.store._redis():
            record = self.store.client.hget(self.voice_key, "prompt")
        if record is None:
            return None
        stored_key, newline, data = record.partition(b"\n")
        return data if newline and stored_key == key.encode() else None

    def save(self, key: str, data: bytes) -> None:
        # After a rename the prompt stays with the voice; after a delete it is dropped.
        with self.store._redis():
            self.store._save_prompt(keys=[self.voice_key], args=[key.encode() + b"\n" + data])


class RedisReferenceStore:
    def __init__(self, client: Any, max_seconds: float | None = None) -> None:
        self.client = client
        self.max_seconds = max_seconds  # longest audio a new voice may have
        self._add = client.register_script(_ADD)
        self._delete = client.register_script(_DELETE)
        self._rename = client.register_script(_RENAME)
        self._save_prompt = client.register_script(_SAVE_PROMPT)

    @contextmanager
    def _redis(self) -> Iterator[None]:
        with unavailable_on_error(self.client):
            yield

    def add(self, reference_id: str, audio: bytes, text: str) -> None:
        key = _voice_key(reference_id)
        extension = check_new_voice(audio, text, self.max_seconds)
        with self._redis():
            added = self._add(keys=[key], args=[reference_id, audio, extension, text])
        if not added:
            raise ReferenceExists(f"Reference ID '{reference_id}' already exists")

    def list_ids(self) -> list[str]:
        with self._redis():
            return sorted(member.decode() for member in self.client.smembers(VOICES))

    def delete(self, reference_id: str) -> None:
        key = _voice_key(reference_id)
        with self._redis():
            deleted = self._delete(keys=[key], args=[reference_id])
        if not deleted:
            raise ReferenceNotFound(f"Reference ID '{reference_id}' not found")

    def rename(self, old_id: str, new_id: str) -> None:
        check_rename(old_id, new_id)
        with self._redis():
            outcome = self._rename(
                keys=[_voice_key(old_id), _voice_key(new_id)], args=[old_id, new_id]
            )
        if outcome == -1:
            raise ReferenceNotFound(f"Reference ID '{old_id}' not found")
        if outcome == -2:
            raise ReferenceExists(f"Reference ID '{new_id}' already exists")

    def samples(self, reference_id: str) -> list[StoredSample]:
        key = _voice_key(reference_id)
        with self._redis():
            audio, text = self.client.hmget(key, "audio", "text")
        if audio is None:
            raise ReferenceNotFound(f"Reference ID '{reference_id}' not found")
        return [StoredSample(audio, text.decode().strip(), RedisPrompt(self, key))]
