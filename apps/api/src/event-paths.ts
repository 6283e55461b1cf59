/** The event-stream routes, relative to /v1: a batch's and a book's. */
const EVENT_STREAM_PATH = /^\/(audio\/batches|books)\/[^/?#]+\/events$/;

/** Whether a path under /v1 is an event stream (where stream tokens are good). */
export function isEventStreamPath(path: string): boolean {
  return EVENT_STREAM_PATH.test(path);
}
