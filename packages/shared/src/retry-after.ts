// A provider's Retry-After header (RFC 9110 §10.2.3): delay-seconds (digits only) or an
// HTTP-date. Anything else, a blank value included, counts as no header at all: the job then
// backs off as after any other retryable failure. Read leniently (Number, Date.parse), a
// blank was 0 s, "-5" was 0 s and "x 1" a date in 2001, so 0 s too: a pause of a
// millisecond, and the job asked the provider again at once, RATE_LIMIT_MAX_RESTARTS times.

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const MONTH = MONTHS.join('|');
const TIME = '(\\d{2}):(\\d{2}):(\\d{2})';

// Recipients must take all three forms of HTTP-date (RFC 9110 §5.6.7), always in GMT.
/** IMF-fixdate, the one senders use: "Sun, 06 Nov 1994 08:49:37 GMT". */
const IMF_FIXDATE = new RegExp(`^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\\d{2}) (${MONTH}) (\\d{4}) ${TIME} GMT$`);
/** Obsolete RFC 850 form: "Sunday, 06-Nov-94 08:49:37 GMT". */
const RFC_850 = new RegExp(`^(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), (\\d{2})-(${MONTH})-(\\d{2}) ${TIME} GMT$`);
/** ANSI C asctime() form, in GMT though it does not say so: "Sun Nov  6 08:49:37 1994". */
const ASCTIME = new RegExp(`^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (${MONTH}) ([ \\d]\\d) ${TIME} (\\d{4})$`);

/** Seconds to wait from `now`, or undefined when the value is neither form (then: no header). */
export function parseRetryAfter(value: string | null | undefined, now = Date.now()): number | undefined {
  const text = (value ?? '').trim();
  if (/^\d+$/.test(text)) return Number(text);
  const date = parseHttpDate(text, now);
  return date === undefined ? undefined : Math.max(0, Math.ceil((date - now) / 1000));
}

function parseHttpDate(text: string, now: number): number | undefined {
  let fields: { year: number; month: string; day: number; time: string[] };
  let m: RegExpExecArray | null;
  if ((m = IMF_FIXDATE.exec(text))) fields = { year: Number(m[3]), month: m[2]!, day: Number(m[1]), time: m.slice(4, 7) };
  else if ((m = RFC_850.exec(text))) fields = { year: fullYear(Number(m[3]), now), month: m[2]!, day: Number(m[1]), time: m.slice(4, 7) };
  else if ((m = ASCTIME.exec(text))) fields = { year: Number(m[6]), month: m[1]!, day: Number(m[2]!.trim()), time: m.slice(3, 6) };
  else return undefined;
  const [hours, minutes, seconds] = fields.time.map(Number) as [number, number, number];
  const month = MONTHS.indexOf(fields.month);
  const date = new Date(Date.UTC(fields.year, month, fields.day, hours, minutes, seconds));
  // Date.UTC rolls 31 Feb over into March and 25:00 into the next day: a date that does not
  // exist is no date, as much as one that does not parse.
  const exists =
    date.getUTCFullYear() === fields.year && date.getUTCMonth() === month && date.getUTCDate() === fields.day &&
    date.getUTCHours() === hours && date.getUTCMinutes() === minutes && date.getUTCSeconds() === seconds;
  return exists ? date.getTime() : undefined;
}

/** RFC 850's two-digit year: a year more than 50 years ahead is the latest past one with those digits. */
function fullYear(twoDigits: number, now: number): number {
  const thisYear = new Date(now).getUTCFullYear();
  const year = Math.floor(thisYear / 100) * 100 + twoDigits;
  return year > thisYear + 50 ? year - 100 : year;
}
