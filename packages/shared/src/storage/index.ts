import type { Config } from '../config';
import { createLocalStorage } from './local';
import type { Storage } from './types';

export * from './types';

export function createStorage(config: Pick<Config, 'STORAGE_DIR'>): Storage {
  return createLocalStorage(config.STORAGE_DIR);
}
