// node-postgres (npm "pg") through the agent in transaction mode: named queries
// ({name, text, values}) that pg prepares once per connection and then only binds.
// Prints "OK <checked> pids=<pid,...>"; exits non-zero on any mismatch.
//
// Usage: node node_pg_client.js HOST PORT DATABASE USER PASSWORD ITERATIONS
'use strict';
const { Client } = require('pg');

async function main() {
  const [host, port, database, user, password, iterations] = process.argv.slice(2);
  const client = new Client({ host, port: Number(port), database, user, password });
  await client.connect();
  const pids = new Set();
  let checked = 0;
  for (let i = 0; i < Number(iterations); i++) {
    const res = await client.query({
      name: 'times-seven',
      text: 'select $1::int * 7 as v, pg_backend_pid() as pid',
      values: [i],
    });
    if (res.rows[0].v !== i * 7) throw new Error(`wrong result ${res.rows[0].v} for ${i}`);
    pids.add(res.rows[0].pid);
    checked++;
    // A second named statement inside an explicit transaction.
    await client.query('BEGIN');
    const echo = await client.query({ name: 'echo', text: 'select $1::text as t', values: [`v${i}`] });
    await client.query('COMMIT');
    if (echo.rows[0].t !== `v${i}`) throw new Error(`wrong echo ${echo.rows[0].t}`);
    checked++;
  }
  // A named query whose SQL is wrong reports PostgreSQL's error, and the connection goes on.
  try {
    await client.query({ name: 'broken', text: 'selec 1', values: [] });
    throw new Error('broken query did not fail');
  } catch (err) {
    if (err.code !== '42601') throw err;
  }
  const after = await client.query({ name: 'times-seven', text: 'select $1::int * 7 as v, pg_backend_pid() as pid', values: [6] });
  if (after.rows[0].v !== 42) throw new Error('statement lost after an error');
  await client.end();
  console.log(`OK ${checked} pids=${[...pids].sort((a, b) => a - b).join(',')}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
