import { createHash } from 'node:crypto';
import { z } from 'zod';
import { variantIds } from '@soundqueue/shared/variants';
import { voiceIds } from '@soundqueue/shared/voices';

export const MAX_SECTIONS = 14;
export const MAX_SECTION_CHARS = 20_000;
const MAX_KEY_CHARS = 100;
const MAX_TITLE_CHARS = 200;

/**
 * The JSON body limit the largest valid batch fits in, however its JSON is written: a client
 * may escape every character of the text as `\uXXXX` (Python's json.dumps does by default
 * for non-ASCII), 6 bytes for each UTF-16 unit the schema counts; the rest of the request
 * (vision, variants, voice, model, punctuation) fits in the 64 KiB added.
 */
export const MAX_BATCH_BODY_BYTES = MAX_SECTIONS * (MAX_SECTION_CHARS + MAX_TITLE_CHARS + MAX_KEY_CHARS) * 6 + 64 * 1024;

const section = z.object({
  key: z
    .string()
    .min(1, 'must not be empty')
    .max(MAX_KEY_CHARS, `must be at most ${MAX_KEY_CHARS} characters`)
    .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 'must be letters, digits, "_", "-" or "."'),
  title: z.string().max(MAX_TITLE_CHARS, `must be at most ${MAX_TITLE_CHARS} characters`).optional(),
  text: z
    .string()
    .max(MAX_SECTION_CHARS, `must be at most ${MAX_SECTION_CHARS} characters`)
    .refine((t) => t.trim().length > 0, 'must contain text to speak'),
});

export const createBatchSchema = z
  .object({
    visionId: z.string().min(1, 'must not be empty').max(200, 'must be at most 200 characters'),
    sections: z.array(section).min(1, 'at least one section is needed').max(MAX_SECTIONS, `at most ${MAX_SECTIONS} sections`),
    variants: z
      .array(z.enum(variantIds as [string, ...string[]], { message: `must be one of ${variantIds.join(', ')}` }))
      .min(1, 'choose at least one variant'),
    voice: z.enum(voiceIds as [string, ...string[]], { message: `must be one of ${voiceIds.join(', ')}` }),
    model: z
      .string()
      .min(1)
      .max(100)
      .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 'must be a model name')
      .optional(),
  })
  .strict()
  .superRefine((body, ctx) => {
    const seen = new Set<string>();
    body.sections.forEach((s, i) => {
      if (seen.has(s.key)) ctx.addIssue({ code: 'custom', path: ['sections', i, 'key'], message: `duplicate section key "${s.key}"` });
      seen.add(s.key);
    });
    if (new Set(body.variants).size !== body.variants.length) {
      ctx.addIssue({ code: 'custom', path: ['variants'], message: 'variants must not repeat' });
    }
  });

export type CreateBatchRequest = z.infer<typeof createBatchSchema>;

/**
 * A stable hash of the request as the client sent it, to tell an idempotent repeat from a
 * different body under the same Idempotency-Key. A `model` the body leaves out stays out (null),
 * not the server's default filled in: the default is configuration (OPENAI_TTS_MODEL), and a
 * repeat of the same body must match after an operator changes it. The `v` field keeps these
 * hashes apart from the ones requestHashBefore describes, which stored rows may hold.
 */
export function requestHash(body: CreateBatchRequest): string {
  return sha256({ v: 2, ...canonical(body), model: body.model ?? null });
}

/**
 * The hash batches created before requestHash left the default out hold: the body with the
 * model the batch was given (the client's, or the default then). A repeat of their request
 * still matches it with that model, which the batch row records, whatever the default is now.
 * It cannot tell a body without `model` from one naming the model the batch got: both match
 * such a batch, as they did when it was created.
 */
export function requestHashBefore(body: CreateBatchRequest, batchModel: string): string {
  return sha256({ ...canonical(body), model: body.model ?? batchModel });
}

function canonical(body: CreateBatchRequest) {
  return {
    visionId: body.visionId,
    sections: body.sections.map((s) => ({ key: s.key, title: s.title ?? null, text: s.text })),
    variants: body.variants,
    voice: body.voice,
  };
}

const sha256 = (value: unknown) => createHash('sha256').update(JSON.stringify(value)).digest('hex');
