#!/bin/sh
# Listens on every interface of the container; FISH_SPEECH_API_KEY, when set, becomes
# --api-key. Arguments given to the container are passed on as server flags.
set -eu
if [ -n "${FISH_SPEECH_API_KEY:-}" ]; then
    set -- --api-key "$FISH_SPEECH_API_KEY" "$@"
fi
exec fish-speech-server --listen 0.0.0.0:8080 "$@"
