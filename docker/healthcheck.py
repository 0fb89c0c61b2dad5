"""Container health check: /v1/health answers 200 (with the API key, when one is set)."""

import os
import sys
import urllib.request

key = os.environ.get("FISH_SPEECH_API_KEY")
request = urllib.request.Request(
    "http://127.0.0.1:8080/v1/health",
    headers={"Authorization": f"Bearer {key}"} if key else {},
)
try:
    with urllib.request.urlopen(request, timeout=4) as response:
        sys.exit(0 if response.status == 200 else 1)
except OSError:
    sys.exit(1)
