import type { StreamEvent } from './event-hub';

// Events carry the state their transition committed, with the row's version, but reach the
// log in the order their workers publish: a worker that committed first can publish second,
// and its older counters would follow newer ones. A stream keeps the highest version it has
// sent for each row (the batch or book itself, and each track) and drops a lower one.
// Events without a version (spreads, soundscapes: each has one transition per run) pass.

/** Which row an event's state belongs to, and its version; null for an event with no version. */
function rowOf(data: Record<string, unknown>): { row: string; version: number } | null {
  if (typeof data.version !== 'number') return null;
  return { row: typeof data.trackId === 'string' ? `track:${data.trackId}` : 'subject', version: data.version };
}

export interface RowVersions {
  /** Notes the versions of a state the client has (a snapshot, or events it already had). */
  saw(data: Record<string, unknown>): void;
  /** True when the event's state is older than one the client already has. */
  isStale(event: StreamEvent): boolean;
}

export function rowVersions(): RowVersions {
  const newest = new Map<string, number>();
  const note = (row: string, version: number) => {
    if (version > (newest.get(row) ?? 0)) newest.set(row, version);
  };
  return {
    saw(data) {
      const state = rowOf(data);
      if (state) note(state.row, state.version);
      // A batch's snapshot holds its tracks, each with its own version.
      if (Array.isArray(data.tracks)) {
        for (const track of data.tracks as { id?: unknown; version?: unknown }[]) {
          if (typeof track.id === 'string' && typeof track.version === 'number') note(`track:${track.id}`, track.version);
        }
      }
    },
    isStale(event) {
      const state = rowOf(event.data);
      if (!state) return false;
      if (state.version < (newest.get(state.row) ?? 0)) return true;
      note(state.row, state.version);
      return false;
    },
  };
}
