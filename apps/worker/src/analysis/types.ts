import type { SpreadAnalysis } from '@soundqueue/shared/analysis';

// One interface for every spread-analysis provider. A provider throws ContentAnalysisError
// with `retryable`, `status` and `retryAfterSeconds` set; it never retries by itself.

export interface AnalysisRequest {
  spreadIndex: number;
  text: string;
  /** The previous spread's text, so "is this a new scene?" needs no ordering; null for spread 0. */
  previousText: string | null;
}

export interface AnalysisResult {
  analysis: SpreadAnalysis;
  usage: { tokens: number };
  costUsd: number;
}

export interface AnalysisProvider {
  readonly name: 'gemini' | 'local';
  analyze(request: AnalysisRequest, signal?: AbortSignal): Promise<AnalysisResult>;
}
