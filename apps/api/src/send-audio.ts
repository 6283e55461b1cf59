import type { Request, Response } from 'express';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Storage } from '@soundqueue/shared/storage/index';
import { HttpError } from './http-errors';
import { evaluatePreconditions, ifRangeHolds } from './preconditions';

/**
 * Parses a single-range `Range: bytes=...` header against a size. Returns null for "no
 * usable range" (serve the whole file, as RFC 9110 has a server do for several ranges and for
 * a range it cannot parse, such as `bytes=5-2`), or 'unsatisfiable' for a 416.
 */
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | null | 'unsatisfiable' {
  if (!header) return null;
  // The range unit is case-insensitive (RFC 9110 §14.1).
  const match = /^bytes=(\d*)-(\d*)$/i.exec(header.trim());
  if (!match) return null;
  const [, from, to] = match;
  if (from === '' && to === '') return null;
  if (from === '') {
    const suffix = Number(to);
    if (suffix === 0) return 'unsatisfiable';
    // An empty file has no byte range to name (Content-Range would say 0--1): RFC 9110 §14.1.1
    // counts a suffix range satisfiable there, so the (empty) whole file is the answer.
    if (size === 0) return null;
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(from);
  // A last position before the first is not a range at all (RFC 9110 §14.1.1: invalid).
  if (to !== '' && Number(to) < start) return null;
  if (start >= size) return 'unsatisfiable';
  return { start, end: to === '' ? size - 1 : Math.min(Number(to), size - 1) };
}

const isMissing = (error: unknown) => (error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT';

export interface SendAudioOptions {
  /** A response whose client has read nothing for this long is ended (AUDIO_IDLE_TIMEOUT_MS). */
  idleTimeoutMs: number;
}

/** Streams a stored audio file with ETag, conditional GET (304 / 412) and HTTP Range (206 / 416). */
export async function sendStoredAudio(
  req: Request,
  res: Response,
  storage: Storage,
  key: string,
  filename: string,
  options: SendAudioOptions,
): Promise<void> {
  const object = await storage.stat(key);
  if (!object) throw new HttpError(404, 'not_found', 'audio file not found');
  res.setHeader('Accept-Ranges', 'bytes');
  const validators = () => {
    res.setHeader('ETag', object.etag);
    res.setHeader('Last-Modified', object.modifiedAt.toUTCString());
    res.setHeader('Cache-Control', 'private, max-age=3600');
  };
  const precondition = evaluatePreconditions(req.headers, object);
  if (precondition === 'precondition_failed') {
    throw new HttpError(412, 'precondition_failed', 'the audio file does not match If-Match or If-Unmodified-Since (it was replaced, or is not the one named)');
  }
  if (precondition === 'not_modified') {
    validators();
    res.status(304).end();
    return;
  }
  // A Range with a stale If-Range (tag or date) gets the whole (new) file. Range is defined for GET only: a
  // HEAD is answered as the whole file's GET would be (RFC 9110 §14.2 has a server ignore it).
  const range = req.method === 'GET' && ifRangeHolds(req.headers['if-range'], object) ? parseRange(req.headers.range, object.size) : null;
  if (range === 'unsatisfiable') {
    // The error body is JSON: none of the audio's headers (type, cache, file name) go with it.
    res.setHeader('Content-Range', `bytes */${object.size}`);
    throw new HttpError(416, 'range_not_satisfiable', `range ${req.headers.range} is outside the file's ${object.size} bytes`);
  }
  // Opened before any of the audio's headers are set: an object deleted since stat() is a
  // plain 404, not a 500 (or a cut connection) dressed as audio.
  let stream: Readable | undefined;
  if (req.method !== 'HEAD') {
    try {
      stream = await storage.read(key, range ?? undefined);
    } catch (error) {
      if (isMissing(error)) throw new HttpError(404, 'not_found', 'audio file not found');
      throw error;
    }
  }
  validators();
  res.setHeader('Content-Disposition', `inline; filename="${filename}"`);
  res.setHeader('Content-Type', 'audio/mpeg');
  if (range) {
    res.status(206);
    res.setHeader('Content-Range', `bytes ${range.start}-${range.end}/${object.size}`);
    res.setHeader('Content-Length', String(range.end - range.start + 1));
  } else {
    res.setHeader('Content-Length', String(object.size));
  }
  if (!stream) {
    res.end();
    return;
  }
  const socket = res.socket;
  // A paused <audio> stops reading but keeps its connection open, for as long as the page
  // stays open; its response would hold the stored object's stream (with S3, a socket from
  // the client's bounded pool) all that time, and enough paused players starve every other
  // request. A socket whose writes have made no progress for the idle timeout is ended: that
  // destroys the stream and releases its socket, and the player resumes with a Range request.
  res.setTimeout(options.idleTimeoutMs, () => res.destroy());
  try {
    await pipeline(stream, res);
  } catch (error) {
    // A player that seeks or stops closes its connection mid-file (or sat idle and was ended
    // above): pipeline has closed the stored object's stream, and there is no one left to answer.
    if ((error as NodeJS.ErrnoException).code === 'ERR_STREAM_PREMATURE_CLOSE' && res.destroyed) return;
    throw error;
  } finally {
    // A finished response needs nothing here: Node has already replaced the idle timeout with
    // its keep-alive timeout (server.keepAliveTimeout), and clears that when the connection's
    // next request comes. Clearing the socket's timeout after that (as this did) cleared the
    // keep-alive one, and an idle client kept the connection for ever. Only a response that
    // did not finish on a connection still open would keep the idle timeout into the next
    // request (the connection may carry further requests, which have no such limit).
    if (!res.writableFinished && socket && !socket.destroyed) socket.setTimeout(0);
  }
}
