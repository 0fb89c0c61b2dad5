// The web page: speak, manage voices, follow background tasks, see the engine's limits.
import { api, apiJson, apiKey, postJson, whenUnauthorized } from "./api.js";
import {
  MEDIA_TYPES,
  Mp3StreamPlayer,
  PcmStreamPlayer,
  concatBytes,
  finalizeStreamedWav,
  pcm16ToWav,
  recordingToWav,
} from "./audio.js";

const $ = (id) => document.getElementById(id);
const FALLBACK_FORMATS = ["wav", "mp3", "pcm"];
const BYTES_PER_SECOND = { wav: 88200, pcm: 88200, mp3: 16000 }; // mp3: 128 kbit/s
const TASK_POLL_ACTIVE_MS = 1000;
const TASK_POLL_IDLE_MS = 5000;

function element(tag, props = {}, children = []) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

function setStatus(node, text, isError = false) {
  node.textContent = text;
  node.classList.toggle("error", isError);
}

// ---------------------------------------------------------------- API key

let waitingForKey = false;

function openKeyDialog(reason) {
  const dialog = $("key-dialog");
  if (reason) $("key-reason").textContent = reason;
  $("key-dialog-input").value = apiKey.get();
  if (!dialog.open) dialog.showModal();
}

whenUnauthorized(() => {
  if (waitingForKey) return;
  waitingForKey = true;
  openKeyDialog(
    apiKey.get()
      ? "The server refused the stored API key. Enter the right one."
      : "This server needs its API key. It is kept in this browser only.",
  );
});

$("key-button").addEventListener("click", () => openKeyDialog());
$("key-dialog").addEventListener("close", () => {
  const choice = $("key-dialog").returnValue;
  if (choice === "save") apiKey.set($("key-dialog-input").value.trim());
  if (choice === "forget") apiKey.clear();
  if (choice === "save" || choice === "forget") {
    waitingForKey = false;
    refreshAll();
  }
  showKeyState();
});

function showKeyState() {
  $("key-button").textContent = apiKey.get() ? "API key ✓" : "API key";
}

// ---------------------------------------------------------------- engine

async function refreshEngine() {
  const health = await apiJson("v1/health");
  const caps = health.capabilities || {};
  $("engine-badge").textContent = health.engine || "unknown engine";
  const facts = $("engine-facts");
  facts.replaceChildren();
  const rows = [
    ["Engine", health.engine],
    ["Voice match", caps.voice_match],
    ["Streaming", caps.streaming === undefined ? undefined : caps.streaming ? "yes" : "no"],
    ["Sample rate", caps.sample_rate && `${caps.sample_rate} Hz`],
    ["Languages", caps.languages && caps.languages.join(", ")],
    ["Device", caps.device],
    ["Checkpoint", caps.checkpoint],
  ];
  for (const [name, value] of rows) {
    if (value === undefined || value === null) continue;
    facts.append(element("dt", { textContent: name }), element("dd", { textContent: value }));
  }
  const limitations = caps.limitations || [];
  $("engine-limitations").replaceChildren(
    ...limitations.map((text) => element("li", { textContent: text })),
  );
  const ignored = limitations.find((text) => /temperature|top_p/.test(text));
  $("sampling-note").hidden = !ignored;
  $("sampling-note").textContent = ignored ? `This engine: ${ignored}` : "";
}

async function refreshFormats() {
  let formats = FALLBACK_FORMATS;
  try {
    // The formats the server accepts, from its own OpenAPI document.
    const spec = await apiJson("openapi.json");
    formats = spec.components.schemas.ServeTTSRequest.properties.format.enum || formats;
  } catch {
    // keep the fallback
  }
  const select = $("format");
  const chosen = select.value || "wav";
  select.replaceChildren(...formats.map((f) => element("option", { value: f, textContent: f })));
  select.value = formats.includes(chosen) ? chosen : formats[0];
}

// ---------------------------------------------------------------- speak

let current = null; // the synthesis in progress: { controller, player }

