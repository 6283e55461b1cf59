export { createWorkerContext, type WorkerContext } from './context';
export { createProviders, type Providers } from './providers';
export { selectQueues, startWorkers, type RunningWorkers } from './workers';
export { ffmpegMixer, type Mixer } from './audio/mixer';
export { type ResolveHost } from './webhook-request';
