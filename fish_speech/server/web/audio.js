// Audio in the browser: WAV files from samples, and two players for streamed speech.
//
// What a browser can play while the bytes still arrive: MP3 through Media Source
// Extensions on the <audio> element (Chromium, Firefox, Edge), and raw 16-bit PCM (the
// server's streamed wav and pcm) scheduled chunk by chunk through Web Audio (everywhere).

export const SAMPLE_RATE = 44100; // every engine of this server answers at 44.1 kHz
const WAV_HEADER_BYTES = 44;

export const MEDIA_TYPES = {
  wav: "audio/wav",
  mp3: "audio/mpeg",
  pcm: "application/octet-stream",
  flac: "audio/flac",
  opus: "audio/ogg",
};

export function concatBytes(chunks) {
  const total = chunks.reduce((sum, chunk) => sum + chunk.length, 0);
  const out = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

function wavHeader(dataBytes, sampleRate) {
  const header = new DataView(new ArrayBuffer(WAV_HEADER_BYTES));
  const text = (at, s) => [...s].forEach((c, i) => header.setUint8(at + i, c.charCodeAt(0)));
  text(0, "RIFF");
  header.setUint32(4, 36 + dataBytes, true);
  text(8, "WAVEfmt ");
  header.setUint32(16, 16, true); // fmt chunk size
  header.setUint16(20, 1, true); // PCM
  header.setUint16(22, 1, true); // mono
  header.setUint32(24, sampleRate, true);
  header.setUint32(28, sampleRate * 2, true); // bytes per second
  header.setUint16(32, 2, true); // bytes per frame
  header.setUint16(34, 16, true); // bits per sample
  text(36, "data");
  header.setUint32(40, dataBytes, true);
  return new Uint8Array(header.buffer);
}

/** A WAV file around raw 16-bit little-endian mono samples. */
export function pcm16ToWav(pcm, sampleRate = SAMPLE_RATE) {
  return new Blob([wavHeader(pcm.length, sampleRate), pcm], { type: "audio/wav" });
}

/** A streamed WAV is sent with open-ended sizes; write the real ones into the saved copy. */
export function finalizeStreamedWav(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  view.setUint32(4, bytes.length - 8, true);
  view.setUint32(40, bytes.length - WAV_HEADER_BYTES, true);
  return bytes;
}

export function floatToWav(samples, sampleRate) {
  const pcm = new DataView(new ArrayBuffer(samples.length * 2));
  samples.forEach((value, i) => {
    const clipped = Math.max(-1, Math.min(1, value));
    pcm.setInt16(i * 2, Math.round(clipped * 32767), true);
  });
  return pcm16ToWav(new Uint8Array(pcm.buffer), sampleRate);
}

/**
 * A microphone recording (WebM/Opus in Chromium, Ogg/Opus in Firefox, MP4/AAC in Safari)
 * as a mono WAV: the server's decoder (libsndfile) reads WAV but not WebM or MP4.
 */
export async function recordingToWav(blob) {
  const decoder = new OfflineAudioContext(1, 1, SAMPLE_RATE);
  const buffer = await decoder.decodeAudioData(await blob.arrayBuffer());
  const mono = new Float32Array(buffer.length);
  for (let channel = 0; channel < buffer.numberOfChannels; channel++) {
    const data = buffer.getChannelData(channel);
    for (let i = 0; i < data.length; i++) mono[i] += data[i] / buffer.numberOfChannels;
  }
  return floatToWav(mono, buffer.sampleRate);
}

/** Plays streamed 16-bit PCM (after an optional WAV header) gaplessly through Web Audio. */
export class PcmStreamPlayer {
  constructor(headerBytes) {
    this.context = new AudioContext();
    this.skip = headerBytes;
    this.carry = new Uint8Array(0); // an odd byte left over from the previous chunk
    this.nextStart = 0;
    this.seconds = 0; // audio scheduled so far
    this.sources = new Set();
  }

  push(chunk) {
    let bytes = chunk;
    if (this.skip > 0) {
      const skipped = Math.min(this.skip, bytes.length);
      this.skip -= skipped;
      bytes = bytes.subarray(skipped);
    }
    if (this.carry.length) bytes = concatBytes([this.carry, bytes]);
    const usable = bytes.length - (bytes.length % 2);
    this.carry = bytes.slice(usable);
    if (usable === 0) return;
    const count = usable / 2;
    const view = new DataView(bytes.buffer, bytes.byteOffset, usable);
    const buffer = this.context.createBuffer(1, count, SAMPLE_RATE);
    const data = buffer.getChannelData(0);
    for (let i = 0; i < count; i++) data[i] = view.getInt16(i * 2, true) / 32768;
    const source = this.context.createBufferSource();
    source.buffer = buffer;
    source.connect(this.context.destination);
    // A small lead keeps the first chunk from starting in the past (and clicking).
    const start = Math.max(this.nextStart, this.context.currentTime + 0.05);
    source.start(start);
    source.addEventListener("ended", () => this.sources.delete(source));
    this.sources.add(source);
    this.nextStart = start + buffer.duration;
    this.seconds += buffer.duration;
  }

  finish() {}

  stop() {
    for (const source of this.sources) source.stop();
    this.sources.clear();
    this.context.close();
  }
}

/** Plays a streamed MP3 on an <audio> element through Media Source Extensions. */
export class Mp3StreamPlayer {
  static supported() {
    return "MediaSource" in window && MediaSource.isTypeSupported("audio/mpeg");
  }

  constructor(audio) {
    this.audio = audio;
    this.pending = [];
    this.ended = false;
    this.started = false;
  }

  open() {
    this.source = new MediaSource();
    this.audio.src = URL.createObjectURL(this.source);
    return new Promise((resolve) => {
      this.source.addEventListener(
        "sourceopen",
        () => {
          this.buffer = this.source.addSourceBuffer("audio/mpeg");
          this.buffer.addEventListener("updateend", () => this.pump());
          resolve();
        },
        { once: true },
      );
    });
  }

  push(chunk) {
    this.pending.push(chunk);
    this.pump();
  }

  pump() {
    if (!this.buffer || this.buffer.updating || this.source.readyState !== "open") return;
    if (this.pending.length) {
      this.buffer.appendBuffer(concatBytes(this.pending.splice(0)));
      if (!this.started) {
        this.started = true;
        this.audio.play().catch(() => {}); // refused autoplay: the controls still work
      }
    } else if (this.ended) {
      this.source.endOfStream();
    }
  }

  finish() {
    this.ended = true;
    this.pump();
  }

  stop() {
    this.audio.pause();
    this.pending = [];
    this.ended = true;
  }
}