function numberField(id) {
  return Number($(id).value);
}

function buildRequest() {
  const seed = $("seed").value.trim();
  return {
    text: $("text").value,
    format: $("format").value,
    streaming: $("streaming").checked,
    reference_id: $("voice").value || null,
    temperature: numberField("temperature"),
    top_p: numberField("top_p"),
    repetition_penalty: numberField("repetition_penalty"),
    chunk_length: Math.round(numberField("chunk_length")),
    max_new_tokens: Math.round(numberField("max_new_tokens")),
    seed: seed === "" ? null : Math.round(Number(seed)),
    normalize: $("normalize").checked,
    use_memory_cache: $("use_memory_cache").checked ? "on" : "off",
  };
}

async function streamPlayer(format, streaming) {
  if (!streaming) return null;
  if (format === "wav") return new PcmStreamPlayer(44);
  if (format === "pcm") return new PcmStreamPlayer(0);
  if (format === "mp3" && Mp3StreamPlayer.supported()) {
    const player = new Mp3StreamPlayer($("audio"));
    await player.open();
    return player;
  }
  return null; // other formats play once complete
}

function showResult(format, streaming, bytes, player) {
  let file = new Blob([bytes], { type: MEDIA_TYPES[format] || "application/octet-stream" });
  let playable = file;
  if (format === "wav" && streaming) {
    file = new Blob([finalizeStreamedWav(bytes)], { type: "audio/wav" });
    playable = file;
  } else if (format === "pcm") {
    playable = pcm16ToWav(bytes);
  }
  const download = $("download");
  URL.revokeObjectURL(download.href);
  download.href = URL.createObjectURL(file);
  download.download = `speech.${format}`;
  download.hidden = false;
  const audio = $("audio");
  if (player instanceof Mp3StreamPlayer) {
    audio.dataset.source = "media-source";
    return;
  }
  audio.src = URL.createObjectURL(playable);
  audio.dataset.source = "file";
  if (!player) audio.play().catch(() => {}); // streamed audio has already been heard
}

function stopSpeaking() {
  if (!current) return;
  current.controller.abort();
  current.player?.stop();
  current = null;
}

async function speak(event) {
  event.preventDefault();
  stopSpeaking();
  const request = buildRequest();
  const status = $("speak-status");
  const controller = new AbortController();
  const job = { controller, player: null };
  current = job;
  $("speak-button").disabled = true;
  $("stop-button").disabled = false;
  $("download").hidden = true;
  const audio = $("audio");
  audio.removeAttribute("src");
  delete audio.dataset.source;
  setStatus(status, "Speaking…");
  const started = performance.now();
  const seconds = () => ((performance.now() - started) / 1000).toFixed(2);
  try {
    job.player = await streamPlayer(request.format, request.streaming);
    const response = await postJson("v1/tts", request, { signal: controller.signal });
    const reader = response.body.getReader();
    const chunks = [];
    let received = 0;
    let firstAudio = null;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      firstAudio ??= seconds();
      chunks.push(value);
      received += value.length;
      job.player?.push(value);
      const audioSeconds = received / (BYTES_PER_SECOND[request.format] || 88200);
      setStatus(
        status,
        `First audio after ${firstAudio} s · received ${(received / 1024).toFixed(0)} kB ` +
          `(≈${audioSeconds.toFixed(1)} s of audio)`,
      );
    }
    job.player?.finish();
    showResult(request.format, request.streaming, concatBytes(chunks), job.player);
    $("player").dataset.streamedSeconds = String(job.player?.seconds ?? 0);
    setStatus(status, `${status.textContent} · done in ${seconds()} s`);
  } catch (error) {
    job.player?.stop();
    if (error.name === "AbortError") setStatus(status, "Stopped.");
    else setStatus(status, `Failed: ${error.message}`, true);
  } finally {
    if (current === job) current = null;
    $("speak-button").disabled = false;
    $("stop-button").disabled = true;
  }
}

