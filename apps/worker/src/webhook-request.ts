import type { LookupAddress } from 'node:dns';
import { lookup as dnsLookup } from 'node:dns/promises';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { isIP, type LookupFunction } from 'node:net';
import { parseWebhookUrl, refuseInternalAddresses } from '@soundqueue/shared/webhooks';

/** All the addresses of a host name. Tests pass their own to play a rebinding DNS server. */
export type ResolveHost = (host: string) => Promise<LookupAddress[]>;
export const resolveHost: ResolveHost = (host) => dnsLookup(host, { all: true });

export interface WebhookRequest {
  url: string;
  headers: Record<string, string>;
  body: string;
  timeoutMs: number;
  allowPrivate: boolean;
  resolve?: ResolveHost;
}

/**
 * `refused`: the endpoint can never be delivered to (bad URL, or an internal address): not
 * worth retrying. Otherwise one attempt: `error` is null for a 2xx, else why it failed.
 */
export type WebhookOutcome = { refused: string } | { statusCode: number | null; error: string | null };

/**
 * POSTs one webhook delivery. The host name is resolved once, the addresses are checked
 * (unless WEBHOOK_ALLOW_PRIVATE), and the connection is made to exactly those addresses.
 * Checking a name and then letting the HTTP client resolve it again would let a DNS server
 * answer a public address to the check and 127.0.0.1 to the connection (DNS rebinding).
 * Redirects are never followed: the Location could point anywhere, checked or not.
 */
export async function sendWebhook(req: WebhookRequest): Promise<WebhookOutcome> {
  const url = parseWebhookUrl(req.url);
  if (typeof url === 'string') return { refused: url };
  const host = url.hostname.replace(/^\[|\]$/g, '');
  let addresses: LookupAddress[];
  if (isIP(host)) {
    // Node connects to an IP literal without calling `lookup`: the literal is what is checked.
    addresses = [{ address: host, family: isIP(host) }];
  } else {
    try {
      addresses = await (req.resolve ?? resolveHost)(host);
      if (addresses.length === 0) throw new Error('no addresses');
    } catch (e) {
      // One failed attempt, retried like a connection error: a resolver timing out (EAI_AGAIN,
      // SERVFAIL) says nothing about the endpoint, and the name resolved when it was
      // registered. Only what it resolves to can be refused for good.
      return { statusCode: null, error: `url host ${host} does not resolve: ${(e as Error).message}` };
    }
  }
  if (!req.allowPrivate) {
    const refused = refuseInternalAddresses(addresses.map((a) => a.address));
    if (refused) return { refused };
  }
  try {
    const { statusCode, location } = await post(url, addresses, req);
    if (statusCode >= 200 && statusCode < 300) return { statusCode, error: null };
    if (statusCode >= 300 && statusCode < 400) {
      const to = location ? ` to ${location.slice(0, 200)}` : '';
      return { statusCode, error: `endpoint answered ${statusCode} (a redirect${to}); redirects are not followed` };
    }
    return { statusCode, error: `endpoint answered ${statusCode}` };
  } catch (e) {
    return { statusCode: null, error: `request failed: ${reason(e)}` };
  }
}

/** An error's message; trying several addresses fails with an AggregateError that has none. */
function reason(e: unknown): string {
  if (e instanceof AggregateError && !e.message) return e.errors.map((inner) => reason(inner)).join('; ');
  return (e as Error).message || String((e as { code?: string }).code ?? e);
}

function post(url: URL, addresses: LookupAddress[], req: WebhookRequest): Promise<{ statusCode: number; location: string | undefined }> {
  // Node calls this instead of resolving the name itself, so the socket connects to the
  // checked addresses. The URL keeps the name, so the Host header, TLS SNI and the
  // certificate check are still for the name. (`all` is asked for by Node's happy eyeballs.)
  const lookup: LookupFunction = (_hostname, options, callback) => {
    const usable = options.family === 4 || options.family === 6 ? addresses.filter((a) => a.family === options.family) : addresses;
    if (usable.length === 0) return callback(Object.assign(new Error(`no IPv${options.family} address among ${addresses.map((a) => a.address).join(', ')}`), { code: 'ENOTFOUND' }), '');
    if (options.all) return callback(null, usable);
    callback(null, usable[0]!.address, usable[0]!.family);
  };
  return new Promise((resolve, reject) => {
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    const request = send(
      url,
      {
        method: 'POST',
        headers: { ...req.headers, 'Content-Length': String(Buffer.byteLength(req.body)) },
        lookup,
        // A connection of its own: a kept-alive socket from the shared agent's pool would be
        // reused without this lookup, and so without this delivery's check.
        agent: false,
      },
      (response) => {
        clearTimeout(timer);
        // The answer is its status code; the body is not read.
        response.destroy();
        resolve({ statusCode: response.statusCode ?? 0, location: response.headers.location });
      },
    );
    // WEBHOOK_TIMEOUT_MS bounds the request until the response's headers, as it always has.
    const timer = setTimeout(() => {
      request.destroy(new Error(`no response within ${req.timeoutMs} ms from ${addresses.map((a) => a.address).join(', ')}`));
    }, req.timeoutMs);
    request.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    request.end(req.body);
  });
}
