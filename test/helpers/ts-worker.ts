/** Starts a worker thread from a TypeScript file (vitest runs the sources, not dist/). */
import { Worker, type WorkerOptions } from 'node:worker_threads';

export function tsWorker(url: URL, options: WorkerOptions = {}): Worker {
  const bootstrap = `import('tsx/esm/api').then((m) => { m.register(); return import(${JSON.stringify(url.href)}); })`;
  return new Worker(bootstrap, { ...options, eval: true });
}