$("speak-form").addEventListener("submit", speak);
$("stop-button").addEventListener("click", () => {
  stopSpeaking();
  $("stop-button").disabled = true;
});

// ---------------------------------------------------------------- voices

async function refreshVoices() {
  const body = await apiJson("v1/references/list?format=json");
  const ids = body.reference_ids;
  const select = $("voice");
  const chosen = select.value;
  select.replaceChildren(select.options[0], ...ids.map((id) => element("option", { value: id, textContent: id })));
  select.value = ids.includes(chosen) ? chosen : "";
  $("voice-list").replaceChildren(...ids.map(voiceRow));
  $("voice-empty").hidden = ids.length > 0;
}

function voiceRow(id) {
  const row = element("li", { className: "voice" });
  row.dataset.voice = id;
  const show = () => {
    const rename = element("button", { type: "button", className: "secondary", textContent: "Rename" });
    const remove = element("button", { type: "button", className: "danger", textContent: "Delete" });
    rename.addEventListener("click", edit);
    remove.addEventListener("click", () => deleteVoice(id));
    row.replaceChildren(element("span", { className: "name", textContent: id }), rename, remove);
  };
  const edit = () => {
    const input = element("input", { value: id, className: "rename-input", maxLength: 255 });
    const save = element("button", { type: "button", textContent: "Save" });
    const cancel = element("button", { type: "button", className: "secondary", textContent: "Cancel" });
    save.addEventListener("click", () => renameVoice(id, input.value.trim()));
    cancel.addEventListener("click", show);
    row.replaceChildren(input, save, cancel);
    input.focus();
  };
  show();
  return row;
}

async function renameVoice(oldId, newId) {
  const status = $("voice-status");
  try {
    await postJson("v1/references/update", { old_reference_id: oldId, new_reference_id: newId });
    setStatus(status, `Renamed “${oldId}” to “${newId}”.`);
  } catch (error) {
    setStatus(status, `Rename failed: ${error.message}`, true);
  }
  await refreshVoices();
}

async function deleteVoice(id) {
  if (!confirm(`Delete the voice “${id}”?`)) return;
  const status = $("voice-status");
  try {
    await postJson("v1/references/delete", { reference_id: id }, { method: "DELETE" });
    setStatus(status, `Deleted “${id}”.`);
  } catch (error) {
    setStatus(status, `Delete failed: ${error.message}`, true);
  }
  await refreshVoices();
}

let recorder = null;
let recordedWav = null;

