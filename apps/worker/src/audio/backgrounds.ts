import type { BackgroundRecipe, BedLayer, Swell } from '@soundqueue/shared/variants';
import { parseEbur128Summary, runFfmpeg } from '../ffmpeg';

// Beds and soundscapes synthesized by ffmpeg's own sources (noise, sines, expressions): no
// audio assets to ship. Every layer is rendered as one seamless loop of L seconds, so a bed
// of any length is that loop repeated (cheap: a 7-minute mix generates 30 s of noise, not
// 7 minutes), and a soundscape is exactly one loop that a player can repeat without a click.
//
// Seamless, by kind of sound:
// - periodic layers (tones, chirps, drips) repeat a whole number of times per loop (their
//   frequencies and rates are snapped to it), so the loop's end runs straight into its start;
// - noise cannot be periodic, so noise layers render L + X seconds and the last X seconds
//   are crossfaded (equal power, as the two ends are uncorrelated) into the first X.

export const SAMPLE_RATE = 44_100;
// Expressions cost per sample, so expression layers are computed at the lowest rate their
// content needs and then resampled: chirps and drips stay under 7 kHz, crackle under 10 kHz.
const TONAL_RATE = 16_000;
const CRACKLE_RATE = 22_050;

/** Sharp decaying swells on a noise layer: thunder rolling in now and then. */
export interface Bursts {
  periodSeconds: number;
  decaySeconds: number;
  /** How far below its peak the layer sits between bursts. */
  depthDb: number;
  /** Where in the period the burst falls, 0-1. */
  phase?: number;
}

/** Raised-sine pulses multiplied together: `sharpness` narrows each pulse. */
export interface Pulse {
  rateHz: number;
  sharpness: number;
  phase?: number;
}

export type SynthLayer =
  | (Extract<BedLayer, { kind: 'noise' }> & { bursts?: Bursts })
  | Extract<BedLayer, { kind: 'tones' }>
  /** Sparse random clicks through a band-pass: fire crackle, rain drops on a surface. */
  | { kind: 'crackle'; perSecond: number; levelDb: number; highpassHz: number; lowpassHz: number }
  /** A sine swept around `carrierHz`, gated by pulses: birdsong, crickets. */
  | { kind: 'chirps'; carrierHz: number; sweepHz: number; sweepRateHz: number; pulses: readonly Pulse[]; levelDb: number }
  /** Decaying plinks at fixed periods, echoing: water dripping in a cave. */
  | { kind: 'drips'; pitchesHz: readonly number[]; periodsSeconds: readonly number[]; decayPerSecond: number; levelDb: number; echo: boolean };

export interface LoopOptions {
  /** Length of the loop; rounded to a whole sample. */
  loopSeconds: number;
  channels: 1 | 2;
  /** Noise seed: the same recipe and seed always sound the same (and measure the same). */
  seed?: number;
  /** Default 2 s, at most a quarter of the loop. */
  crossfadeSeconds?: number;
}

const f6 = (n: number) => Number(n.toFixed(6)).toString();

/** Nearest frequency with a whole number of cycles (at least one) in `loop` seconds. */
function snapHz(hz: number, loop: number): number {
  return Math.max(1, Math.round(hz * loop)) / loop;
}

/** A linear gain expression in time `t` for ffmpeg's expression evaluator. */
function envelope(levelDb: number, loop: number, swell: readonly Swell[] = [], bursts?: Bursts): string {
  // Swells add in dB: 0 at the crest, -depth in the trough.
  const db = [f6(levelDb), ...swell.map((s) => `${f6(s.depthDb / 2)}*(sin(2*PI*${f6(snapHz(1 / s.periodSeconds, loop))}*t)-1)`)];
  let gain = `pow(10,(${db.join('+')})/20)`;
  if (bursts) {
    const period = 1 / snapHz(1 / bursts.periodSeconds, loop);
    const age = `mod(t+${f6(period * (1 - (bursts.phase ?? 0)))},${f6(period)})`;
    const floor = 10 ** (-bursts.depthDb / 20);
    // A fast rise then an exponential fall, over a floor.
    gain += `*(${f6(floor)}+${f6(1 - floor)}*(1-exp(-${age}/0.2))*exp(-${age}/${f6(bursts.decaySeconds)}))`;
  }
  return gain;
}

function volume(levelDb: number, loop: number, swell?: readonly Swell[], bursts?: Bursts): string {
  if (!swell?.length && !bursts) return `volume=${f6(levelDb)}dB`;
  return `volume='${envelope(levelDb, loop, swell, bursts)}':eval=frame`;
}

function filters(layer: { highpassHz?: number; lowpassHz?: number }): string[] {
  const chain: string[] = [];
  if (layer.highpassHz) chain.push(`highpass=f=${f6(layer.highpassHz)}`);
  if (layer.lowpassHz) chain.push(`lowpass=f=${f6(layer.lowpassHz)}`);
  return chain;
}

const isNoiseLike = (layer: SynthLayer) => layer.kind === 'noise' || layer.kind === 'crackle';

