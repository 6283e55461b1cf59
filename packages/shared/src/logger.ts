import { pino } from 'pino';
import type { Config } from './config';

export type Logger = pino.Logger;

/** A logger at the config's LOG_LEVEL: the level is a setting like any other, read by loadConfig. */
export function createLogger(name: string, config: Pick<Config, 'LOG_LEVEL'>): Logger {
  return pino({ name, level: config.LOG_LEVEL });
}
