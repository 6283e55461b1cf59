/** The audio routes, relative to /v1: a track's mix and a scene's soundscape. */
const AUDIO_PATH = /^\/(audio\/tracks|soundscapes)\/([^/?#]+)\/audio$/;

/** Which audio a path under /v1 names, or null when it is not an audio route. */
export function parseAudioPath(path: string): { kind: 'track' | 'soundscape'; id: string } | null {
  const match = AUDIO_PATH.exec(path);
  if (!match) return null;
  return { kind: match[1] === 'audio/tracks' ? 'track' : 'soundscape', id: match[2]! };
}
