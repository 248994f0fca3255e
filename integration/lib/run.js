// Runs every integration test against one broker: the one named by
// WARREN_TEST_AMQP_URL, or a private node started here and stopped at exit.
// Usage: node lib/run.js [test files…]   (default: every *.test.js)
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ensureBroker } from './broker.js';
import { INTEGRATION_DIR } from './util.js';

const files = process.argv.slice(2).length
  ? process.argv.slice(2)
  : fs
      .readdirSync(INTEGRATION_DIR)
      .filter((f) => f.endsWith('.test.js'))
      .sort()
      .map((f) => path.join(INTEGRATION_DIR, f));

const broker = await ensureBroker();
console.log(`broker: ${broker.url}${broker.owned ? ' (started for this run)' : ''}`);
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=1', ...files], {
  stdio: 'inherit',
  env: process.env,
});
process.exitCode = r.status === null ? 1 : r.status;