/**
 * One layer as filtergraph text ending in `[out]`, `seconds` long. Sources emit 512-sample
 * frames so per-frame gain changes (swells) stay finer than the ear can hear as steps.
 */
function layerGraph(layer: SynthLayer, out: string, seconds: number, loop: number, channels: 1 | 2, seed: number, startAt: number): string {
  const d = f6(seconds);
  const rate = `r=${SAMPLE_RATE}`;
  const tail = (chain: string[]) => chain.filter(Boolean).join(',');
  switch (layer.kind) {
    case 'noise': {
      const chain = [...filters(layer), volume(layer.levelDb, loop, layer.swell, layer.bursts)];
      const source = (s: number) => `anoisesrc=${rate}:c=${layer.color}:a=0.5:d=${d}:seed=${s}:nb_samples=512`;
      if (channels === 1) return `${source(seed)},${tail(chain)}[${out}]`;
      // Independent noise per side is what makes rain or surf sound wide rather than central.
      return `${source(seed)}[${out}l];${source(seed + 7919)}[${out}r];[${out}l][${out}r]join=inputs=2:channel_layout=stereo,${tail(chain)}[${out}]`;
    }
    case 'crackle': {
      const p = f6(layer.perSecond / CRACKLE_RATE);
      // Each channel's expression keeps its own generator state; a different seed per side.
      const expr = (s: number) => `st(0,if(n,ld(0),${s}));if(lt(random(0),${p}),2*random(1)-1,0)`;
      const exprs = channels === 1 ? expr(seed) : `${expr(seed)}|${expr(seed + 7919)}`;
      return `aevalsrc='${exprs}':s=${CRACKLE_RATE}:d=${d}:n=512,${tail([...filters(layer), `aresample=${SAMPLE_RATE}`, volume(layer.levelDb, loop)])}[${out}]`;
    }
    case 'tones': {
      // ffmpeg's sine source (a lookup table) costs a fraction of an expression per sample.
      const sines = layer.frequenciesHz.map((hz, i) => `sine=f=${f6(snapHz(hz, loop))}:${rate}:d=${d}:samples_per_frame=512[${out}s${i}]`);
      const chain = tail([volume(layer.levelDb, loop, layer.swell), upmix(channels)]);
      return `${sines.join(';')};${sum(layer.frequenciesHz.map((_, i) => `${out}s${i}`), `${out}m`)};[${out}m]${chain}[${out}]`;
    }
    case 'chirps': {
      const sweepRate = snapHz(layer.sweepRateHz, loop);
      const tone = `sin(2*PI*${f6(snapHz(layer.carrierHz, loop))}*t+${f6(layer.sweepHz / sweepRate)}*sin(2*PI*${f6(sweepRate)}*t))`;
      const gates = layer.pulses.map(
        (p) => `pow(max(0,sin(2*PI*${f6(snapHz(p.rateHz, loop))}*t+${f6(2 * Math.PI * (p.phase ?? 0))})),${f6(p.sharpness)})`,
      );
      return `aevalsrc='0.25*${[tone, ...gates].join('*')}':s=${TONAL_RATE}:d=${d}:n=512,${tail([`aresample=${SAMPLE_RATE}`, volume(layer.levelDb, loop), upmix(channels)])}[${out}]`;
    }
    case 'drips': {
      const drips = layer.periodsSeconds.map((period, i) => {
        const p = 1 / snapHz(1 / period, loop);
        const hz = layer.pitchesHz[i % layer.pitchesHz.length] ?? 1000;
        // Trains are spread across their period and kept off the loop's first instant (the
        // loop starts `startAt` into the render), so no drip is cut in two at the seam.
        const offset = (((p * (i + 1)) / (layer.periodsSeconds.length + 1) - startAt) % p + p) % p;
        const age = `mod(t+${f6(offset)},${f6(p)})`;
        // Timed from each drip's start: a plink gliding up by a third over 50 ms, then ringing out.
        const phase = `2*PI*${f6(hz)}*(1.3*${age}-0.0075*(1-exp(-40*${age})))`;
        return `sin(${phase})*exp(-${age}*${f6(layer.decayPerSecond)})`;
      });
      const echo = layer.echo ? 'aecho=0.8:0.7:120|310:0.35|0.2' : '';
      return `aevalsrc='0.3*(${drips.join('+')})':s=${TONAL_RATE}:d=${d}:n=512,${tail([echo, `aresample=${SAMPLE_RATE}`, volume(layer.levelDb, loop), upmix(channels)])}[${out}]`;
    }
  }
}

function upmix(channels: 1 | 2): string {
  return channels === 2 ? 'pan=stereo|c0=c0|c1=c0' : '';
}

function sum(inputs: string[], out: string): string {
  if (inputs.length === 1) return `[${inputs[0]}]anull[${out}]`;
  return `${inputs.map((i) => `[${i}]`).join('')}amix=inputs=${inputs.length}:normalize=0[${out}]`;
}

/** Loop length as ffmpeg will render it: a whole number of samples. */
export function loopLength(seconds: number): number {
  return Math.round(seconds * SAMPLE_RATE) / SAMPLE_RATE;
}

