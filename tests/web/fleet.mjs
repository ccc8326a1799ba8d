// A real fleet for the dashboard's browser tests: a throwaway PostgreSQL 15 (initdb/pg_ctl
// as the postgres user when run as root), pgfleet-controller with its HTTP listener, and real
// pgfleet-agent processes, all on free loopback ports, all stopped by stop().
import { spawn, spawnSync } from 'node:child_process';
import {
  chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync,
  rmSync, writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const PGBIN = process.env.PGFLEET_PG_BIN ?? '/usr/lib/postgresql/15/bin';
const isRoot = process.getuid() === 0;

export async function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

// Polls `fn` until it returns a truthy value (returned) or `timeoutMs` passes (throws, with
// the last error or value in the message).
export async function waitFor(what, fn, { timeoutMs = 30000, intervalMs = 200 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      const value = await fn();
      if (value) return value;
      last = value;
    } catch (error) {
      last = error;
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  throw new Error(`timed out waiting for ${what}: ${last instanceof Error ? last.message : JSON.stringify(last)}`);
}

// Agents of this fleet that are not our children: an agent's new process after a hand-over
// (a restart rollout) is the old process's child, and outlives it. Found by the fleet's
// temp dir on their command line, so nothing else on the machine is touched.
function straysOf(dir, children) {
  const ours = new Set(children.map((c) => c.pid));
  const found = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || ours.has(Number(name)) || Number(name) === process.pid) continue;
    try {
      const argv = readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0');
      const state = readFileSync(`/proc/${name}/stat`, 'utf8').split(') ')[1]?.[0];
      const agent = argv[0].endsWith('pgfleet-agent');
      if (agent && state !== 'Z' && argv.some((a) => a.includes(dir))) found.push(Number(name));
    } catch {
      // Gone meanwhile.
    }
  }
  return found;
}

async function stopStrays(dir, children) {
  const strays = straysOf(dir, children);
  for (const pid of strays) {
    try { process.kill(pid, 'SIGTERM'); } catch { /* gone */ }
  }
  const deadline = Date.now() + 10000;
  while (Date.now() < deadline && straysOf(dir, children).length) await new Promise((r) => setTimeout(r, 100));
  for (const pid of straysOf(dir, children)) {
    try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
  }
}

function run(argv, options = {}) {
  const result = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', ...options });
  if (result.status !== 0) {
    throw new Error(`${argv.join(' ')} exited ${result.status}: ${result.stderr}${result.stdout}`);
  }
  return result.stdout;
}
const asPostgres = (argv) => (isRoot ? ['runuser', '-u', 'postgres', '--', ...argv] : argv);

export class Fleet {
  constructor({ controllerBinary, agentBinary }) {
    this.controllerBinary = controllerBinary;
    this.agentBinary = agentBinary;
    this.dir = mkdtempSync(join(tmpdir(), 'pgfleet-web-'));
    chmodSync(this.dir, 0o755);
    this.children = [];
    this.pgStarted = false;
  }

  async startPostgres() {
    this.pgData = join(this.dir, 'pg');
    this.pgPort = await freePort();
    if (isRoot) chownSync(this.dir, uid('postgres'), gid('postgres'));
    run(asPostgres([`${PGBIN}/initdb`, '-D', this.pgData, '-U', 'postgres', '--auth=trust', '-E', 'UTF8']));
    writeFileSync(join(this.pgData, 'postgresql.conf'),
      `\nlisten_addresses = '127.0.0.1'\nport = ${this.pgPort}\nunix_socket_directories = '${this.dir}'\nmax_connections = 100\nfsync = off\n`,
      { flag: 'a' });
    run(asPostgres([`${PGBIN}/pg_ctl`, '-D', this.pgData, '-l', join(this.dir, 'postgres.log'), '-w', 'start']));
    this.pgStarted = true;
    const psql = (sql, db = 'postgres') => run(['psql', '-qAtX', '-h', '127.0.0.1', '-p', String(this.pgPort), '-U', 'postgres', '-d', db, '-c', sql]);
    psql('CREATE ROLE app LOGIN');
    psql('CREATE DATABASE appdb OWNER app');
    run(['pgbench', '-q', '-i', '-s', '1', '-h', '127.0.0.1', '-p', String(this.pgPort), '-U', 'app', 'appdb']);
  }

  // Mints a token straight into the controller's SQLite file (as an admin would).
  createToken(name, role) {
    return run([this.controllerBinary, 'token', 'create', `--db=${this.dbPath}`, `--name=${name}`, `--role=${role}`]).trim();
  }

