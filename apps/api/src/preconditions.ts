import type { IncomingHttpHeaders } from 'node:http';

/** What a stored file's conditional requests are compared with. */
export interface Validators {
  etag: string;
  modifiedAt: Date;
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
// The three forms RFC 9110 §5.6.7 has a recipient accept: IMF-fixdate, then the obsolete RFC 850
// and asctime forms. Date.parse is not used: it takes "2020" or "tomorrow 5pm"-like strings a
// client did not mean as HTTP dates, and reads asctime (which has no zone) as local time.
const IMF_FIXDATE = /^[A-Z][a-z]{2}, (\d{2}) ([A-Z][a-z]{2}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT$/;
const RFC_850 = /^[A-Z][a-z]+, (\d{2})-([A-Z][a-z]{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2}) GMT$/;
const ASCTIME = /^[A-Z][a-z]{2} ([A-Z][a-z]{2}) ([ \d]\d) (\d{2}):(\d{2}):(\d{2}) (\d{4})$/;

/** An HTTP-date as milliseconds since the epoch, or null when the value is not one. */
export function parseHttpDate(value: string | undefined): number | null {
  if (!value) return null;
  let parts: [day: string, month: string, year: number, h: string, m: string, s: string] | null = null;
  let match: RegExpExecArray | null;
  if ((match = IMF_FIXDATE.exec(value))) parts = [match[1]!, match[2]!, Number(match[3]), match[4]!, match[5]!, match[6]!];
  else if ((match = RFC_850.exec(value))) {
    // A two-digit year more than 50 years ahead is in the past century (RFC 9110 §5.6.7).
    const yy = Number(match[3]);
    const thisYear = new Date().getUTCFullYear();
    let year = Math.floor(thisYear / 100) * 100 + yy;
    if (year > thisYear + 50) year -= 100;
    parts = [match[1]!, match[2]!, year, match[4]!, match[5]!, match[6]!];
  } else if ((match = ASCTIME.exec(value))) parts = [match[2]!.trim(), match[1]!, Number(match[6]), match[3]!, match[4]!, match[5]!];
  if (!parts) return null;
  const [day, month, year, h, m, s] = parts;
  const monthIndex = MONTHS.indexOf(month);
  if (monthIndex < 0) return null;
  const ms = Date.UTC(year, monthIndex, Number(day), Number(h), Number(m), Number(s));
  // A date that rolls over (February 30th, 25:00) is not a date.
  const back = new Date(ms);
  if (back.getUTCDate() !== Number(day) || back.getUTCHours() !== Number(h) || back.getUTCMinutes() !== Number(m) || back.getUTCSeconds() !== Number(s)) return null;
  return ms;
}

const isWeak = (tag: string) => tag.startsWith('W/');
const tagsOf = (header: string) => header.split(',').map((tag) => tag.trim()).filter(Boolean);

/** If-Match's comparison is strong (RFC 9110 §13.1.1): a weak tag, on either side, never matches. */
function anyStrongMatch(header: string, etag: string): boolean {
  if (header.trim() === '*') return true;
  return !isWeak(etag) && tagsOf(header).some((tag) => !isWeak(tag) && tag === etag);
}

/**
 * Whether an If-None-Match header matches the ETag: `*`, or any entity tag of its list,
 * compared weakly as RFC 9110 asks for If-None-Match (a proxy may have weakened the tag).
 */
export function noneMatch(header: string | undefined, etag: string): boolean {
  if (!header) return false;
  if (header.trim() === '*') return true;
  const opaque = (tag: string) => tag.trim().replace(/^W\//, '');
  return header.split(',').some((tag) => opaque(tag) === opaque(etag));
}

// Last-Modified is sent in whole seconds: a date the client copied from it is compared so.
const seconds = (date: Date) => Math.floor(date.getTime() / 1000) * 1000;

/**
 * A GET's or HEAD's preconditions on a file that exists, in RFC 9110 §13.2.2's order: If-Match
 * (else If-Unmodified-Since) false is a 412; If-None-Match (else If-Modified-Since) false is a
 * 304. Each field is evaluated only when the one before it in its pair was not sent, and a
 * date that is not an HTTP-date is ignored. Null: serve the file (Range and If-Range next).
 */
export function evaluatePreconditions(headers: IncomingHttpHeaders, file: Validators): 'precondition_failed' | 'not_modified' | null {
  // An empty field names no tag at all: not sent, as an empty If-None-Match is.
  const ifMatch = headers['if-match']?.trim() || undefined;
  if (ifMatch !== undefined) {
    if (!anyStrongMatch(ifMatch, file.etag)) return 'precondition_failed';
  } else {
    const unmodifiedSince = parseHttpDate(headers['if-unmodified-since']);
    if (unmodifiedSince !== null && seconds(file.modifiedAt) > unmodifiedSince) return 'precondition_failed';
  }
  const ifNoneMatch = headers['if-none-match']?.trim() || undefined;
  if (ifNoneMatch !== undefined) {
    if (noneMatch(ifNoneMatch, file.etag)) return 'not_modified';
  } else {
    const modifiedSince = parseHttpDate(headers['if-modified-since']);
    if (modifiedSince !== null && seconds(file.modifiedAt) <= modifiedSince) return 'not_modified';
  }
  return null;
}

/**
 * Whether a Range may be served under the request's If-Range (true when there is none), as
 * RFC 9110 §13.1.5 has it: an entity tag holds when it is the file's current one, compared
 * strongly; an HTTP-date holds when it is exactly the file's Last-Modified and that date is a
 * strong validator, which §8.8.2.2 allows once the second it names is over (the file cannot
 * change again within it unseen). Anything else gets the whole file, always a correct answer.
 */
export function ifRangeHolds(header: string | string[] | undefined, file: Validators, now = Date.now()): boolean {
  if (header === undefined) return true;
  if (typeof header !== 'string') return false;
  const value = header.trim();
  if (value.startsWith('"') || isWeak(value)) return !isWeak(file.etag) && value === file.etag;
  const date = parseHttpDate(value);
  return date !== null && date === seconds(file.modifiedAt) && now >= date + 1_000;
}