/**
 * Filtergraph text (to use with -filter_complex) whose output `[out]` is exactly one loop of
 * `layers`, `loopSeconds` long, at 44.1 kHz, that repeats without a seam.
 */
export function loopGraph(layers: readonly SynthLayer[], out: string, options: LoopOptions): string {
  if (layers.length === 0) throw new Error('a loop needs at least one layer');
  const loop = loopLength(options.loopSeconds);
  const fade = Math.min(options.crossfadeSeconds ?? 2, loop / 4);
  // Echoes and filters need a moment to reach their steady state before the loop is cut.
  const warm = 2;
  const seed = options.seed ?? 1;
  const parts: string[] = [];
  const noise: string[] = [];
  const periodic: string[] = [];
  layers.forEach((layer, i) => {
    const label = `${out}_l${i}`;
    if (isNoiseLike(layer)) {
      parts.push(layerGraph(layer, label, loop + fade, loop, options.channels, seed + i * 101, fade));
      noise.push(label);
    } else {
      parts.push(layerGraph(layer, `${label}w`, warm + loop, loop, options.channels, seed + i * 101, warm));
      parts.push(`[${label}w]atrim=start=${f6(warm)}:end=${f6(warm + loop)},asetpts=PTS-STARTPTS[${label}]`);
      periodic.push(label);
    }
  });
  const groups: string[] = [];
  if (noise.length) {
    const n = `${out}_n`;
    parts.push(sum(noise, `${n}s`));
    // The tail (after the loop length) fades into the head, so the loop ends where it began.
    parts.push(`[${n}s]asplit=2[${n}a][${n}b]`);
    parts.push(`[${n}a]atrim=start=${f6(fade)}:end=${f6(loop + fade)},asetpts=PTS-STARTPTS[${n}body]`);
    parts.push(`[${n}b]atrim=end=${f6(fade)},asetpts=PTS-STARTPTS[${n}head]`);
    parts.push(`[${n}body][${n}head]acrossfade=d=${f6(fade)}:c1=qsin:c2=qsin[${n}]`);
    groups.push(n);
  }
  if (periodic.length) {
    parts.push(sum(periodic, `${out}_p`));
    groups.push(`${out}_p`);
  }
  parts.push(sum(groups, out));
  return parts.join(';');
}

// A bed under a voice repeats a loop this long: long enough that the noise never audibly
// repeats, short enough to cost little to render per mix.
export const BED_LOOP_SECONDS = 30;

/**
 * Graph text for a variant's bed at `gainDb`: mono, repeated for as long as the graph pulls on
 * `[out]` (the mix ends it when the voice ends). The gain is applied to the loop, before it
 * repeats, so it costs 30 seconds of work rather than the whole track's.
 */
export function bedGraph(recipe: BackgroundRecipe, gainDb: number, out: string): string {
  const samples = Math.round(BED_LOOP_SECONDS * SAMPLE_RATE);
  const loop = loopGraph(recipe.layers, `${out}_loop`, { loopSeconds: BED_LOOP_SECONDS, channels: 1 });
  return `${loop};[${out}_loop]volume=${f6(gainDb)}dB,aloop=loop=-1:size=${samples}[${out}]`;
}

export interface BedLevels {
  /** Integrated loudness of the mono loop at unity gain. */
  loudnessLufs: number;
  /** Its highest sample. */
  samplePeakDb: number;
  /**
   * Its momentary loudness (400 ms blocks) every 100 ms through the loop: what the mixer
   * needs to predict how R128's gating will treat the bed where it plays alone.
   */
  blockLufs: number[];
}

const measured = new Map<string, Promise<BedLevels>>();

/**
 * Loudness, peak and block loudness of one loop of a recipe's bed. A recipe renders the same
 * every time (fixed seeds), so it is measured once per process (about 50 ms) and the mixer
 * sets the bed's level from it arithmetically.
 */
export function measureBed(recipe: BackgroundRecipe): Promise<BedLevels> {
  const key = JSON.stringify(recipe);
  let cached = measured.get(key);
  if (!cached) {
    cached = (async () => {
      const graph = loopGraph(recipe.layers, 'bed', { loopSeconds: BED_LOOP_SECONDS, channels: 1 });
      const { stderr } = await runFfmpeg(['-nostats', '-filter_complex', `${graph};[bed]ebur128=peak=sample[m]`, '-map', '[m]', '-f', 'null', '-']);
      const summary = parseEbur128Summary(stderr);
      const blocks = [...stderr.matchAll(/\bt: *([\d.]+) .*?\bM: *(-?[\d.]+)/g)].map((m) => Number(m[2]));
      // The first 300 ms hold partial blocks; the loop's own continuation stands in for them.
      const blockLufs = blocks.length > 4 ? [...blocks.slice(3, 4), ...blocks.slice(3, 4), ...blocks.slice(3, 4), ...blocks.slice(3)] : [summary.integratedLufs];
      return { loudnessLufs: summary.integratedLufs, samplePeakDb: summary.peakDb ?? 0, blockLufs };
    })();
    // A failed measurement (a killed process) must not stay cached for the life of the worker.
    cached.catch(() => measured.delete(key));
    measured.set(key, cached);
  }
  return cached;
}
