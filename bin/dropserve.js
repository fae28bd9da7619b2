#!/usr/bin/env node
// Entry shim: dropserve is written in TypeScript and run through tsx's loader, so no build step is
// needed before `npm start`. Worker threads register the same loader (see engine/worker).
import { register } from 'tsx/esm/api';

register();
await import('../cli/main.ts');
