// Reading a provider's audio answer into memory, up to a limit. Read whole, a broken proxy or
// a misbehaving model that streams gigabytes with a 200 would take the worker's memory with
// it (each of its jobs at once), and the job would then be retried into the same end.

// The limit is PROVIDER_MAX_AUDIO_BYTES: 256 MiB unless set, over four times the longest voice
// a section makes (20,000 characters, about 25 minutes of MP3) and ten minutes of 48 kHz
// stereo 32-bit WAV from a soundscape model.

/**
 * The body of `response`, or the error `tooLarge` makes when it has more than `maxBytes`: at
 * once when its Content-Length says so, else as soon as the bytes read pass the limit (the
 * rest is not read).
 */
export async function readAudioBody(response: Response, maxBytes: number, tooLarge: (message: string) => Error): Promise<Buffer> {
  const over = (size: string) => tooLarge(`the answer has ${size} bytes, more than the ${maxBytes} an audio answer may have`);
  const declared = Number(response.headers.get('content-length') ?? NaN);
  if (declared > maxBytes) {
    await response.body?.cancel().catch(() => {});
    throw over(String(declared));
  }
  if (!response.body) return Buffer.alloc(0);
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      await reader.cancel().catch(() => {});
      throw over(`over ${maxBytes}`);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks, total);
}
