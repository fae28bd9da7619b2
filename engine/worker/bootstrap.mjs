// Worker entry in plain JS: registers tsx's loader in this thread (hooks registered on the main
// thread do not reach workers on Node 20), then loads the TypeScript worker.
import { register } from 'tsx/esm/api';

register();
await import('./engine-worker.ts');
