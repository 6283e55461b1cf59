// The voice catalog: OpenAI's TTS voice names are the ids users pick and the ids stored in
// batch rows. The local provider has no such voices, so each maps to the closest of the
// flite voices ffmpeg ships with (kal16 and rms: American male; awb: Scottish male;
// slt: American female; kal: the 8 kHz kal16).

export type FliteVoice = 'kal' | 'kal16' | 'awb' | 'rms' | 'slt';

export interface Voice {
  id: string;
  label: string;
  description: string;
  fliteVoice: FliteVoice;
}

export const voices = [
  { id: 'alloy', label: 'Alloy', description: 'Neutral and balanced; an even, all-purpose narrator.', fliteVoice: 'slt' },
  { id: 'ash', label: 'Ash', description: 'Clear, steady male voice with a conversational warmth.', fliteVoice: 'rms' },
  { id: 'ballad', label: 'Ballad', description: 'Expressive, gentle male voice with a lilting delivery.', fliteVoice: 'awb' },
  { id: 'coral', label: 'Coral', description: 'Bright, friendly female voice.', fliteVoice: 'slt' },
  { id: 'echo', label: 'Echo', description: 'Calm, resonant male voice.', fliteVoice: 'kal16' },
  { id: 'fable', label: 'Fable', description: 'Storyteller with a British lilt.', fliteVoice: 'awb' },
  { id: 'nova', label: 'Nova', description: 'Energetic, youthful female voice.', fliteVoice: 'slt' },
  { id: 'onyx', label: 'Onyx', description: 'Deep, authoritative male voice.', fliteVoice: 'rms' },
  { id: 'sage', label: 'Sage', description: 'Soft-spoken, thoughtful female voice.', fliteVoice: 'slt' },
  { id: 'shimmer', label: 'Shimmer', description: 'Light, soothing female voice.', fliteVoice: 'slt' },
  { id: 'verse', label: 'Verse', description: 'Versatile, expressive male voice.', fliteVoice: 'kal16' },
] as const satisfies readonly Voice[];

export type VoiceId = (typeof voices)[number]['id'];

export const voiceIds: readonly VoiceId[] = voices.map((v) => v.id);

const byId = new Map<string, Voice>(voices.map((v) => [v.id, v]));

export function getVoice(id: string): Voice | undefined {
  return byId.get(id);
}