async function toggleRecording() {
  const status = $("voice-status");
  if (recorder) {
    recorder.stop();
    return;
  }
  if (!navigator.mediaDevices?.getUserMedia || !window.MediaRecorder) {
    setStatus(status, "This browser cannot record here (it needs https or localhost).", true);
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (error) {
    setStatus(status, `No microphone: ${error.message}`, true);
    return;
  }
  const chunks = [];
  recorder = new MediaRecorder(stream);
  recorder.addEventListener("dataavailable", (event) => chunks.push(event.data));
  recorder.addEventListener("stop", async () => {
    stream.getTracks().forEach((track) => track.stop());
    const recorded = new Blob(chunks, { type: recorder.mimeType });
    recorder = null;
    $("record-button").textContent = "Record again";
    try {
      recordedWav = await recordingToWav(recorded);
      $("voice-file").value = "";
      const preview = $("recording");
      preview.src = URL.createObjectURL(recordedWav);
      preview.hidden = false;
      setStatus(status, `Recorded ${(recordedWav.size / 1024).toFixed(0)} kB (converted to WAV).`);
    } catch (error) {
      setStatus(status, `Could not read the recording: ${error.message}`, true);
    }
  });
  recorder.start();
  $("record-button").textContent = "Stop recording";
  setStatus(status, "Recording… read the transcript aloud, then press Stop recording.");
}

async function addVoice(event) {
  event.preventDefault();
  const status = $("voice-status");
  const file = $("voice-file").files[0];
  const audio = file || recordedWav;
  if (!audio) {
    setStatus(status, "Choose an audio file or record one first.", true);
    return;
  }
  const id = $("voice-id").value.trim();
  const form = new FormData();
  form.append("id", id);
  form.append("text", $("voice-text").value.trim());
  form.append("audio", audio, file ? file.name : "recording.wav");
  try {
    await api("v1/references/add?format=json", { method: "POST", body: form });
    setStatus(status, `Added “${id}”.`);
    $("voice-form").reset();
    recordedWav = null;
    $("recording").hidden = true;
    await refreshVoices();
  } catch (error) {
    setStatus(status, `Adding failed: ${error.message}`, true);
  }
}

$("record-button").addEventListener("click", toggleRecording);
$("voice-file").addEventListener("change", () => {
  recordedWav = null;
  $("recording").hidden = true;
});
$("voice-form").addEventListener("submit", addVoice);

// ---------------------------------------------------------------- tasks

let taskTimer = null;

async function runAsTask() {
  const request = buildRequest();
  delete request.streaming;
  request.step_id = `web-${Date.now().toString(36)}`;
  const status = $("speak-status");
  try {
    await postJson("generate_audio_enhanced_async", request);
    setStatus(status, `Task ${request.step_id} queued.`);
  } catch (error) {
    setStatus(status, `Task failed to start: ${error.message}`, true);
  }
  await refreshTasks();
}

function taskRow(task) {
  const row = element("tr");
  row.dataset.task = task.step_id;
  row.dataset.status = task.status;
  const percent = Math.round(task.progress * 100);
  const bar = element("progress", { max: 1, value: task.progress });
  const status = element("span", { className: `state ${task.status}`, textContent: task.status });
  if (task.error) status.title = task.error;
  const actions = element("td", { className: "actions" });
  if (task.download_url) {
    const download = element("button", { type: "button", textContent: "Download" });
    download.addEventListener("click", () => downloadTask(task));
    actions.append(download);
  }
  if (task.status === "pending" || task.status === "processing") {
    const cancel = element("button", { type: "button", className: "danger", textContent: "Cancel" });
    cancel.addEventListener("click", () => cancelTask(task.step_id));
    actions.append(cancel);
  }
  row.append(
    element("td", { textContent: task.step_id }),
    element("td", { className: "preview", textContent: task.text }),
    element("td", {}, [status]),
    element("td", { className: "progress" }, [bar, ` ${percent}%`]),
    actions,
  );
  return row;
}

async function refreshTasks() {
  clearTimeout(taskTimer);
  let active = false;
  try {
    const body = await apiJson("v1/tasks?limit=50");
    $("task-rows").replaceChildren(...body.tasks.map(taskRow));
    $("task-empty").hidden = body.tasks.length > 0;
    active = body.tasks.some((t) => t.status === "pending" || t.status === "processing");
  } finally {
    if (!waitingForKey) {
      taskTimer = setTimeout(
        () => refreshTasks().catch(() => {}),
        active ? TASK_POLL_ACTIVE_MS : TASK_POLL_IDLE_MS,
      );
    }
  }
}

async function downloadTask(task) {
  const response = await api(task.download_url.replace(/^\//, ""));
  const link = element("a", {
    href: URL.createObjectURL(await response.blob()),
    download: `${task.step_id}.${task.format}`,
  });
  document.body.append(link);
  link.click();
  link.remove();
}

async function cancelTask(stepId) {
  await api(`stop_async_task/${encodeURIComponent(stepId)}`, { method: "POST" });
  await refreshTasks();
}

$("task-button").addEventListener("click", () => runAsTask());

// ---------------------------------------------------------------- start

async function refreshAll() {
  showKeyState();
  const results = await Promise.allSettled([
    refreshEngine(),
    refreshFormats(),
    refreshVoices(),
    refreshTasks(),
  ]);
  const failed = results.find((r) => r.status === "rejected" && r.reason?.status !== 401);
  if (failed) setStatus($("speak-status"), `Could not load: ${failed.reason.message}`, true);
  document.body.dataset.ready = "true";
}

refreshAll();
