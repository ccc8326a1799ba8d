// Bundles the dashboard: src/app.js (+ uPlot from npm) -> dist/app.js and dist/app.css, and
// copies the static files. Run by the CMake target pgfleet_web after `npm ci`:
//   node web/build.mjs --out=<build>/web/dist --node-modules=<build>/web/node_modules
// or, from web/ after `npm ci` there: npm run build (-> web/dist).
import { createRequire } from 'node:module';
import { copyFileSync, mkdirSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const arg = (name, fallback) => {
  const found = process.argv.find((a) => a.startsWith(`--${name}=`));
  return found ? resolve(found.slice(name.length + 3)) : fallback;
};
const out = arg('out', join(here, 'dist'));
const nodeModules = arg('node-modules', join(here, 'node_modules'));
const esbuild = createRequire(join(nodeModules, 'noop.js'))('esbuild');

mkdirSync(out, { recursive: true });
await esbuild.build({
  entryPoints: [join(here, 'src', 'app.js')],
  bundle: true,
  format: 'esm',
  target: ['es2020'],
  minify: true,
  sourcemap: true,
  nodePaths: [nodeModules],
  outdir: out,
  logLevel: 'warning',
});
for (const name of readdirSync(join(here, 'src'))) {
  if (/\.(html|svg|ico|txt)$/.test(name)) copyFileSync(join(here, 'src', name), join(out, name));
}
console.log(`dashboard built into ${out}`);