  async startController({ bootstrapToken, extraArgs = [] }) {
    this.dbPath = join(this.dir, 'fleet.db');
    this.bootstrapToken = bootstrapToken;
    this.tokens = { viewer: this.createToken('viewer-vic', 'viewer'), operator: this.createToken('operator-olga', 'operator') };
    const grpcPortFile = join(this.dir, 'grpc.port');
    const httpPortFile = join(this.dir, 'http.port');
    this.controllerLog = join(this.dir, 'controller.log');
    const child = spawn(this.controllerBinary, [
      '--listen=127.0.0.1:0', `--port-file=${grpcPortFile}`, `--db=${this.dbPath}`,
      '--http-listen=127.0.0.1:0', `--http-port-file=${httpPortFile}`, '--metrics-interval=1s',
      // The agents below carry no join tokens (agent_auth_test covers those).
      '--insecure-agents',
      ...extraArgs,
    ], { env: { ...process.env, PGFLEET_BOOTSTRAP_TOKEN: bootstrapToken }, stdio: ['ignore', 'ignore', openSync(this.controllerLog, 'a')] });
    this.children.push(child);
    this.controllerProcess = child;
    const readPort = (file) => existsSync(file) && Number(readFileSync(file, 'utf8').trim());
    this.grpcPort = await waitFor('the controller gRPC port', () => {
      if (child.exitCode !== null) throw new Error(`controller exited ${child.exitCode}: ${this.log('controller')}`);
      return readPort(grpcPortFile);
    });
    this.httpPort = await waitFor('the controller HTTP port', () => readPort(httpPortFile));
    this.url = `http://127.0.0.1:${this.httpPort}/`;
  }

  // `labels`: what the agent reports to the controller (--labels=k=v,k=v).
  async startAgent({ id, env, labels = '' }) {
    const port = await freePort();
    const ini = join(this.dir, `${id}.ini`);
    const userlist = join(this.dir, 'userlist.txt');
    writeFileSync(userlist, '"app" "app"\n"admin" "admin"\n');
    writeFileSync(ini, this.iniText(port));
    const log = join(this.dir, `${id}.log`);
    const child = spawn(this.agentBinary, [`--controller=127.0.0.1:${this.grpcPort}`, `--env=${env}`, `--agent-id=${id}`,
      // Every agent of an environment runs on this host: each keeps its own port.
      `--state-dir=${join(this.dir, `${id}-state`)}`, '--local-listeners', ...(labels ? [`--labels=${labels}`] : []), ini],
      { stdio: ['ignore', 'ignore', openSync(log, 'a')] });
    this.children.push(child);
    return { id, env, port, ini, child };
  }

  iniText(port, { poolSize = 10 } = {}) {
    return `[databases]
appdb = host=127.0.0.1 port=${this.pgPort} dbname=appdb user=app

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = ${port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = ${join(this.dir, 'userlist.txt')}
admin_users = admin
pool_mode = transaction
default_pool_size = ${poolSize}
max_client_conn = 200
`;
  }

  // Runs pgbench against an agent in the background; resolves with its output when it ends.
  pgbench(agentPort, { clients = 4, seconds = 10 } = {}) {
    return new Promise((resolve, reject) => {
      const child = spawn('pgbench', ['-n', '-c', String(clients), '-j', '2', '-T', String(seconds),
        '-h', '127.0.0.1', '-p', String(agentPort), '-U', 'app', 'appdb'],
        { env: { ...process.env, PGPASSWORD: 'app' } });
      this.children.push(child);
      let out = '';
      child.stdout.on('data', (d) => { out += d; });
      child.stderr.on('data', (d) => { out += d; });
      child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`pgbench exited ${code}: ${out}`))));
    });
  }

  // The JSON API, as a script would use it.
  async api(method, { token, body, params } = {}) {
    const query = params ? `?${new URLSearchParams(params)}` : '';
    const response = await fetch(`${this.url}api/${method}${query}`, {
      method: body === undefined ? 'GET' : 'POST',
      headers: { ...(token ? { Authorization: `Bearer ${token}` } : {}), 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: response.status, json: await response.json().catch(() => null) };
  }

  log(name) {
    try { return readFileSync(join(this.dir, `${name}.log`), 'utf8').slice(-4000); } catch { return ''; }
  }

  // Stops everything; the logs are copied to `logDir` first (test artifacts).
  async stop({ logDir } = {}) {
    await stopStrays(this.dir, this.children);
    for (const child of this.children.reverse()) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const exited = await Promise.race([
          new Promise((r) => child.once('exit', () => r(true))),
          new Promise((r) => setTimeout(() => r(false), 10000)),
        ]);
        if (!exited) child.kill('SIGKILL');
      }
    }
    // How the controller ended: 0 after SIGTERM, or the test should hear about it (a sanitizer
    // report, a crash in shutdown).
    const controllerExit = this.controllerProcess
      ? { code: this.controllerProcess.exitCode, signal: this.controllerProcess.signalCode }
      : null;
    if (this.pgStarted) {
      spawnSync(asPostgres([`${PGBIN}/pg_ctl`, '-D', this.pgData, '-m', 'immediate', 'stop'])[0],
        asPostgres([`${PGBIN}/pg_ctl`, '-D', this.pgData, '-m', 'immediate', 'stop']).slice(1));
    }
    if (logDir) {
      mkdirSync(logDir, { recursive: true });
      for (const name of readdirSync(this.dir).filter((n) => n.endsWith('.log'))) {
        copyFileSync(join(this.dir, name), join(logDir, name));
      }
    }
    if (process.env.PGFLEET_KEEP_TEST_DIRS !== '1') rmSync(this.dir, { recursive: true, force: true });
    return { controllerExit };
  }
}

function uid(user) { return Number(run(['id', '-u', user]).trim()); }
function gid(user) { return Number(run(['id', '-g', user]).trim()); }
