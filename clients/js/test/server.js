// Starts the Go test server (./server/main.go) for a test file: builds it
// into a temporary directory, runs it, and reads the URL it prints (and,
// with -admin, the dashboard's URL on the next line).

import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const here = dirname(fileURLToPath(import.meta.url));
const moduleRoot = resolve(here, '../../..');

/**
 * @param {string[]} [args] flags for the server
 * @returns {Promise<{url: string, adminURL?: string, stop: () => Promise<void>}>}
 */
export async function startServer(args = []) {
  const dir = await mkdtemp(join(tmpdir(), 'asyncreply-js-test-'));
  const binary = join(dir, 'server');
  try {
    await promisify(execFile)('go', ['build', '-o', binary, './clients/js/test/server'], { cwd: moduleRoot });
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw new Error(`building the Go test server: ${err.stderr || err.message}`);
  }

  const child = spawn(binary, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (chunk) => {
    stderr += chunk;
  });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve(signal ?? code)));

  const want = args.includes('-admin') ? 2 : 1;
  const [url, adminURL] = await new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout });
    const timer = setTimeout(() => reject(new Error(`the test server printed no URL:\n${stderr}`)), 30_000);
    const printed = [];
    lines.on('line', (line) => {
      printed.push(line.trim());
      if (printed.length === want) {
        clearTimeout(timer);
        resolve(printed);
      }
    });
    exited.then((how) => {
      clearTimeout(timer);
      reject(new Error(`the test server exited (${how}):\n${stderr}`));
    });
  });

  return {
    url,
    adminURL,
    async stop() {
      // Closing its input asks the server to shut down; a kill follows if
      // it takes too long.
      child.stdin.end();
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      const how = await exited;
      clearTimeout(timer);
      await rm(dir, { recursive: true, force: true });
      if (how !== 0) {
        throw new Error(`the test server ended with ${how}:\n${stderr}`);
      }
    },
    /** What the server logged, for failure messages. */
    get log() {
      return stderr;
    },
  };
}
