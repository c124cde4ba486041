#!/usr/bin/env node
// tsc compiles .ts only: copy the generated protobuf module next to its compiled importer, and the
// other non-TypeScript files the compiled code reads.
import { copyFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'dist/src/channel/gen');
mkdirSync(out, { recursive: true });
copyFileSync(join(root, 'src/channel/gen/notifier.js'), join(out, 'notifier.js'));
// The dashboard page ships with the compiled server, so dist/ runs without src/ (containers).
const dash = join(root, 'dist/src/http/dashboard');
mkdirSync(dash, { recursive: true });
copyFileSync(join(root, 'src/http/dashboard/index.html'), join(dash, 'index.html'));
