// Audio checks shared by tests.

/**
 * How loud the step from the last sample to the first is, against the steps around it: a
 * click is one step far larger than its neighbours. Returns, per channel, the seam step over
 * the largest step within 50 ms either side of the seam (below 1.5 means no click).
 */
export function seamRatios(pcm: Int16Array, channels: number): number[] {
  const frames = pcm.length / channels;
  const window = 2205;
  return Array.from({ length: channels }, (_, c) => {
    const at = (i: number) => pcm[((i + frames) % frames) * channels + c]!;
    const seam = Math.abs(at(0) - at(-1));
    let largest = 1;
    for (let i = -window; i < window; i += 1) {
      if (i === 0) continue;
      largest = Math.max(largest, Math.abs(at(i) - at(i - 1)));
    }
    return seam / largest;
  });
}
